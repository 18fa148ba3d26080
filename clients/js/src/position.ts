import type { StoredValue } from "./storage.js";
import type { Position } from "./types.js";

/**
 * Where one subscription stands in the event log. Every event it passes on has a larger
 * offset than the one before, in the same epoch: a repeat or an older offset is refused (the
 * server promises neither happens; this keeps a bug or a replay overlap from reaching the app).
 */
export class PositionTracker {
  #position: Position | undefined;

  constructor(private readonly stored?: StoredValue<Position>) {
    const saved = stored?.read();
    if (saved && typeof saved.epoch === "string" && Number.isSafeInteger(saved.offset)) this.#position = saved;
  }

  get position(): Position | undefined {
    return this.#position;
  }

  /** Whether an event is new; if so, the position moves to it. */
  accept(event: Position): boolean {
    const current = this.#position;
    if (current && (event.epoch !== current.epoch || event.offset <= current.offset)) return false;
    this.#set(event);
    return true;
  }

  /** Start over at a snapshot's position (the log was not resumable). */
  reset(position: Position): void {
    this.#set(position);
  }

  /** Move forward to a position the server vouches for (the close reason of 1001 and 4008). */
  advance(position: Position): void {
    const current = this.#position;
    if (current && current.epoch === position.epoch && position.offset > current.offset) this.#set(position);
  }

  #set(position: Position): void {
    this.#position = { epoch: position.epoch, offset: position.offset };
    this.stored?.write(this.#position);
  }
}
