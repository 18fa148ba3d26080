import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Backoff } from "../../src/index.js";

describe("Backoff", () => {
  it("stays within [min, min(max, base * 2^attempt)] for any random value", () => {
    for (const random of [0, 0.25, 0.5, 0.999999]) {
      const backoff = new Backoff({ minMs: 100, baseMs: 1000, maxMs: 30_000 }, () => random);
      for (let attempt = 0; attempt < 12; attempt++) {
        const ceiling = Math.min(30_000, 1000 * 2 ** attempt);
        const delay = backoff.next();
        assert.ok(delay >= 100 && delay <= ceiling, `attempt ${attempt}: ${delay} outside [100, ${ceiling}]`);
        assert.equal(delay, 100 + random * (ceiling - 100));
      }
    }
  });

  it("jitters over the whole range (full jitter) and caps the ceiling at max", () => {
    const lowest = new Backoff({ minMs: 50, baseMs: 200, maxMs: 1000 }, () => 0);
    const highest = new Backoff({ minMs: 50, baseMs: 200, maxMs: 1000 }, () => 1);
    const low = Array.from({ length: 6 }, () => lowest.next());
    const high = Array.from({ length: 6 }, () => highest.next());
    assert.deepEqual(low, [50, 50, 50, 50, 50, 50]);
    assert.deepEqual(high, [200, 400, 800, 1000, 1000, 1000]);
  });

  it("counts attempts and starts over after reset", () => {
    const backoff = new Backoff({ minMs: 0, baseMs: 100, maxMs: 10_000 }, () => 1);
    backoff.next();
    backoff.next();
    assert.equal(backoff.attempt, 2);
    backoff.reset();
    assert.equal(backoff.attempt, 0);
    assert.equal(backoff.next(), 100);
  });

  it("refuses bounds that contradict each other", () => {
    assert.throws(() => new Backoff({ minMs: 500, baseMs: 100 }), RangeError);
    assert.throws(() => new Backoff({ baseMs: 5000, maxMs: 1000 }), RangeError);
  });
});
