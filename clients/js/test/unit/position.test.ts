import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { MemoryStorage } from "../../src/index.js";
import { PositionTracker } from "../../src/position.js";
import { StoredValue } from "../../src/storage.js";
import type { Position } from "../../src/types.js";

const E = "a".repeat(32);

describe("PositionTracker", () => {
  it("passes increasing offsets and refuses repeats, older offsets and another epoch", () => {
    const tracker = new PositionTracker();
    assert.equal(tracker.accept({ epoch: E, offset: 5 }), true);
    assert.equal(tracker.accept({ epoch: E, offset: 9 }), true);
    assert.equal(tracker.accept({ epoch: E, offset: 9 }), false);
    assert.equal(tracker.accept({ epoch: E, offset: 7 }), false);
    assert.equal(tracker.accept({ epoch: "b".repeat(32), offset: 10 }), false);
    assert.deepEqual(tracker.position, { epoch: E, offset: 9 });
  });

  it("advances only forward within its epoch; reset moves anywhere", () => {
    const tracker = new PositionTracker();
    tracker.reset({ epoch: E, offset: 10 });
    tracker.advance({ epoch: E, offset: 8 });
    tracker.advance({ epoch: "b".repeat(32), offset: 50 });
    assert.deepEqual(tracker.position, { epoch: E, offset: 10 });
    tracker.advance({ epoch: E, offset: 12 });
    assert.deepEqual(tracker.position, { epoch: E, offset: 12 });
    tracker.reset({ epoch: "c".repeat(32), offset: 3 });
    assert.deepEqual(tracker.position, { epoch: "c".repeat(32), offset: 3 });
  });

  it("persists every move and starts from the stored position", () => {
    const storage = new MemoryStorage();
    const stored = new StoredValue<Position>(storage, "app:position:all");
    new PositionTracker(stored).accept({ epoch: E, offset: 42 });
    assert.deepEqual(new PositionTracker(stored).position, { epoch: E, offset: 42 });
    storage.setItem("app:position:all", "{not json");
    assert.equal(new PositionTracker(stored).position, undefined);
  });
});
