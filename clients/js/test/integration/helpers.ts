import { setTimeout as sleep } from "node:timers/promises";

import type { ConnectionState, ServerEvent, ThermoBridgeClient } from "../../src/index.js";

/** Polls until the probe returns something other than undefined (a failing probe counts as not yet). */
export async function eventually<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await Promise.resolve()
      .then(probe)
      .catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Every state a client goes through, from now on. */
export function recordStates(client: ThermoBridgeClient): ConnectionState[] {
  const states: ConnectionState[] = [];
  client.on("state", (state) => states.push(state));
  return states;
}

export function waitForState<S extends ConnectionState["state"]>(
  client: ThermoBridgeClient,
  state: S,
  timeoutMs = 15_000,
): Promise<Extract<ConnectionState, { state: S }>> {
  if (client.state.state === state) return Promise.resolve(client.state as Extract<ConnectionState, { state: S }>);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`the client did not reach "${state}" within ${timeoutMs} ms (it is ${JSON.stringify(client.state)})`));
    }, timeoutMs);
    const off = client.on("state", (current) => {
      if (current.state !== state) return;
      clearTimeout(timer);
      off();
      resolve(current as Extract<ConnectionState, { state: S }>);
    });
  });
}

/** Offsets must only grow within a stream. */
export function increasing(events: readonly ServerEvent[]): boolean {
  return events.every((event, i) => i === 0 || event.offset > (events[i - 1]?.offset ?? -1));
}
