import type { StoreDevice, WebSocketConstructor } from "@thermo-bridge/client";

/**
 * Bench mode (`?bench` in the page's URL; bench/dashboard.py): performance marks for the
 * budgets. Each state frame's arrival is noted per device and seq; when a card has rendered
 * that seq, the frame-to-DOM time is recorded, and the frame-to-paint time at the start of the
 * frame after the one that painted it. Off by default: nothing is recorded and the socket is
 * the browser's own.
 */
interface BenchRecord {
  /** ms from the frame's arrival until the card rendered it, and until the next paint. */
  readonly latencies: { dom: number; paint: number }[];
  allRendered: number | null;
  /** Durations of the main thread's long tasks (over 50 ms), which is where the tail comes from. */
  readonly longTasks: number[];
}

const enabled = new URLSearchParams(location.search).has("bench");
const arrivals = new Map<string, number>();
export const bench: BenchRecord | undefined = enabled ? { latencies: [], allRendered: null, longTasks: [] } : undefined;
if (bench) {
  (window as unknown as { __tbBench: BenchRecord }).__tbBench = bench;
  new PerformanceObserver((list) => {
    for (const task of list.getEntries()) bench.longTasks.push(task.duration);
  }).observe({ type: "longtask" });
}

/** The WebSocket the client uses: in bench mode one that notes when each state frame arrived. */
export function benchWebSocket(): WebSocketConstructor | undefined {
  if (!bench) return undefined;
  class Timed extends WebSocket {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols);
      this.addEventListener("message", (message: MessageEvent<unknown>) => {
        const at = performance.now();
        if (typeof message.data !== "string" || !message.data.includes('"state"')) return;
        const frame = JSON.parse(message.data) as { type?: string; event?: { type?: string; device_id?: string; data?: { seq?: number | null } } };
        const event = frame.event;
        if (frame.type === "event" && event?.type === "state" && event.device_id) arrivals.set(`${event.device_id}:${String(event.data?.seq)}`, at);
      });
    }
  }
  return Timed;
}

/** A card finished rendering ``device``: record the latency of the frame that brought its state. */
export function benchRendered(device: StoreDevice): void {
  if (!bench) return;
  const key = `${device.id}:${String(device.state.seq)}`;
  const arrived = arrivals.get(key);
  if (arrived === undefined) return;
  arrivals.delete(key);
  const dom = performance.now() - arrived;
  // Cards render inside the store's animation-frame callback, so a callback asked for now runs
  // at the start of the next frame: after this one has been painted. (A timer queued from
  // there waited behind every message task and measured the queue, not the paint.)
  requestAnimationFrame(() => bench.latencies.push({ dom, paint: performance.now() - arrived }));
}

/** Every card of the first snapshot is in the DOM. */
export function benchAllRendered(): void {
  if (!bench || bench.allRendered !== null) return;
  performance.mark("tb:all-cards-rendered");
  bench.allRendered = performance.now();
}
