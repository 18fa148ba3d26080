import { type Clock, Timer } from "./clock.js";
import { wireError } from "./errors.js";
import type * as Wire from "./generated/messages.js";
import type { TokenProvider, WebSocketConstructor, WebSocketLike } from "./socket.js";
import type { CommandBody, ServerEvent, ServerStatus } from "./types.js";

/** How one socket ended. */
export interface CloseInfo {
  /** The WebSocket close code; null when the client gave the socket up itself. */
  readonly code: number | null;
  readonly reason: string;
  /** The server's auth_invalid message, when authentication was refused. */
  readonly authError?: { readonly code: string; readonly message: string };
}

export interface ConnectionOptions {
  readonly url: string;
  readonly token: string;
  readonly WebSocket: WebSocketConstructor;
  readonly clock: Clock;
  readonly getToken: TokenProvider;
  readonly heartbeatMs: number;
  readonly pongTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly refreshMarginMs: number;
}

export interface ConnectionHandlers {
  /** auth_ok: the connection takes commands. */
  ready(auth: Wire.AuthOk): void;
  /** Called exactly once, however the socket ended. */
  closed(info: CloseInfo): void;
  /** A token refresh failed; the connection goes on until the token expires. */
  refreshFailed(error: unknown): void;
  /** The server's broker connection, as auth_ok and every later change report it. */
  status(status: ServerStatus): void;
}

type ResultHandler = (result: Wire.Result) => void;
type EventHandler = (event: ServerEvent) => void;

/**
 * One WebSocket from its opening to its close: the auth phase, message ids, results and
 * events routed to whoever sent the command, the heartbeat and the in-place token refresh.
 * Reconnecting is the client's job; a Connection is never reused.
 *
 * Results and events are handed over synchronously, in socket order: a subscription must apply
 * its result (a snapshot) before the events that follow it, and `ws` dispatches several
 * frames of one TCP read in one task, before any promise continuation could run.
 */
export class Connection {
  readonly #options: ConnectionOptions;
  readonly #handlers: ConnectionHandlers;
  readonly #socket: WebSocketLike;
  readonly #results = new Map<number, ResultHandler>();
  readonly #routes = new Map<number, EventHandler>();
  readonly #connectTimer: Timer;
  readonly #pingTimer: Timer;
  readonly #pongTimer: Timer;
  readonly #refreshTimer: Timer;
  #nextId = 1;
  #outstandingPing: number | undefined;
  #authError: CloseInfo["authError"];
  #expiresAt: number | null = null;
  #finished = false;

  constructor(options: ConnectionOptions, handlers: ConnectionHandlers) {
    this.#options = options;
    this.#handlers = handlers;
    this.#connectTimer = new Timer(options.clock);
    this.#pingTimer = new Timer(options.clock);
    this.#pongTimer = new Timer(options.clock);
    this.#refreshTimer = new Timer(options.clock);
    this.#socket = new options.WebSocket(options.url);
    this.#socket.addEventListener("message", (event) => this.#onMessage(event.data));
    this.#socket.addEventListener("close", (event) => this.#finish({ code: event.code, reason: event.reason }));
    // A close event always follows an error; listening keeps `ws` from throwing it.
    this.#socket.addEventListener("error", () => undefined);
    this.#connectTimer.start(options.connectTimeoutMs, () => this.#abandon("connect_timeout"));
  }

  /** The token's expiry (epoch seconds) as the server last confirmed it. */
  get expiresAt(): number | null {
    return this.#expiresAt;
  }

  /**
   * Sends a command; `onResult` gets its one result, `onEvent` the events the server delivers
   * with its id (a subscription's, a command's outcome). Returns the id. After the socket
   * ended nothing is sent and nothing is called back.
   */
  send(body: CommandBody, onResult?: ResultHandler, onEvent?: EventHandler): number {
    const id = this.#nextId++;
    if (this.#finished) return id;
    if (onResult) this.#results.set(id, onResult);
    if (onEvent) this.#routes.set(id, onEvent);
    this.#socket.send(JSON.stringify({ id, ...body }));
    return id;
  }

  /** Stops delivering events of an id (an unsubscribed subscription, a settled command). */
  unroute(id: number): void {
    this.#routes.delete(id);
  }

  close(code = 1000, reason = ""): void {
    this.#finish({ code, reason });
    this.#socket.close(code, reason);
  }

  #onMessage(data: unknown): void {
    let message: Wire.ServerMessage;
    try {
      message = JSON.parse(typeof data === "string" ? data : String(data)) as Wire.ServerMessage;
    } catch {
      return; // the server only sends JSON; a frame that is not is no message of ours
    }
    switch (message.type) {
      case "auth_required":
        this.#socket.send(JSON.stringify({ type: "auth", access_token: this.#options.token }));
        break;
      case "auth_ok":
        this.#connectTimer.stop();
        this.#expiresAt = message.expires_at;
        this.#scheduleRefresh();
        this.#pingTimer.start(this.#options.heartbeatMs, () => this.#ping());
        this.#handlers.ready(message);
        if (message.status) this.#handlers.status(message.status);
        break;
      case "status":
        this.#handlers.status({ broker: message.broker });
        break;
      case "auth_invalid":
        this.#authError = { code: message.code, message: message.message }; // the close follows
        break;
      case "token_expired":
        void this.#refresh();
        break;
      case "result": {
        const handler = message.id === null ? undefined : this.#results.get(message.id);
        if (message.id !== null) this.#results.delete(message.id);
        handler?.(message);
        break;
      }
      case "pong":
        if (message.id === this.#outstandingPing) {
          this.#outstandingPing = undefined;
          this.#pongTimer.stop();
        }
        break;
      case "event":
        // The schema's if/then ties data to type; ServerEvent is that narrowing.
        this.#routes.get(message.id)?.(message.event as ServerEvent);
        break;
    }
  }

  #ping(): void {
    // A ping still unanswered keeps its own deadline; never stack a second one.
    if (this.#outstandingPing === undefined) {
      this.#outstandingPing = this.send({ type: "ping" });
      this.#pongTimer.start(this.#options.pongTimeoutMs, () => this.#abandon("heartbeat_timeout"));
    }
    this.#pingTimer.start(this.#options.heartbeatMs, () => this.#ping());
  }

  #scheduleRefresh(): void {
    if (this.#expiresAt === null) return;
    // Refresh ahead of expiry by the margin, or half the remaining life of a short token,
    // so a failed attempt still leaves time for more before the server's deadline.
    const remaining = this.#expiresAt * 1000 - this.#options.clock.now();
    const delay = Math.max(1000, remaining - Math.min(this.#options.refreshMarginMs, remaining / 2));
    this.#refreshTimer.start(delay, () => void this.#refresh());
  }

  async #refresh(): Promise<void> {
    this.#refreshTimer.stop();
    let token: string;
    try {
      token = await this.#options.getToken({ reason: "refresh" });
    } catch (error) {
      if (this.#finished) return;
      this.#handlers.refreshFailed(error);
      this.#scheduleRefresh();
      return;
    }
    this.send({ type: "auth", access_token: token }, (result) => {
      if (result.success) this.#expiresAt = (result.result as Wire.AuthResult).expires_at;
      else this.#handlers.refreshFailed(wireError(result.error));
      this.#scheduleRefresh();
    });
  }

  /** Gives up a socket that stopped answering: closing it cleanly may take as long again. */
  #abandon(reason: string): void {
    this.#finish({ code: null, reason });
    this.#socket.close(4000, reason);
  }

  #finish(info: CloseInfo): void {
    if (this.#finished) return;
    this.#finished = true;
    for (const timer of [this.#connectTimer, this.#pingTimer, this.#pongTimer, this.#refreshTimer]) timer.stop();
    this.#results.clear();
    this.#routes.clear();
    this.#handlers.closed(this.#authError ? { ...info, authError: this.#authError } : info);
  }
}
