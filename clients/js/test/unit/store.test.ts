import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { DeviceStore, type EventFeed, type ServerEvent, type StoreDevice, type SubscriptionHandlers } from "../../src/index.js";
import type { DeviceConfig, SnapshotDevice } from "../../src/types.js";

const EPOCH = "e".repeat(32);

/** Feeds the store by hand: the store's own logic, without a connection. */
class HandFeed implements EventFeed {
  handlers: SubscriptionHandlers | undefined;
  unsubscribed = false;
  subscribe(_filters: unknown, handlers: SubscriptionHandlers): { unsubscribe(): void } {
    this.handlers = handlers;
    return { unsubscribe: () => (this.unsubscribed = true) };
  }
}

function config(id: string, name = id): DeviceConfig {
  return { schema: 1, id, kind: "sensor", name, measurements: { temperature: { unit: "°C" } } };
}

function snapshotDevice(id: string): SnapshotDevice {
  return {
    id,
    name: id,
    kind: "sensor",
    home: "default",
    online: true,
    first_seen: 1,
    updated_at: 1,
    config: config(id),
    state: { device_id: id, values: { temperature: 20 }, updated_at: 1, device_ts: 1, seq: 1 },
  };
}

let offset = 100;
function event<T extends ServerEvent["type"]>(type: T, device: string, data: Extract<ServerEvent, { type: T }>["data"]): ServerEvent {
  return { type, device_id: device, home: "default", offset: offset++, epoch: EPOCH, ts: 1000 + offset, data } as ServerEvent;
}

function setup(): { feed: HandFeed; store: DeviceStore; flush: () => void; calls: [ReadonlyMap<string, StoreDevice>, ReadonlySet<string>][] } {
  const feed = new HandFeed();
  const pending: (() => void)[] = [];
  const store = new DeviceStore(feed, { schedule: (flush) => pending.push(flush) });
  const calls: [ReadonlyMap<string, StoreDevice>, ReadonlySet<string>][] = [];
  store.subscribe((devices, changed) => calls.push([devices, changed]));
  const flush = (): void => {
    for (const run of pending.splice(0)) run();
  };
  return { feed, store, flush, calls };
}

describe("DeviceStore", () => {
  it("loads the snapshot, then applies every kind of event", () => {
    const { feed, store, flush, calls } = setup();
    feed.handlers?.onReset?.({ reason: "no_position", position: { epoch: EPOCH, offset: 99 }, snapshot: { devices: [snapshotDevice("a"), snapshotDevice("b")] } });
    flush();
    assert.equal(store.loaded, true);
    assert.deepEqual([...store.devices.keys()], ["a", "b"]);

    const handlers = feed.handlers;
    assert.ok(handlers);
    handlers.onEvent(event("state", "a", { values: { humidity: 40 }, ts: 5, seq: 2 }));
    handlers.onEvent(event("availability", "a", { online: false }));
    handlers.onEvent(event("device_added", "c", config("c")));
    handlers.onEvent(event("device_updated", "b", config("b", "Bee")));
    handlers.onEvent(event("device_removed", "b", {}));
    handlers.onEvent(event("device_event", "a", { event: "button_press", data: {}, ts: null }));
    const command = { id: "k1", device_id: "a", values: { target_temperature: 21 }, status: "acked" as const, reason: null, sub: "u", created_at: 1, updated_at: 2 };
    handlers.onEvent(event("command", "a", command));
    flush();

    const a = store.devices.get("a");
    assert.ok(a);
    assert.deepEqual(a.state.values, { temperature: 20, humidity: 40 });
    assert.equal(a.state.seq, 2);
    assert.equal(a.online, false);
    assert.deepEqual(a.last_command, command);
    assert.equal(store.devices.has("b"), false);
    assert.equal(store.devices.get("c")?.online, null);
    assert.deepEqual(store.devices.get("c")?.state.values, {});
    assert.equal(calls.length, 2, "one call for the snapshot, one for the batch");
    assert.deepEqual([...(calls[1]?.[1] ?? [])].sort(), ["a", "b", "c"]);
  });

  it("coalesces a burst into one notification and keeps unchanged entries identical", () => {
    const { feed, store, flush, calls } = setup();
    feed.handlers?.onReset?.({ reason: "no_position", position: { epoch: EPOCH, offset: 1 }, snapshot: { devices: [snapshotDevice("a"), snapshotDevice("b")] } });
    flush();
    const before = store.devices;
    for (let i = 0; i < 200; i++) feed.handlers?.onEvent(event("state", "a", { values: { temperature: i }, ts: i, seq: i }));
    assert.equal(store.devices, before, "nothing published before the frame");
    flush();
    assert.equal(calls.length, 2);
    assert.deepEqual([...(calls[1]?.[1] ?? [])], ["a"]);
    assert.equal(store.devices.get("a")?.state.values["temperature"], 199);
    assert.equal(store.devices.get("b"), before.get("b"), "an unchanged device keeps its object");
    assert.notEqual(store.devices, before, "a new map per notification");
  });

  it("a reset replaces everything and reports the devices that went away", () => {
    const { feed, store, flush, calls } = setup();
    feed.handlers?.onReset?.({ reason: "no_position", position: { epoch: EPOCH, offset: 1 }, snapshot: { devices: [snapshotDevice("a")] } });
    flush();
    feed.handlers?.onReset?.({ reason: "epoch_changed", position: { epoch: EPOCH, offset: 9 }, snapshot: { devices: [snapshotDevice("z")] } });
    flush();
    assert.deepEqual([...store.devices.keys()], ["z"]);
    assert.deepEqual([...(calls[1]?.[1] ?? [])].sort(), ["a", "z"]);
  });

  it("calls a late listener at once with everything, and close unsubscribes", () => {
    const { feed, store, flush } = setup();
    feed.handlers?.onReset?.({ reason: "no_position", position: { epoch: EPOCH, offset: 1 }, snapshot: { devices: [snapshotDevice("a")] } });
    flush();
    let seen: string[] = [];
    store.subscribe((_devices, changed) => (seen = [...changed]));
    assert.deepEqual(seen, ["a"]);
    store.close();
    assert.equal(feed.unsubscribed, true);
  });
});
