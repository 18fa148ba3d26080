import { Backoff, type BackoffOptions } from "./backoff.js";
import { type Clock, Timer, systemClock } from "./clock.js";
import { CommandQueue, type PersistedCommand } from "./commands.js";
import { type CloseInfo, Connection } from "./connection.js";
import { Emitter } from "./emitter.js";
import type * as Wire from "./generated/messages.js";
import { PositionTracker } from "./position.js";
import { type FetchLike, RestClient } from "./rest.js";
import { type TokenProvider, type WebSocketConstructor, defaultWebSocket } from "./socket.js";
import { type StorageLike, StoredValue, browserStorage } from "./storage.js";
import {
  type Reset,
  type SubscribeOptions,
  type Subscription,
  type SubscriptionHandlers,
  WsSubscription,
} from "./subscription.js";
import type { Command, CommandValues, Filters, Position, ServerEvent, ServerStatus } from "./types.js";
import { apiUrl, webSocketUrl } from "./url.js";

export interface ClientOptions {
  /** The server's base URL, e.g. `https://thermo.example.com` (the API is under `api/v1/`). */
  readonly url: string | URL;
  /** Called for a token at every connect, before it expires, and after the server refused one. */
  readonly getToken: TokenProvider;
  /** Default: the global WebSocket (Node 20: pass the `ws` package's). */
  readonly WebSocket?: WebSocketConstructor;
  /** Default: the global fetch. */
  readonly fetch?: FetchLike;
  /** Persist subscription positions (those given a `key`) and the offline queue under this prefix. */
  readonly storageKey?: string;
  /** Default: localStorage. Only used with storageKey. */
  readonly storage?: StorageLike;
  /** Reconnect delays; default 100 ms floor, 1 s first ceiling doubling up to 30 s. */
  readonly backoff?: BackoffOptions;
  /** Jitter source, [0, 1). */
  readonly random?: () => number;
  readonly clock?: Clock;
  /** Client ping interval (default 20 s). */
  readonly heartbeatMs?: number;
  /** A ping unanswered this long closes the socket and reconnects (default 10 s). */
  readonly pongTimeoutMs?: number;
  /** Opening plus the auth phase must finish within this (default 10 s). */
  readonly connectTimeoutMs?: number;
  /** A connection open this long resets the backoff (default 10 s). */
  readonly stableMs?: number;
  /** Refresh the token this long before it expires, or at half its remaining life if shorter (default 60 s). */
  readonly refreshMarginMs?: number;
  /** Commands waiting for their outcome (queued offline or in flight); more are refused (default 100). */
  readonly maxQueuedCommands?: number;
}

export type ConnectionState =
  /** Getting a token, opening the socket, the auth phase. */
  | { readonly state: "connecting"; readonly attempt: number }
  /** Authenticated; resubscribing from the known positions (the replay is arriving). */
  | { readonly state: "resuming" }
  /** Authenticated and every subscription is live. */
  | { readonly state: "open"; readonly sub: string; readonly permissions: readonly string[]; readonly expiresAt: number | null }
  /** No connection. `code` is the WebSocket close code, null when the client gave up the socket itself. */
  | {
      readonly state: "closed";
      readonly code: number | null;
      readonly reason: string;
      readonly willRetry: boolean;
      readonly retryInMs?: number;
    };

export interface ClientEvents {
  state: ConnectionState;
  /** A subscription was rebuilt from a snapshot instead of resumed; `reason` says why. */
  reset: Reset & { readonly subscription: Subscription };
  /** Every status a command sent through this client reached (also for commands restored from storage). */
  command: Command;
  /** Something failed that the client recovers from itself: the token provider, a refused refresh. */
  error: unknown;
  /** An event was dropped because its offset was not after the subscription's position. */
  duplicate: { readonly subscription: Subscription; readonly event: ServerEvent };
  /** The server lost or regained the MQTT broker (no device data, commands fail, while it is lost). */
  status: ServerStatus;
}

export interface ClientStats {
  /** Events dropped as repeats or out of order (the server promises none: a non-zero count is a bug somewhere). */
  duplicatesDropped: number;
  /** Reconnects scheduled. */
  reconnects: number;
}

const CLOSE_GOING_AWAY = 1001;
const CLOSE_AUTH_INVALID = 4002;
const CLOSE_TOKEN_EXPIRED = 4003;
const CLOSE_SLOW_CONSUMER = 4008;

/**
 * The real-time client: one WebSocket at a time, reconnected with backoff, subscriptions
 * resumed without gap or repeat, commands that settle on the device's answer.
 */
export class ThermoBridgeClient {
  readonly rest: RestClient;
  readonly stats: ClientStats = { duplicatesDropped: 0, reconnects: 0 };
  readonly #options: ClientOptions;
  readonly #clock: Clock;
  readonly #backoff: Backoff;
  readonly #emitter = new Emitter<ClientEvents>();
  readonly #subscriptions = new Set<WsSubscription>();
  readonly #commands: CommandQueue;
  readonly #storage: StorageLike | undefined;
  readonly #retryTimer: Timer;
  readonly #stableTimer: Timer;
  #state: ConnectionState = { state: "closed", code: null, reason: "not connected", willRetry: false };
  #running = false;
  #connection: Connection | undefined;
  /** The connection once authenticated: commands go out on it. */
  #ready: Connection | undefined;
  #tokenRejected = false;
  #serverStatus: ServerStatus | undefined;

  constructor(options: ClientOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#backoff = new Backoff(options.backoff, options.random);
    this.#retryTimer = new Timer(this.#clock);
    this.#stableTimer = new Timer(this.#clock);
    this.#storage = options.storageKey === undefined ? undefined : (options.storage ?? browserStorage());
    this.#commands = new CommandQueue(options.maxQueuedCommands ?? 100, this.#stored<PersistedCommand[]>("commands"), (command) =>
      this.#emitter.emit("command", command),
    );
    this.rest = new RestClient({ url: options.url, getToken: options.getToken, ...(options.fetch && { fetch: options.fetch }) });
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The server's last reported broker connection; undefined before the first auth_ok. */
  get serverStatus(): ServerStatus | undefined {
    return this.#serverStatus;
  }

  on<K extends keyof ClientEvents>(type: K, listener: (value: ClientEvents[K]) => void): () => void {
    return this.#emitter.on(type, listener);
  }

  /** Starts connecting, and keeps reconnecting until close(). */
  connect(): void {
    if (this.#running) return;
    this.#running = true;
    void this.#open();
  }

  /** Closes for good: no reconnect; pending commands are rejected and the offline queue is emptied. */
  close(): void {
    this.#running = false;
    this.#retryTimer.stop();
    this.#commands.clear();
    if (this.#connection) this.#connection.close(1000, "client closed");
    else this.#setState({ state: "closed", code: null, reason: "client closed", willRetry: false });
  }

  /**
   * Subscribes to the events matching the filters; kept across reconnects (resumed with
   * `since`) until `unsubscribe()`.
   */
  subscribe(filters: Filters, handlers: SubscriptionHandlers, options: SubscribeOptions = {}): Subscription {
    const stored = options.key === undefined ? undefined : this.#stored<Position>(`position:${options.key}`);
    const subscription: WsSubscription = new WsSubscription(filters, handlers, new PositionTracker(stored), options.snapshot ?? true, {
      reset: (reset) => this.#emitter.emit("reset", { ...reset, subscription }),
      duplicate: (event) => {
        this.stats.duplicatesDropped += 1;
        this.#emitter.emit("duplicate", { subscription, event });
      },
      unsubscribed: () => this.#subscriptions.delete(subscription),
    });
    this.#subscriptions.add(subscription);
    if (this.#ready) subscription.start(this.#ready, () => undefined);
    return subscription;
  }

  /**
   * Sends a command and settles on the device's answer: resolves when it acked, rejects with a
   * CommandError when it refused (`failed`, with its reason) or did not answer (`timed_out`),
   * or with an ApiError when the server refused it (e.g. `invalid_command`). While offline
   * the command waits (bounded) and goes out once on reconnect.
   */
  sendCommand(deviceId: string, values: CommandValues): Promise<Command> {
    return this.#commands.add(deviceId, values);
  }

  /** Commands not settled yet (queued or waiting for the device). */
  get pendingCommands(): number {
    return this.#commands.size;
  }

  async #open(): Promise<void> {
    this.#setState({ state: "connecting", attempt: this.#backoff.attempt });
    let token: string;
    try {
      token = await this.#options.getToken({ reason: this.#tokenRejected ? "rejected" : "use" });
    } catch (error) {
      if (!this.#running) return;
      this.#emitter.emit("error", error);
      this.#retry(null, "token_unavailable");
      return;
    }
    if (!this.#running) return;
    try {
      const connection: Connection = new Connection(
        {
          url: webSocketUrl(apiUrl(this.#options.url, "api/v1/ws")),
          token,
          WebSocket: this.#options.WebSocket ?? defaultWebSocket(),
          clock: this.#clock,
          getToken: this.#options.getToken,
          heartbeatMs: this.#options.heartbeatMs ?? 20_000,
          pongTimeoutMs: this.#options.pongTimeoutMs ?? 10_000,
          connectTimeoutMs: this.#options.connectTimeoutMs ?? 10_000,
          refreshMarginMs: this.#options.refreshMarginMs ?? 60_000,
        },
        {
          ready: (auth) => this.#onReady(connection, auth),
          closed: (info) => this.#onClosed(connection, info),
          refreshFailed: (error) => this.#emitter.emit("error", error),
          status: (status) => {
            this.#serverStatus = status;
            this.#emitter.emit("status", status);
          },
        },
      );
      this.#connection = connection;
    } catch (error) {
      this.#emitter.emit("error", error);
      this.#retry(null, "socket_error");
    }
  }

  #onReady(connection: Connection, auth: Wire.AuthOk): void {
    this.#ready = connection;
    this.#tokenRejected = false;
    this.#stableTimer.start(this.#options.stableMs ?? 10_000, () => this.#backoff.reset());
    const open: ConnectionState = { state: "open", sub: auth.sub, permissions: auth.permissions, expiresAt: auth.expires_at };
    const subscriptions = [...this.#subscriptions];
    if (subscriptions.some((subscription) => subscription.position)) this.#setState({ state: "resuming" });
    let waiting = subscriptions.length;
    const done = (): void => {
      waiting -= 1;
      if (waiting === 0 && this.#ready === connection) this.#setState(open);
    };
    for (const subscription of subscriptions) subscription.start(connection, done);
    this.#commands.attach(connection);
    if (subscriptions.length === 0) this.#setState(open);
  }

  #onClosed(connection: Connection, info: CloseInfo): void {
    if (connection !== this.#connection) return;
    this.#connection = undefined;
    this.#ready = undefined;
    this.#commands.detach();
    this.#stableTimer.stop();
    const vouched = info.code === CLOSE_GOING_AWAY || info.code === CLOSE_SLOW_CONSUMER ? parsePosition(info.reason) : undefined;
    for (const subscription of this.#subscriptions) subscription.stop(vouched);
    const reason = info.authError ? `${info.authError.code}: ${info.authError.message}` : info.reason;
    if (!this.#running) {
      this.#setState({ state: "closed", code: info.code, reason, willRetry: false });
      return;
    }
    if (info.code === CLOSE_AUTH_INVALID || info.code === CLOSE_TOKEN_EXPIRED) this.#tokenRejected = true;
    // A token without the permission will not get it by retrying; everything else may heal.
    if (info.authError?.code === "insufficient_scope") {
      this.#running = false;
      this.#setState({ state: "closed", code: info.code, reason, willRetry: false });
      return;
    }
    this.#retry(info.code, reason);
  }

  #retry(code: number | null, reason: string): void {
    const delay = this.#backoff.next();
    this.stats.reconnects += 1;
    this.#setState({ state: "closed", code, reason, willRetry: true, retryInMs: delay });
    this.#retryTimer.start(delay, () => void this.#open());
  }

  #setState(state: ConnectionState): void {
    this.#state = state;
    this.#emitter.emit("state", state);
  }

  #stored<T>(name: string): StoredValue<T> | undefined {
    return this.#storage && new StoredValue<T>(this.#storage, `${this.#options.storageKey}:${name}`);
  }
}

/** The `{"epoch", "offset"}` close reason of 1001 and 4008, if that is what it is. */
function parsePosition(reason: string): Position | undefined {
  try {
    const value = JSON.parse(reason) as Partial<Position>;
    if (typeof value.epoch === "string" && Number.isSafeInteger(value.offset)) {
      return { epoch: value.epoch, offset: value.offset as number };
    }
  } catch {
    /* not a position */
  }
  return undefined;
}
