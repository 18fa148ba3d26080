// Resume without gap or repeat across a graceful restart (SIGTERM: 1001 with the position), a
// crash (SIGKILL) and a frozen server (missed pongs), checked against the server's own log as
// a fresh client replays it from the start; and the offline command queue.
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { CommandError, MemoryStorage, type Reset, type ServerEvent, ThermoBridgeClient, type Command } from "../../src/index.js";
import { TestDevice } from "./device.js";
import { eventually, increasing, recordStates, waitForState } from "./helpers.js";
import { Stack } from "./stack.js";
import { type Wire, checkedWire } from "./wire.js";

describe("resume and the offline queue against a restarting server", () => {
  let stack: Stack;
  let token: string;
  let wire: Wire;
  const clients: ThermoBridgeClient[] = [];

  function client(options: Partial<ConstructorParameters<typeof ThermoBridgeClient>[0]> = {}): ThermoBridgeClient {
    const created = new ThermoBridgeClient({
      url: stack.url,
      getToken: () => Promise.resolve(token),
      WebSocket: wire.WebSocket,
      backoff: { minMs: 50, baseMs: 200, maxMs: 1000 },
      ...options,
    });
    clients.push(created);
    return created;
  }

  before(async () => {
    stack = await Stack.start();
    // A steady flow of events: 40 state messages a second over three devices.
    stack.startSimulator(["--thermostats", "2", "--sensors", "1", "--rate", "40", "--seed", "5"]);
    token = await stack.token();
    wire = await checkedWire();
  });

  after(async () => {
    for (const each of clients) each.close();
    await TestDevice.closeAll();
    await stack.stop();
    assert.deepEqual(wire.violations, [], "every frame matches docs/asyncapi.yaml");
  });

  it("resumes after SIGTERM, SIGKILL and missed pongs: the offsets seen are exactly the log's", async () => {
    const watcher = client({ heartbeatMs: 500, pongTimeoutMs: 1000 });
    const states = recordStates(watcher);
    const seen: ServerEvent[] = [];
    const resets: Reset[] = [];
    watcher.subscribe({}, { onEvent: (event) => seen.push(event), onReset: (reset) => resets.push(reset) });
    watcher.connect();
    await waitForState(watcher, "open");
    const enough = (count: number): Promise<true> => eventually(`${count} events`, () => (seen.length >= count ? true : undefined));
    await enough(20);

    // Graceful: the server closes with 1001 and the last offset it wrote.
    await stack.stopServer("SIGTERM");
    const going = await eventually("the 1001 close", () => states.find((s) => s.state === "closed" && s.code === 1001));
    assert.ok(going.state === "closed" && going.willRetry);
    const afterTerm = seen.length;
    await stack.startServer();
    await waitForState(watcher, "open");
    assert.ok(states.some((s) => s.state === "resuming"), "resubscribed from its position");
    await enough(afterTerm + 20);

    // A crash: no close frame, nothing vouched; the client resumes from its last event.
    await stack.stopServer("SIGKILL");
    await eventually("the abnormal close", () => states.find((s) => s.state === "closed" && s.code === 1006));
    const afterKill = seen.length;
    await stack.startServer();
    await waitForState(watcher, "open");
    await enough(afterKill + 20);

    // A frozen server answers no ping: the client gives the socket up itself and comes back.
    stack.signalServer("SIGSTOP");
    await eventually("the heartbeat timeout", () => states.find((s) => s.state === "closed" && s.reason === "heartbeat_timeout"));
    stack.signalServer("SIGCONT");
    await waitForState(watcher, "open");
    const afterFreeze = seen.length;
    await enough(afterFreeze + 20);

    assert.equal(resets.length, 1, "only the first subscribe starts from a snapshot; every later one resumed");
    assert.ok(increasing(seen), "never backwards, never twice");
    assert.equal(watcher.stats.duplicatesDropped, 0);

    // The log's own account: a fresh client replays everything after the snapshot position.
    const start = resets[0]?.position;
    assert.ok(start);
    const last = seen.at(-1)?.offset ?? 0;
    const storage = new MemoryStorage();
    storage.setItem("replay:position:all", JSON.stringify(start));
    const replayer = client({ storageKey: "replay", storage });
    const replayed: ServerEvent[] = [];
    const replayResets: Reset[] = [];
    replayer.subscribe({}, { onEvent: (event) => replayed.push(event), onReset: (reset) => replayResets.push(reset) }, { key: "all" });
    replayer.connect();
    await eventually("the replay", () => ((replayed.at(-1)?.offset ?? 0) >= last ? true : undefined), 30_000);
    assert.deepEqual(replayResets, [], "the log still holds the start position");
    const upTo = (events: ServerEvent[]): number[] => events.filter((event) => event.offset <= last).map((event) => event.offset);
    assert.deepEqual(upTo(seen), upTo(replayed));
  });

  it("a client too slow for its stream is closed (4008) and resumes with every event once, in order", async () => {
    const device = await TestDevice.connect(stack.mqttUrl, "flood_device");
    await device.announce();
    await device.availability(true);
    // The first socket this client opens stops reading, as a stalled tab would.
    let stalled: Socket | undefined;
    class Stalling extends wire.WebSocket {
      constructor(url: string) {
        super(url);
        stalled ??= (this as unknown as { _socket?: Socket })._socket;
        this.addEventListener("open", () => (stalled ??= (this as unknown as { _socket: Socket })._socket));
      }
    }
    const slow = client({ WebSocket: Stalling });
    const states = recordStates(slow);
    const seen: ServerEvent[] = [];
    slow.subscribe({ devices: [device.id], events: ["device_event"] }, { onEvent: (event) => seen.push(event) });
    slow.connect();
    await waitForState(slow, "open");
    const socket = await eventually("the socket", () => stalled);
    socket.pause();
    // About 2 KB each: the socket buffers fill, then the server's queue passes its 4,096 limit.
    const count = 6500;
    const pad = Object.fromEntries(Array.from({ length: 8 }, (_, k) => [`pad${k}`, "p".repeat(250)]));
    for (let i = 0; i < count; i += 1) await device.event("button_press", { ...pad, i });
    await sleep(500);
    socket.resume();
    const closed = await eventually("the slow_consumer close", () => states.find((s) => s.state === "closed" && s.code === 4008), 30_000);
    assert.ok(closed.state === "closed" && closed.willRetry);
    await eventually("every event", () => (seen.length >= count ? true : undefined), 60_000);
    const numbers = seen.map((event) => (event.type === "device_event" ? event.data.data["i"] : undefined));
    assert.deepEqual(numbers, Array.from({ length: count }, (_, i) => i), "each event once, in order, across the close");
    assert.ok(increasing(seen));
    assert.equal(slow.stats.duplicatesDropped, 0);
    await device.close();
  });

  it("queues commands while offline and delivers each exactly once on reconnect", async () => {
    const device = await TestDevice.connect(stack.mqttUrl, "queue_device");
    await device.announce();
    await device.availability(true);
    const sender = client({ maxQueuedCommands: 3 });
    sender.connect();
    await waitForState(sender, "open");
    await eventually("the device known to the server", () => sender.rest.device(device.id));

    await stack.stopServer("SIGTERM");
    await eventually("offline", () => (sender.state.state === "closed" ? true : undefined));
    const setpoints = [20, 20.5, 21];
    const outcomes = setpoints.map((value) => sender.sendCommand(device.id, { target_temperature: value }));
    await assert.rejects(sender.sendCommand(device.id, { target_temperature: 25 }), (error: unknown) => {
      assert.ok(error instanceof CommandError && error.code === "queue_full");
      return true;
    });
    assert.equal(sender.pendingCommands, 3);
    await sleep(300);
    assert.equal(device.commands.length, 0, "nothing goes out while offline");

    await stack.startServer();
    const commands = await Promise.all(outcomes);
    assert.deepEqual(commands.map((command) => command.status), ["acked", "acked", "acked"]);
    assert.equal(new Set(commands.map((command) => command.id)).size, 3);
    for (const command of commands) assert.equal((await sender.rest.command(command.id)).status, "acked");
    assert.deepEqual(device.commands.map((command) => command["target_temperature"]), setpoints, "each published once, in order");
    assert.equal(sender.pendingCommands, 0);
    await device.close();
  });

  it("restores a persisted queue after a reload; a command the server already has is not sent twice", async () => {
    const device = await TestDevice.connect(stack.mqttUrl, "reload_device");
    await device.announce();
    await device.availability(true);
    const rest = client().rest;
    await eventually("the device known to the server", () => rest.device(device.id));
    // The page sent this one and reloaded before it saw the result: the key is still queued.
    const delivered = await rest.sendCommand(device.id, { target_temperature: 19 }, { idempotencyKey: "reload-key-1" });
    await eventually("the first delivery", () => (device.commands.length === 1 ? true : undefined));
    const storage = new MemoryStorage();
    storage.setItem(
      "page:commands",
      JSON.stringify([
        { key: "reload-key-1", device_id: device.id, values: { target_temperature: 19 } },
        { key: "reload-key-2", device_id: device.id, values: { target_temperature: 19.5 } },
      ]),
    );
    const reloaded = client({ storageKey: "page", storage });
    const updates: Command[] = [];
    reloaded.on("command", (command) => updates.push(command));
    assert.equal(reloaded.pendingCommands, 2);
    reloaded.connect();
    await eventually("both outcomes", () => (updates.filter((command) => command.status === "acked").length === 2 ? true : undefined));
    assert.ok(updates.some((command) => command.id === delivered.id && command.status === "acked"), "the known key answers with its command");
    assert.deepEqual(device.commands.map((command) => command["target_temperature"]), [19, 19.5], "19 was published once");
    assert.equal(storage.getItem("page:commands"), "[]", "nothing left to send");
    await device.close();
  });
});
