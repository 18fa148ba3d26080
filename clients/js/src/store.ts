import type { Reset, SubscribeOptions, SubscriptionHandlers } from "./subscription.js";
import type { CommandData, DeviceConfig, Filters, ServerEvent, SnapshotDevice } from "./types.js";

/** A device as the store holds it: its REST form, its latest state, its latest command. */
export type StoreDevice = SnapshotDevice & {
  /** The newest command of this device the user may see, with its status; null until one. */
  readonly last_command: CommandData | null;
};

export type StoreListener = (devices: ReadonlyMap<string, StoreDevice>, changed: ReadonlySet<string>) => void;

/** Anything the store can follow: the WebSocket client or the SSE client. */
export interface EventFeed {
  subscribe(filters: Filters, handlers: SubscriptionHandlers, options?: SubscribeOptions): { unsubscribe(): void };
}

export interface DeviceStoreOptions {
  /** Which devices; default every device the user may see. */
  readonly filters?: Omit<Filters, "events">;
  /**
   * How to defer a notification; default the next animation frame in a browser, else a
   * microtask. Changes in between are coalesced into one call.
   */
  readonly schedule?: (flush: () => void) => void;
}

function defaultSchedule(): (flush: () => void) => void {
  const raf = (globalThis as { requestAnimationFrame?: (callback: () => void) => unknown }).requestAnimationFrame;
  return raf ? (flush) => void raf(flush) : queueMicrotask;
}

/**
 * The devices the user may see, kept current from a snapshot plus the event stream: what an
 * app renders from. Entries are immutable (a changed device is a new object), listeners are
 * called at most once per frame with the whole map and the ids that changed, so a UI fed 200
 * updates a second re-renders 60 times at most, and only the cards that changed.
 */
export class DeviceStore {
  readonly #devices = new Map<string, StoreDevice>();
  readonly #listeners = new Set<StoreListener>();
  readonly #changed = new Set<string>();
  readonly #schedule: (flush: () => void) => void;
  readonly #subscription: { unsubscribe(): void };
  #view: ReadonlyMap<string, StoreDevice> = new Map();
  #loaded = false;
  #scheduled = false;

  constructor(feed: EventFeed, options: DeviceStoreOptions = {}) {
    this.#schedule = options.schedule ?? defaultSchedule();
    this.#subscription = feed.subscribe(options.filters ?? {}, {
      onEvent: (event) => this.#apply(event),
      onReset: (reset) => this.#load(reset),
    });
  }

  /** Whether the first snapshot has arrived. */
  get loaded(): boolean {
    return this.#loaded;
  }

  /** The devices as of the last notification. */
  get devices(): ReadonlyMap<string, StoreDevice> {
    return this.#view;
  }

  /**
   * Calls the listener now if the store has loaded, then after every batch of changes.
   * Returns the function that removes it.
   */
  subscribe(listener: StoreListener): () => void {
    this.#listeners.add(listener);
    if (this.#loaded) listener(this.#view, new Set(this.#view.keys()));
    return () => this.#listeners.delete(listener);
  }

  close(): void {
    this.#subscription.unsubscribe();
    this.#listeners.clear();
  }

  #load(reset: Reset): void {
    for (const id of this.#devices.keys()) this.#changed.add(id);
    this.#devices.clear();
    for (const device of reset.snapshot?.devices ?? []) {
      this.#devices.set(device.id, { ...device, last_command: null });
      this.#changed.add(device.id);
    }
    this.#loaded = true;
    this.#notify();
  }

  #apply(event: ServerEvent): void {
    const id = event.device_id;
    const device = this.#devices.get(id);
    switch (event.type) {
      case "device_added":
      case "device_updated":
        // device_updated also brings devices moved into one of the user's homes: new to us.
        this.#put(device ? { ...device, ...identity(event.data), home: event.home, updated_at: event.ts } : newDevice(event));
        return;
      case "device_removed":
        if (this.#devices.delete(id)) this.#touch(id);
        return;
      case "state":
        if (device) {
          const state = device.state;
          this.#put({
            ...device,
            state: { ...state, values: { ...state.values, ...event.data.values }, updated_at: event.ts, device_ts: event.data.ts, seq: event.data.seq },
          });
        }
        return;
      case "availability":
        if (device) this.#put({ ...device, online: event.data.online });
        return;
      case "command":
        if (device) this.#put({ ...device, last_command: event.data });
        return;
      case "device_event":
        return; // momentary: nothing to keep (subscribe to events to show them)
    }
  }

  #put(device: StoreDevice): void {
    this.#devices.set(device.id, device);
    this.#touch(device.id);
  }

  #touch(id: string): void {
    this.#changed.add(id);
    this.#notify();
  }

  #notify(): void {
    if (this.#scheduled || !this.#loaded) return;
    this.#scheduled = true;
    this.#schedule(() => this.#flush());
  }

  #flush(): void {
    this.#scheduled = false;
    this.#view = new Map(this.#devices);
    const changed = new Set(this.#changed);
    this.#changed.clear();
    for (const listener of this.#listeners) listener(this.#view, changed);
  }
}

function identity(config: DeviceConfig): Pick<StoreDevice, "name" | "kind" | "config"> {
  return { name: config.name, kind: config.kind, config };
}

function newDevice(event: Extract<ServerEvent, { type: "device_added" | "device_updated" }>): StoreDevice {
  return {
    id: event.device_id,
    ...identity(event.data),
    home: event.home,
    online: null, // its availability event follows
    first_seen: event.ts,
    updated_at: event.ts,
    state: { device_id: event.device_id, values: {}, updated_at: null, device_ts: null, seq: null },
    last_command: null,
  };
}
