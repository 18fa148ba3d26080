/**
 * Reconnect delays: exponential with full jitter (uniform between the floor and the
 * exponential ceiling), so thousands of clients dropped by one server restart come back spread
 * out instead of in waves. The attempt count only resets after a connection proved stable.
 */
export interface BackoffOptions {
  /** No delay is shorter than this (ms). */
  readonly minMs?: number;
  /** The ceiling of the first attempt; it doubles with every attempt (ms). */
  readonly baseMs?: number;
  /** The ceiling never exceeds this (ms). */
  readonly maxMs?: number;
}

export class Backoff {
  readonly minMs: number;
  readonly baseMs: number;
  readonly maxMs: number;
  #attempt = 0;
  readonly #random: () => number;

  constructor(options: BackoffOptions = {}, random: () => number = Math.random) {
    this.minMs = options.minMs ?? 100;
    this.baseMs = options.baseMs ?? 1_000;
    this.maxMs = options.maxMs ?? 30_000;
    if (!(this.minMs >= 0 && this.minMs <= this.baseMs && this.baseMs <= this.maxMs)) {
      throw new RangeError("backoff: need 0 <= minMs <= baseMs <= maxMs");
    }
    this.#random = random;
  }

  /** Failed attempts since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The delay before the next attempt; counts an attempt. */
  next(): number {
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** this.#attempt);
    this.#attempt += 1;
    return this.minMs + this.#random() * (ceiling - this.minMs);
  }

  reset(): void {
    this.#attempt = 0;
  }
}
