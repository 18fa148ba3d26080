// The WebSocket and SSE clients against the real server, broker and devices (the simulator,
// and a test device for what the simulator does not do on demand). Every frame is checked
// against docs/asyncapi.yaml.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import {
  ApiError,
  CommandError,
  DeviceStore,
  MemoryStorage,
  type Reset,
  type ServerEvent,
  SseClient,
  ThermoBridgeClient,
  type TokenRequest,
} from "../../src/index.js";
import { TestDevice } from "./device.js";
import { eventually, increasing, recordStates, waitForState } from "./helpers.js";
import { Stack } from "./stack.js";
import { type Wire, checkedWire } from "./wire.js";

const THERMOSTAT = "sim_thermostat_1";

describe("the real-time API through the SDK", () => {
  let stack: Stack;
  let token: string;
  let wire: Wire;
  const clients: ThermoBridgeClient[] = [];

  /** A client on the checked wire, closed after the suite. */
  function client(options: Partial<ConstructorParameters<typeof ThermoBridgeClient>[0]> = {}): ThermoBridgeClient {
    const created = new ThermoBridgeClient({ url: stack.url, getToken: () => Promise.resolve(token), WebSocket: wire.WebSocket, ...options });
    clients.push(created);
    return created;
  }

  before(async () => {
    stack = await Stack.start({ server: { AUTH_LEEWAY: "0" } });
    stack.startSimulator(["--thermostats", "2", "--sensors", "1", "--seed", "3"]);
    token = await stack.token();
    wire = await checkedWire();
  });

  after(async () => {
    for (const each of clients) each.close();
    await TestDevice.closeAll();
    await stack.stop();
    assert.deepEqual(wire.violations, [], "every frame matches docs/asyncapi.yaml");
  });

  it("authenticates and reports connecting, then open with the user's identity", async () => {
    const subject = client();
    const states = recordStates(subject);
    subject.connect();
    const open = await waitForState(subject, "open");
    assert.equal(open.sub, "sdk|user");
    assert.deepEqual([...open.permissions].sort(), ["read:devices", "write:devices"]);
    assert.ok(open.expiresAt !== null && open.expiresAt > Date.now() / 1000);
    assert.deepEqual(
      states.map((state) => state.state),
      ["connecting", "open"],
    );
    subject.close();
    assert.deepEqual(subject.state, { state: "closed", code: 1000, reason: "client closed", willRetry: false });
  });

  it("asks for a new token after auth_invalid (4002) and gives up on insufficient_scope", async () => {
    const reasons: TokenRequest["reason"][] = [];
    const rejected = client({
      getToken: (request) => {
        reasons.push(request.reason);
        return Promise.resolve(reasons.length === 1 ? "not-a-token" : token);
      },
      backoff: { minMs: 10, baseMs: 50, maxMs: 100 },
    });
    const states = recordStates(rejected);
    rejected.connect();
    await waitForState(rejected, "open");
    const closed = states.find((state) => state.state === "closed");
    assert.ok(closed?.state === "closed");
    assert.equal(closed.code, 4002);
    assert.match(closed.reason, /^invalid_token: /);
    assert.equal(closed.willRetry, true);
    assert.deepEqual(reasons, ["use", "rejected"]);

    const noScope = await stack.token({ permissions: [] });
    const refused = client({ getToken: () => Promise.resolve(noScope) });
    refused.connect();
    const final = await eventually("the final close", () =>
      refused.state.state === "closed" && !refused.state.willRetry && refused.state.code !== null ? refused.state : undefined,
    );
    assert.equal(final.code, 4002);
    assert.match(final.reason, /^insufficient_scope: /);
  });

  it("refreshes a short-lived token in place, before it expires, on the same socket", async () => {
    const tokens: TokenRequest["reason"][] = [];
    const short = client({
      getToken: async (request) => {
        const minted = await stack.token({ ttl: 4 });
        tokens.push(request.reason);
        return minted;
      },
    });
    const socketsBefore = wire.sockets;
    const states = recordStates(short);
    short.connect();
    await waitForState(short, "open");
    const sub = short.subscribe({ devices: [THERMOSTAT], events: ["state"] }, { onEvent: () => undefined });
    // Three lifetimes of the first token: without refreshes the server would have said token_expired.
    await sleep(10_000);
    assert.equal(wire.sockets - socketsBefore, 1, "one socket for the whole time");
    assert.deepEqual(states.map((state) => state.state), ["connecting", "open"]);
    assert.equal(tokens[0], "use");
    assert.ok(tokens.filter((reason) => reason === "refresh").length >= 2, `refreshes: ${tokens.join(",")}`);
    const frames = wire.frames.slice(-200);
    assert.ok(!frames.some((frame) => frame.message["type"] === "token_expired"), "no token_expired");
    const refreshIds = new Set(frames.filter((f) => f.direction === "out" && f.message["type"] === "auth" && "id" in f.message).map((f) => f.message["id"]));
    const refreshResults = frames.filter((f) => f.direction === "in" && f.message["type"] === "result" && refreshIds.has(f.message["id"]));
    assert.ok(refreshResults.length >= 2 && refreshResults.every((f) => f.message["success"] === true));
    assert.ok(sub.position !== undefined, "events still flow");
    short.close();
  });

  it("delivers every event type in offset order, and commands settle on the device's answer", async () => {
    const device = await TestDevice.connect(stack.mqttUrl, "test_device_1");
    const subject = client();
    const events: ServerEvent[] = [];
    const resets: Reset[] = [];
    subject.subscribe({ devices: [device.id] }, { onEvent: (event) => events.push(event), onReset: (reset) => resets.push(reset) });
    subject.connect();
    const reset = await eventually("the snapshot", () => resets[0]);
    assert.equal(reset.reason, "no_position");
    assert.deepEqual(reset.snapshot?.devices, []);
    const seen = (type: ServerEvent["type"]): Promise<ServerEvent> => eventually(type, () => events.find((event) => event.type === type));

    await device.announce();
    await seen("device_added");
    await device.availability(true);
    await seen("availability");
    await device.state({ temperature: 20.5 }, 1);
    await seen("state");
    await device.event("button_press", { button: 1 });
    await seen("device_event");
    await device.announce("Renamed");
    const updated = await seen("device_updated");
    assert.equal(updated.type === "device_updated" && updated.data.name, "Renamed");

    const acked = await subject.sendCommand(device.id, { target_temperature: 21 });
    assert.equal(acked.status, "acked");
    assert.deepEqual(acked.values, { target_temperature: 21 });
    device.answer = "error";
    await assert.rejects(subject.sendCommand(device.id, { target_temperature: 22 }), (error: unknown) => {
      assert.ok(error instanceof CommandError);
      assert.equal(error.code, "failed");
      assert.equal(error.reason, "out_of_range: the test device refuses it");
      return true;
    });
    device.answer = "silent";
    await assert.rejects(subject.sendCommand(device.id, { target_temperature: 23 }), (error: unknown) => {
      assert.ok(error instanceof CommandError);
      assert.equal(error.code, "timed_out");
      assert.equal(error.command?.status, "timed_out");
      return true;
    });
    await assert.rejects(subject.sendCommand(device.id, { target_temperature: 99 }), (error: unknown) => {
      assert.ok(error instanceof ApiError);
      assert.equal(error.code, "invalid_command");
      assert.equal(error.details?.["reason"], "out_of_range");
      return true;
    });
    await device.remove();
    await seen("device_removed");
    await device.close();

    const statuses = events.flatMap((event) => (event.type === "command" ? [event.data.status] : []));
    assert.deepEqual(statuses, ["pending", "acked", "pending", "failed", "pending", "timed_out"]);
    assert.deepEqual(new Set(events.map((event) => event.type)), new Set(["device_added", "availability", "state", "device_event", "device_updated", "command", "device_removed"]));
    assert.ok(increasing(events), "offsets only grow");
    assert.equal(subject.stats.duplicatesDropped, 0);
  });

  it("keeps a device store current and batched (snapshot, state, command outcome)", async () => {
    const subject = client();
    subject.connect();
    const store = new DeviceStore(subject, { filters: { homes: ["default"] } });
    let notifications = 0;
    store.subscribe(() => (notifications += 1));
    await eventually("the simulated devices", () => (store.devices.size >= 3 ? true : undefined));
    assert.deepEqual([...store.devices.keys()].filter((id) => id.startsWith("sim_")).sort(), ["sim_sensor_1", THERMOSTAT, "sim_thermostat_2"]);
    const command = await subject.sendCommand(THERMOSTAT, { target_temperature: 23.5 });
    const device = await eventually("the acked command in the store", () => {
      const current = store.devices.get(THERMOSTAT);
      return current?.last_command?.status === "acked" ? current : undefined;
    });
    assert.equal(device.last_command?.id, command.id);
    assert.equal(device.state.values["target_temperature"], 23.5);
    assert.ok(notifications >= 2);
    store.close();
  });

  it("honours idempotency keys on REST (same key, same command)", async () => {
    const subject = client();
    const first = await subject.rest.sendCommand(THERMOSTAT, { hvac_mode: "heat" }, { idempotencyKey: "sdk-test-key-1" });
    const again = await subject.rest.sendCommand(THERMOSTAT, { hvac_mode: "heat" }, { idempotencyKey: "sdk-test-key-1" });
    assert.equal(again.id, first.id);
  });

  it("an SSE stream whose token expires ends with token_expired and resumes with a fresh token", async () => {
    const device = await TestDevice.connect(stack.mqttUrl, "sse_expiry_device");
    await device.announce();
    await device.availability(true);
    const reasons: TokenRequest["reason"][] = [];
    const sse = new SseClient({
      url: stack.url,
      getToken: async (request) => {
        reasons.push(request.reason);
        return stack.token({ ttl: 3 });
      },
      backoff: { minMs: 50, baseMs: 200, maxMs: 1000 },
    });
    const states: string[] = [];
    sse.on("state", (state) => states.push(state.state === "closed" ? `closed:${state.reason}` : state.state));
    const seen: ServerEvent[] = [];
    const resets: Reset[] = [];
    sse.subscribe({ devices: [device.id], events: ["state"] }, { onEvent: (event) => seen.push(event), onReset: (reset) => resets.push(reset) });
    await eventually("the stream open", () => (states.includes("open") ? true : undefined));
    // Six seconds of states: the first token, and the one after it, expire on the way.
    const count = 30;
    for (let seq = 1; seq <= count; seq += 1) {
      await device.state({ temperature: 20 + seq / 10 }, seq);
      await sleep(200);
    }
    await eventually(`${count} states`, () => (seen.length >= count ? true : undefined));
    sse.close();
    assert.ok(states.includes("closed:token_expired"), `states: ${states.join(", ")}`);
    assert.ok(states.includes("resuming"), "reopened from its position");
    assert.equal(resets.length, 1, "only the first stream starts from a snapshot");
    assert.deepEqual(
      seen.map((event) => (event.type === "state" ? event.data.seq : null)),
      Array.from({ length: count }, (_, i) => i + 1),
      "each state once, in order, across the expiries",
    );
    assert.equal(sse.stats.duplicatesDropped, 0);
    assert.ok(reasons.length >= 2, `a fresh token for the next ticket: ${reasons.join(",")}`);
    await device.close();
  });

  it("streams the same events over SSE (ticket, resume with since) into a store", async () => {
    const sse = new SseClient({ url: stack.url, getToken: () => Promise.resolve(token), storageKey: "sse", storage: new MemoryStorage() });
    const store = new DeviceStore(sse, { filters: { homes: ["default"] } });
    await eventually("the SSE snapshot", () => (store.loaded && store.devices.has(THERMOSTAT) ? true : undefined));
    store.close();

    // The same stream twice in a row with the position kept: the second resumes (no reset).
    const ws = client();
    const wsEvents: ServerEvent[] = [];
    ws.subscribe({ events: ["state"] }, { onEvent: (event) => wsEvents.push(event) });
    ws.connect();
    await waitForState(ws, "open");
    const sseEvents: ServerEvent[] = [];
    const resets: Reset[] = [];
    const handlers = { onEvent: (event: ServerEvent) => sseEvents.push(event), onReset: (reset: Reset) => resets.push(reset) };
    const first = sse.subscribe({ events: ["state"] }, handlers, { key: "states" });
    await eventually("SSE events", () => (sseEvents.length >= 3 ? true : undefined));
    first.unsubscribe();
    const split = sseEvents.length;
    sse.subscribe({ events: ["state"] }, handlers, { key: "states" });
    await eventually("SSE events after the resume", () => (sseEvents.length >= split + 3 ? true : undefined));
    sse.close();
    assert.equal(resets.length, 1, "only the very first stream starts from a snapshot");
    assert.ok(increasing(sseEvents));
    // Across the two streams SSE saw exactly what the WebSocket saw over the same span.
    const from = sseEvents[0]?.offset ?? 0;
    const to = sseEvents.at(-1)?.offset ?? 0;
    await eventually("the WebSocket to catch up", () => ((wsEvents.at(-1)?.offset ?? 0) >= to ? true : undefined));
    const span = (events: ServerEvent[]): number[] => events.map((event) => event.offset).filter((offset) => offset >= from && offset <= to);
    assert.deepEqual(span(sseEvents), span(wsEvents));
  });
});
