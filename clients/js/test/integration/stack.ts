// The real thing for the SDK's tests: a private mosquitto, the add-on server (SQLite, dev
// auth) and, when asked, the simulator, all on free loopback ports in a temporary folder, as
// tests/broker.py and scripts/demo do it. Nothing of the server is mocked.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, openSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";

function findRepo(): string {
  let dir = import.meta.dirname;
  while (!existsSync(join(dir, "pyproject.toml"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error("the repository root (pyproject.toml) is not above " + import.meta.dirname);
    dir = parent;
  }
  return dir;
}

export const REPO = findRepo();
const VENV = process.env["THERMO_BRIDGE_VENV"] ?? join(REPO, ".venv");
const bin = (name: string): string => {
  const path = join(VENV, "bin", name);
  if (!existsSync(path)) throw new Error(`${path} is missing: run scripts/setup`);
  return path;
};

function mosquittoBinary(): string {
  for (const candidate of ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"]) {
    if (existsSync(candidate)) return candidate;
  }
  throw new Error("mosquitto not found: run scripts/setup (it installs the mosquitto package)");
}

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** One child process with its output in a log file; stop() is SIGTERM then SIGKILL. */
class Process {
  readonly #child: ChildProcess;
  readonly exited: Promise<unknown>;

  constructor(command: string, args: readonly string[], log: string, env: NodeJS.ProcessEnv = process.env) {
    const out = openSync(log, "a");
    this.#child = spawn(command, args, { stdio: ["ignore", out, out], env });
    this.exited = once(this.#child, "exit");
  }

  get running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  signal(signal: NodeJS.Signals): void {
    if (this.running) this.#child.kill(signal);
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (!this.running) return;
    this.#child.kill(signal);
    const timeout = sleep(15_000, "timeout", { ref: false });
    if ((await Promise.race([this.exited, timeout])) === "timeout") {
      this.#child.kill("SIGKILL");
      await this.exited;
    }
  }
}

export interface StackOptions {
  /** Extra THERMO_BRIDGE_* settings of the server (e.g. { COMMAND_TIMEOUT: "2" }). */
  readonly server?: Record<string, string>;
}

export interface TokenOptions {
  readonly sub?: string;
  readonly homes?: readonly string[];
  readonly permissions?: readonly string[];
  readonly ttl?: number;
}

export class Stack {
  readonly dir: string;
  readonly mqttPort: number;
  readonly httpPort: number;
  readonly #options: StackOptions;
  #broker: Process | undefined;
  #server: Process | undefined;
  readonly #simulators: Process[] = [];

  private constructor(dir: string, mqttPort: number, httpPort: number, options: StackOptions) {
    this.dir = dir;
    this.mqttPort = mqttPort;
    this.httpPort = httpPort;
    this.#options = options;
  }

  /** Broker and server started; the simulator is the test's choice. */
  static async start(options: StackOptions = {}): Promise<Stack> {
    const dir = await mkdtemp(join(tmpdir(), "thermo-bridge-sdk-"));
    const stack = new Stack(dir, await freePort(), await freePort(), options);
    try {
      await stack.#startBroker();
      await stack.startServer();
    } catch (error) {
      await stack.stop(false);
      throw error;
    }
    return stack;
  }

  get url(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  get mqttUrl(): string {
    return `mqtt://127.0.0.1:${this.mqttPort}`;
  }

  async #startBroker(): Promise<void> {
    const config = join(this.dir, "mosquitto.conf");
    const lines = [
      "per_listener_settings false",
      "allow_anonymous true",
      "persistence true",
      `persistence_location ${this.dir}/`,
      "autosave_interval 1",
      "max_queued_messages 1000000",
      `log_dest file ${join(this.dir, "mosquitto.log")}`,
      `listener ${this.mqttPort} 127.0.0.1`,
    ];
    // Started as root, mosquitto would drop to a user that cannot write this folder.
    if (process.getuid?.() === 0) lines.unshift("user root");
    await writeFile(config, lines.join("\n") + "\n");
    this.#broker = new Process(mosquittoBinary(), ["-c", config], join(this.dir, "mosquitto.stderr"));
    await waitFor(
      "mosquitto",
      () =>
        new Promise<boolean>((resolve) => {
          const socket = createConnection(this.mqttPort, "127.0.0.1", () => {
            socket.end();
            resolve(true);
          });
          socket.on("error", () => resolve(false));
        }),
    );
  }

  /** Starts the server on the stack's ports and database; resolves once /health is ok. */
  async startServer(): Promise<void> {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      THERMO_BRIDGE_OPTIONS_FILE: "",
      THERMO_BRIDGE_DEV_AUTH: "true",
      THERMO_BRIDGE_DEV_KEY_PATH: join(this.dir, "dev_key.pem"),
      THERMO_BRIDGE_STORE_URL: `sqlite:///${join(this.dir, "db.sqlite")}`,
      THERMO_BRIDGE_MQTT_HOST: "127.0.0.1",
      THERMO_BRIDGE_MQTT_PORT: String(this.mqttPort),
      THERMO_BRIDGE_HTTP_HOST: "127.0.0.1",
      THERMO_BRIDGE_HTTP_PORT: String(this.httpPort),
      THERMO_BRIDGE_ZEROCONF: "false",
      THERMO_BRIDGE_WS_ALLOW_NO_ORIGIN: "true",
      THERMO_BRIDGE_COMMAND_TIMEOUT: "2",
      THERMO_BRIDGE_LOG_LEVEL: "info",
      ...Object.fromEntries(Object.entries(this.#options.server ?? {}).map(([name, value]) => [`THERMO_BRIDGE_${name}`, value])),
    };
    const server = new Process(bin("thermo-bridge-server"), [], join(this.dir, "server.log"), env);
    this.#server = server;
    await waitFor("the server's /health (see server.log)", async () => {
      if (!server.running) throw new Error(`the server exited: ${await this.serverLog()}`);
      return (await fetch(`${this.url}/health`)).ok;
    });
  }

  /** SIGTERM (graceful: sockets closed with 1001) or SIGKILL (a crash). */
  async stopServer(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    await this.#server?.stop(signal);
  }

  /** Freezes (SIGSTOP) or thaws (SIGCONT) the server: a peer that stops answering. */
  signalServer(signal: "SIGSTOP" | "SIGCONT"): void {
    this.#server?.signal(signal);
  }

  serverLog(): Promise<string> {
    return readFile(join(this.dir, "server.log"), "utf8");
  }

  startSimulator(args: readonly string[]): void {
    const log = join(this.dir, `simulator-${this.#simulators.length}.log`);
    this.#simulators.push(new Process(bin("thermo-bridge-sim"), ["--port", String(this.mqttPort), ...args], log));
  }

  /** A dev token the server accepts, minted with its key (thermo-bridge-token). */
  async token(options: TokenOptions = {}): Promise<string> {
    const args = [
      "--key",
      join(this.dir, "dev_key.pem"),
      "--issuer",
      `http://localhost:${this.httpPort}/`,
      "--sub",
      options.sub ?? "sdk|user",
      "--homes",
      ...(options.homes ?? ["default"]),
      "--permissions",
      ...(options.permissions ?? ["read:devices", "write:devices"]),
      "--ttl",
      String(options.ttl ?? 3600),
    ];
    const { stdout } = await promisify(execFile)(bin("thermo-bridge-token"), args);
    return stdout.trim();
  }

  async stop(removeDir = true): Promise<void> {
    for (const simulator of this.#simulators) await simulator.stop();
    this.#server?.signal("SIGCONT");
    await this.#server?.stop();
    await this.#broker?.stop();
    if (removeDir && !process.env["KEEP_STACK"]) await rm(this.dir, { recursive: true, force: true });
  }
}
