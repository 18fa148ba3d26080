// The client's reconnect schedule, driven by an injected clock and jitter source: a socket
// stand-in plays the server's side of the auth phase (or refuses to connect at all).
import assert from "node:assert/strict";
import { setImmediate } from "node:timers/promises";
import { describe, it } from "node:test";

import { type ConnectionState, ThermoBridgeClient, type WebSocketLike } from "../../src/index.js";
import { FakeClock } from "../fake-clock.js";

type Listener = (event: never) => void;

class StandInSocket implements WebSocketLike {
  static opened: StandInSocket[] = [];
  static reachable = false;
  readonly sent: Record<string, unknown>[] = [];
  readonly #listeners = new Map<string, Listener[]>();

  constructor(readonly url: string) {
    StandInSocket.opened.push(this);
    queueMicrotask(() => {
      if (StandInSocket.reachable) this.receive({ type: "auth_required", version: "0.2.0" });
      else this.emit("close", { code: 1006, reason: "" });
    });
  }

  addEventListener(type: string, listener: Listener): void {
    this.#listeners.set(type, [...(this.#listeners.get(type) ?? []), listener]);
  }

  send(data: string): void {
    const message = JSON.parse(data) as Record<string, unknown>;
    this.sent.push(message);
    if (message["type"] === "auth") {
      this.receive({ type: "auth_ok", version: "0.2.0", sub: "u", permissions: [], expires_at: null, epoch: "e".repeat(32), offset: 0 });
    }
  }

  close(code?: number, reason?: string): void {
    this.emit("close", { code: code ?? 1005, reason: reason ?? "" });
  }

  receive(message: object): void {
    this.emit("message", { data: JSON.stringify(message) });
  }

  emit(type: string, event: object): void {
    for (const listener of this.#listeners.get(type) ?? []) (listener as (event: object) => void)(event);
  }
}

function client(clock: FakeClock, random: () => number, states: ConnectionState[]): ThermoBridgeClient {
  StandInSocket.opened = [];
  const created = new ThermoBridgeClient({
    url: "http://127.0.0.1:1",
    getToken: () => Promise.resolve("token"),
    WebSocket: StandInSocket,
    clock,
    random,
    backoff: { minMs: 100, baseMs: 1000, maxMs: 10_000 },
    stableMs: 5000,
    heartbeatMs: 2000,
    pongTimeoutMs: 1000,
  });
  created.on("state", (state) => states.push(state));
  return created;
}

const retries = (states: ConnectionState[]): number[] =>
  states.flatMap((state) => (state.state === "closed" && state.retryInMs !== undefined ? [state.retryInMs] : []));

/** Lets the token promise and the stand-in's microtasks run, then moves the clock. */
async function advance(clock: FakeClock, ms: number): Promise<void> {
  await setImmediate();
  clock.advance(ms);
  await setImmediate();
}

describe("reconnect backoff", () => {
  for (const [name, random, expected] of [
    ["highest jitter: the doubling ceiling, capped at max", () => 0.999999, [1000, 2000, 4000, 8000, 10_000, 10_000]],
    ["lowest jitter: the floor", () => 0, [100, 100, 100, 100, 100, 100]],
  ] as const) {
    it(`waits between attempts within the bounds (${name})`, async () => {
      StandInSocket.reachable = false;
      const clock = new FakeClock();
      const states: ConnectionState[] = [];
      const subject = client(clock, random, states);
      const attempts: number[] = [];
      subject.on("state", (state) => {
        if (state.state === "connecting") attempts.push(clock.time);
      });
      subject.connect();
      while (attempts.length < 7) await advance(clock, clock.nextIn() ?? 0);
      subject.close();
      assert.deepEqual(retries(states).slice(0, 6).map(Math.round), expected);
      // Each attempt started exactly when the delay its closed state announced ran out.
      const gaps = attempts.slice(1).map((time, i) => time - (attempts[i] ?? 0));
      assert.deepEqual(gaps.map(Math.round), expected);
      for (const state of states) if (state.state === "closed" && state.willRetry) assert.equal(state.code, 1006);
    });
  }

  it("resets after a connection stayed up for stableMs, not before", async () => {
    StandInSocket.reachable = true;
    const clock = new FakeClock();
    const states: ConnectionState[] = [];
    const subject = client(clock, () => 0.999999, states);
    subject.connect();
    await advance(clock, 100);
    assert.equal(subject.state.state, "open");
    // Dropped before it was stable: the next delays keep growing.
    StandInSocket.opened.at(-1)?.emit("close", { code: 1001, reason: "" });
    await advance(clock, 1000);
    StandInSocket.opened.at(-1)?.emit("close", { code: 1001, reason: "" });
    await advance(clock, 2000);
    assert.equal(subject.state.state, "open");
    // Up for longer than stableMs (pings answered): the next drop starts from the first ceiling again.
    for (let i = 0; i < 3; i++) {
      await advance(clock, 2000);
      const socket = StandInSocket.opened.at(-1);
      const ping = socket?.sent.at(-1);
      assert.ok(socket && ping?.["type"] === "ping");
      socket.receive({ type: "pong", id: ping["id"] });
    }
    StandInSocket.opened.at(-1)?.emit("close", { code: 1001, reason: "" });
    await setImmediate();
    subject.close();
    assert.deepEqual(retries(states).map(Math.round), [1000, 2000, 1000]);
  });

  it("gives up a socket whose pong does not come and reconnects", async () => {
    StandInSocket.reachable = true;
    const clock = new FakeClock();
    const states: ConnectionState[] = [];
    const subject = client(clock, () => 0, states);
    subject.connect();
    await advance(clock, 2000); // the first ping goes out
    await advance(clock, 1000); // and its pong is overdue
    const closed = states.find((state) => state.state === "closed");
    assert.deepEqual(closed, { state: "closed", code: null, reason: "heartbeat_timeout", willRetry: true, retryInMs: 100 });
    await advance(clock, 100);
    assert.equal(StandInSocket.opened.length, 2);
    assert.equal(subject.state.state, "open");
    subject.close();
  });
});
