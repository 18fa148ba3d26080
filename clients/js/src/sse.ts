import { Backoff, type BackoffOptions } from "./backoff.js";
import { type Clock, Timer, systemClock } from "./clock.js";
import { Emitter } from "./emitter.js";
import type * as Wire from "./generated/messages.js";
import { PositionTracker } from "./position.js";
import { type FetchLike, RestClient, responseError } from "./rest.js";
import type { TokenProvider } from "./socket.js";
import { type StorageLike, StoredValue, browserStorage } from "./storage.js";
import { SseParser } from "./sse-parser.js";
import type { Reset, SubscribeOptions, Subscription, SubscriptionHandlers } from "./subscription.js";
import type { Filters, Position, ServerEvent, ServerStatus, Snapshot } from "./types.js";
import { apiUrl } from "./url.js";

export interface SseClientOptions {
  readonly url: string | URL;
  readonly getToken: TokenProvider;
  /** Default: the global fetch. It must stream response bodies (browsers and Node >= 18 do). */
  readonly fetch?: FetchLike;
  readonly storageKey?: string;
  readonly storage?: StorageLike;
  readonly backoff?: BackoffOptions;
  readonly random?: () => number;
  readonly clock?: Clock;
  /** A stream silent this long is given up and reopened; the server sends a keep-alive every 15 s (default 45 s). */
  readonly idleTimeoutMs?: number;
  /** A stream open this long resets the backoff (default 10 s). */
  readonly stableMs?: number;
}

export type StreamState =
  | { readonly state: "connecting" | "resuming" | "open" }
  | { readonly state: "closed"; readonly reason: string; readonly willRetry: boolean; readonly retryInMs?: number };

export interface SseClientEvents {
  state: StreamState & { readonly subscription: Subscription };
  /** The server lost or regained the MQTT broker (every stream reports it). */
  status: ServerStatus;
  reset: Reset & { readonly subscription: Subscription };
  error: unknown;
  duplicate: { readonly subscription: Subscription; readonly event: ServerEvent };
}

/**
 * The same events as Server-Sent Events, for networks that block WebSockets. Each subscription
 * is one stream, read with fetch: every (re)connect takes a fresh single-use ticket and resumes
 * with `?since=` (both in the URL, so the request stays a CORS simple request), which
 * EventSource's own reconnect (same URL, same spent ticket) cannot do. Read-only: commands go
 * through REST (`rest.sendCommand`).
 */
export class SseClient {
  readonly rest: RestClient;
  readonly stats = { duplicatesDropped: 0 };
  readonly #options: SseClientOptions;
  readonly #emitter = new Emitter<SseClientEvents>();
  readonly #streams = new Set<SseStream>();
  readonly #storage: StorageLike | undefined;
  readonly #context: StreamContext;

  constructor(options: SseClientOptions) {
    this.#options = options;
    this.rest = new RestClient({ url: options.url, getToken: options.getToken, ...(options.fetch && { fetch: options.fetch }) });
    this.#storage = options.storageKey === undefined ? undefined : (options.storage ?? browserStorage());
    this.#context = {
      options,
      rest: this.rest,
      fetch: options.fetch ?? ((input, init) => globalThis.fetch(input, init)),
      clock: options.clock ?? systemClock,
      emit: (type, value) => this.#emitter.emit(type, value),
      duplicate: () => (this.stats.duplicatesDropped += 1),
      remove: (stream) => this.#streams.delete(stream),
    };
  }

  on<K extends keyof SseClientEvents>(type: K, listener: (value: SseClientEvents[K]) => void): () => void {
    return this.#emitter.on(type, listener);
  }

  subscribe(filters: Filters, handlers: SubscriptionHandlers, options: SubscribeOptions = {}): Subscription {
    const stored =
      this.#storage && options.key !== undefined
        ? new StoredValue<Position>(this.#storage, `${this.#options.storageKey}:position:${options.key}`)
        : undefined;
    const stream = new SseStream(this.#context, filters, handlers, new PositionTracker(stored));
    this.#streams.add(stream);
    stream.start();
    return stream;
  }

  close(): void {
    for (const stream of this.#streams) stream.unsubscribe();
  }
}

interface StreamContext {
  readonly options: SseClientOptions;
  readonly rest: RestClient;
  readonly fetch: FetchLike;
  readonly clock: Clock;
  emit<K extends keyof SseClientEvents>(type: K, value: SseClientEvents[K]): void;
  duplicate(): number;
  remove(stream: SseStream): void;
}

/** The abort reason of a stream that went silent. */
const IDLE = Symbol("idle");

/** One subscription's stream, reopened until unsubscribed. */
class SseStream implements Subscription {
  readonly filters: Filters;
  readonly #context: StreamContext;
  readonly #handlers: SubscriptionHandlers;
  readonly #tracker: PositionTracker;
  readonly #backoff: Backoff;
  readonly #idle: Timer;
  readonly #stable: Timer;
  readonly #retry: Timer;
  #abort: AbortController | undefined;
  #running = true;
  /** A `ready` that did not recover: its position, until the snapshot that follows it. */
  #pendingReset: Omit<Reset, "snapshot"> | undefined;

  constructor(context: StreamContext, filters: Filters, handlers: SubscriptionHandlers, tracker: PositionTracker) {
    this.#context = context;
    this.filters = filters;
    this.#handlers = handlers;
    this.#tracker = tracker;
    this.#backoff = new Backoff(this.#context.options.backoff, this.#context.options.random);
    this.#idle = new Timer(this.#context.clock);
    this.#stable = new Timer(this.#context.clock);
    this.#retry = new Timer(this.#context.clock);
  }

  get position(): Position | undefined {
    return this.#tracker.position;
  }

  start(): void {
    void this.#connect();
  }

  unsubscribe(): void {
    if (!this.#running) return;
    this.#running = false;
    this.#retry.stop();
    this.#abort?.abort();
    this.#context.remove(this);
    this.#state({ state: "closed", reason: "unsubscribed", willRetry: false });
  }

  async #connect(): Promise<void> {
    this.#state({ state: this.#tracker.position ? "resuming" : "connecting" });
    let reason: string;
    try {
      reason = await this.#read();
    } catch (error) {
      if (!this.#running) return;
      this.#context.emit("error", error);
      reason = error instanceof Error ? error.message : String(error);
    } finally {
      this.#idle.stop();
      this.#stable.stop();
    }
    if (!this.#running) return;
    const delay = this.#backoff.next();
    this.#state({ state: "closed", reason, willRetry: true, retryInMs: delay });
    this.#retry.start(delay, () => void this.#connect());
  }

  /** One stream from its request to its end; returns why it ended. */
  async #read(): Promise<string> {
    const { ticket } = await this.#context.rest.eventTicket();
    const query = new URLSearchParams({ ticket });
    for (const name of ["devices", "kinds", "homes", "events"] as const) {
      const values = this.filters[name];
      if (values) query.set(name, values.join(","));
    }
    const since = this.#tracker.position;
    if (since) query.set("since", `${since.epoch}:${since.offset}`);
    const abort = (this.#abort = new AbortController());
    const idleTimeout = this.#context.options.idleTimeoutMs ?? 45_000;
    const resetIdle = (): void => this.#idle.start(idleTimeout, () => abort.abort(IDLE));
    resetIdle();
    const response = await this.#context.fetch(apiUrl(this.#context.options.url, "api/v1/events", query), {
      headers: { Accept: "text/event-stream" },
      signal: abort.signal,
    });
    if (!response.ok || !response.body) throw await responseError(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return "stream_ended";
        resetIdle();
        for (const message of parser.feed(decoder.decode(value, { stream: true }))) {
          if (message.event === "token_expired") return "token_expired";
          this.#dispatch(message.event, message.data);
        }
      }
    } catch (error) {
      if (abort.signal.reason === IDLE) return "idle_timeout";
      throw error;
    } finally {
      abort.abort();
    }
  }

  #dispatch(type: string, data: string): void {
    if (type === "ready") {
      const ready = JSON.parse(data) as Wire.Position;
      const position = { epoch: ready.epoch, offset: ready.offset };
      if (ready.recovered) this.#live();
      else this.#pendingReset = { reason: ready.reason ?? "no_position", position };
    } else if (type === "snapshot" && this.#pendingReset) {
      // The snapshot's device configs are the protocol's config wire form (Snapshot says so).
      const reset: Reset = { ...this.#pendingReset, snapshot: JSON.parse(data) as Snapshot };
      this.#pendingReset = undefined;
      this.#tracker.reset(reset.position);
      this.#handlers.onReset?.(reset);
      this.#context.emit("reset", { ...reset, subscription: this });
      this.#live();
    } else if (type === "status") {
      this.#context.emit("status", JSON.parse(data) as ServerStatus);
    } else {
      const event = JSON.parse(data) as ServerEvent;
      if (event.type !== type) return; // not an event of the log (a newer server's message)
      if (this.#tracker.accept(event)) this.#handlers.onEvent(event);
      else {
        this.#context.duplicate();
        this.#context.emit("duplicate", { subscription: this, event });
      }
    }
  }

  #live(): void {
    this.#state({ state: "open" });
    this.#stable.start(this.#context.options.stableMs ?? 10_000, () => this.#backoff.reset());
  }

  #state(state: StreamState): void {
    this.#context.emit("state", { ...state, subscription: this });
  }
}
