import type { Connection } from "./connection.js";
import { type ApiError, wireError } from "./errors.js";
import type * as Wire from "./generated/messages.js";
import type { PositionTracker } from "./position.js";
import type { Filters, Position, ResetReason, ServerEvent, Snapshot } from "./types.js";

/** The server could not resume a subscription (or it had no position yet): start over from here. */
export interface Reset {
  readonly reason: ResetReason;
  /** The snapshot's position: every later change arrives as an event. */
  readonly position: Position;
  /** Absent when the subscription asked for `snapshot: false`. */
  readonly snapshot: Snapshot | undefined;
}

export interface SubscriptionHandlers {
  /** Every new event, in offset order, each once. */
  onEvent(event: ServerEvent): void;
  /** Rebuild from the snapshot: events before it will not be delivered. */
  onReset?(reset: Reset): void;
  /** The server refused the subscription (e.g. too_many_subscriptions); tried again on the next connection. */
  onError?(error: ApiError): void;
}

export interface SubscribeOptions {
  /**
   * Persist the position under this name (needs the client's storageKey), so a reloaded page
   * resumes where it stopped. Only worth it when the app also keeps what it built from the events.
   */
  readonly key?: string;
  /** false: no snapshot on a reset, only what happens from the reset's position on. */
  readonly snapshot?: boolean;
}

/** A live subscription: resubscribes with `since` after every reconnect until unsubscribed. */
export interface Subscription {
  readonly filters: Filters;
  /** The last delivered event's position (or the last snapshot's). */
  readonly position: Position | undefined;
  unsubscribe(): void;
}

/** What the owning client learns about its subscription. */
export interface SubscriptionHooks {
  reset(reset: Reset): void;
  duplicate(event: ServerEvent): void;
  unsubscribed(): void;
}

/** One subscription of the WebSocket client, across its connections. */
export class WsSubscription implements Subscription {
  readonly filters: Filters;
  readonly #handlers: SubscriptionHandlers;
  readonly #tracker: PositionTracker;
  readonly #snapshot: boolean;
  readonly #hooks: SubscriptionHooks;
  #connection: Connection | undefined;
  #id = 0;
  /**
   * Past its replay on this connection: started from a snapshot, or an event after the
   * replay's end arrived. Only then does a close reason's position cover it: the server
   * vouches with the last frame it wrote to the connection, and while this subscription's
   * replay is still being written, another subscription's live events can be that frame.
   */
  #live = false;
  #replayEnd = Infinity;

  constructor(filters: Filters, handlers: SubscriptionHandlers, tracker: PositionTracker, snapshot: boolean, hooks: SubscriptionHooks) {
    this.filters = filters;
    this.#handlers = handlers;
    this.#tracker = tracker;
    this.#snapshot = snapshot;
    this.#hooks = hooks;
  }

  get position(): Position | undefined {
    return this.#tracker.position;
  }

  /** Subscribes on a fresh connection, from the known position if any; `done` on its result. */
  start(connection: Connection, done: () => void): void {
    const since = this.#tracker.position;
    this.#connection = connection;
    this.#live = false;
    this.#replayEnd = Infinity;
    const command: Wire.SubscribeCommand extends infer C ? Omit<C, "id"> : never = {
      type: "subscribe",
      ...this.filters,
      ...(since && { since: { epoch: since.epoch, offset: since.offset } }),
      ...(!this.#snapshot && { snapshot: false }),
    };
    this.#id = connection.send(command, (result) => {
      if (result.success) this.#subscribed(result.result as Wire.SubscribeResult);
      else this.#handlers.onError?.(wireError(result.error));
      done();
    }, (event) => this.#deliver(event));
  }

  /** The connection ended. A 1001/4008 close reason vouches that everything up to it was delivered. */
  stop(vouched: Position | undefined): void {
    if (this.#live && vouched) this.#tracker.advance(vouched);
    this.#connection = undefined;
    this.#live = false;
  }

  unsubscribe(): void {
    const connection = this.#connection;
    if (connection) {
      connection.unroute(this.#id);
      connection.send({ type: "unsubscribe", subscription: this.#id });
    }
    this.stop(undefined);
    this.#hooks.unsubscribed();
  }

  #subscribed(result: Wire.SubscribeResult): void {
    if (result.recovered) {
      // The replay up to result.offset follows as events, then live ones.
      this.#replayEnd = result.offset;
      this.#live = (this.#tracker.position?.offset ?? 0) >= result.offset;
      return;
    }
    this.#live = true;
    const position = { epoch: result.epoch, offset: result.offset };
    this.#tracker.reset(position);
    // The snapshot's device configs are the protocol's config wire form (Snapshot says so).
    const reset: Reset = { reason: result.reason ?? "no_position", position, snapshot: result.snapshot as Snapshot | undefined };
    this.#handlers.onReset?.(reset);
    this.#hooks.reset(reset);
  }

  #deliver(event: ServerEvent): void {
    if (event.offset > this.#replayEnd) this.#live = true;
    if (this.#tracker.accept(event)) this.#handlers.onEvent(event);
    else this.#hooks.duplicate(event);
  }
}
