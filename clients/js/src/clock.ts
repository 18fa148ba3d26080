/** Time and timers, injectable so tests can drive them. */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
};

/** One timer slot: arming it again replaces the previous timer. */
export class Timer {
  #handle: unknown;
  #armed = false;

  constructor(private readonly clock: Clock) {}

  start(ms: number, callback: () => void): void {
    this.stop();
    this.#armed = true;
    this.#handle = this.clock.setTimeout(() => {
      this.#armed = false;
      callback();
    }, ms);
  }

  stop(): void {
    if (this.#armed) this.clock.clearTimeout(this.#handle);
    this.#armed = false;
  }

  get armed(): boolean {
    return this.#armed;
  }
}
