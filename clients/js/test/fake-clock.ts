import type { Clock } from "../src/index.js";

/** A clock whose time only moves when a test says so; timers fire in time order. */
export class FakeClock implements Clock {
  time = 0;
  readonly #timers = new Map<number, { at: number; callback: () => void }>();
  #nextHandle = 1;

  now(): number {
    return this.time;
  }

  setTimeout(callback: () => void, ms: number): unknown {
    const handle = this.#nextHandle++;
    this.#timers.set(handle, { at: this.time + ms, callback });
    return handle;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** Moves time forward, firing every timer due on the way (also ones set while firing). */
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      const due = [...this.#timers].filter(([, timer]) => timer.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.time = due[1].at;
      due[1].callback();
    }
    this.time = end;
  }

  /** When the next timer fires, relative to now; undefined when none is set. */
  nextIn(): number | undefined {
    const next = Math.min(...[...this.#timers.values()].map((timer) => timer.at));
    return Number.isFinite(next) ? next - this.time : undefined;
  }
}
