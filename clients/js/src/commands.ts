import type { Connection } from "./connection.js";
import { CommandError, wireError } from "./errors.js";
import { randomKey } from "./random.js";
import type { StoredValue } from "./storage.js";
import type { Command, CommandValues } from "./types.js";

/** What survives a page reload: commands the server has not confirmed receiving. */
export type PersistedCommand = { readonly key: string; readonly device_id: string; readonly values: CommandValues };

/**
 * send_commands awaiting their result at once. The server runs at most 32 commands of a
 * connection at a time and closes one that sends more than 50 messages a second beyond a
 * burst of 100: a full queue flushed after a reconnect must trickle out, not flood.
 */
const WINDOW = 16;
// Order needs nothing here: the server publishes a connection's commands to one device in the
// order of their messages, so setpoints queued offline reach the device in the order given.

interface Entry {
  readonly key: string;
  readonly deviceId: string;
  readonly values: CommandValues;
  /** The server has it (a result came back): from now on it is the server's to deliver once. */
  accepted: boolean;
  /** The connection it was last sent on. */
  sentOn?: Connection | undefined;
  /** Absent for commands restored from storage: their outcome is only reported as an event. */
  readonly settle?: { resolve(command: Command): void; reject(error: Error): void };
}

/**
 * Commands from `sendCommand` until their final status. Every command carries an idempotency
 * key, so sending it again after a reconnect (queued while offline, or sent but its outcome
 * not yet seen) returns the server's existing command instead of publishing it twice: each
 * goes out exactly once, and its later events come back on the new connection.
 */
export class CommandQueue {
  readonly #entries = new Map<string, Entry>();
  readonly #max: number;
  readonly #stored: StoredValue<PersistedCommand[]> | undefined;
  readonly #onUpdate: (command: Command) => void;
  #connection: Connection | undefined;
  #inFlight = 0;

  constructor(max: number, stored: StoredValue<PersistedCommand[]> | undefined, onUpdate: (command: Command) => void) {
    this.#max = max;
    this.#stored = stored;
    this.#onUpdate = onUpdate;
    const saved = stored?.read();
    for (const item of Array.isArray(saved) ? saved : []) {
      this.#entries.set(item.key, { key: item.key, deviceId: item.device_id, values: item.values, accepted: false });
    }
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Queues a command; it goes out as soon as a connection is ready and the window allows. */
  add(deviceId: string, values: CommandValues): Promise<Command> {
    if (this.#entries.size >= this.#max) {
      return Promise.reject(new CommandError("queue_full", `${this.#max} commands are already waiting`));
    }
    return new Promise((resolve, reject) => {
      const entry: Entry = { key: randomKey(), deviceId, values, accepted: false, settle: { resolve, reject } };
      this.#entries.set(entry.key, entry);
      this.#persist();
      this.#pump();
    });
  }

  /** A connection is ready: (re)send everything not settled yet, oldest first. */
  attach(connection: Connection): void {
    this.#connection = connection;
    this.#inFlight = 0;
    this.#pump();
  }

  /** The connection is gone: what it did not settle waits for the next one. */
  detach(): void {
    this.#connection = undefined;
  }

  /** The client closed: every promise is rejected and nothing is kept (another user may sign in). */
  clear(): void {
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    this.#persist();
    for (const entry of entries) entry.settle?.reject(new CommandError("closed", "the client was closed"));
  }

  /** Sends, oldest first, what this connection has not sent yet, while fewer than WINDOW results are outstanding. */
  #pump(): void {
    const connection = this.#connection;
    if (!connection) return;
    for (const entry of this.#entries.values()) {
      if (this.#inFlight >= WINDOW) return;
      if (entry.sentOn === connection) continue;
      entry.sentOn = connection;
      this.#inFlight += 1;
      this.#transmit(connection, entry);
    }
  }

  #transmit(connection: Connection, entry: Entry): void {
    const id = connection.send(
      { type: "send_command", device_id: entry.deviceId, values: entry.values, idempotency_key: entry.key },
      (result) => {
        this.#inFlight -= 1;
        if (!result.success) {
          this.#drop(entry);
          entry.settle?.reject(wireError(result.error));
        } else {
          if (!entry.accepted) {
            entry.accepted = true;
            this.#persist();
          }
          if (this.#update(entry, result.result as Command)) connection.unroute(id);
        }
        this.#pump();
      },
      (event) => {
        if (event.type === "command" && this.#update(entry, event.data)) connection.unroute(id);
      },
    );
  }

  /** Reports a status; settles and forgets the command on a final one (returns true then). */
  #update(entry: Entry, command: Command): boolean {
    if (!this.#entries.has(entry.key)) return true; // settled already (a repeat of the final event)
    this.#onUpdate(command);
    if (command.status === "pending") return false;
    this.#drop(entry);
    if (command.status === "acked") entry.settle?.resolve(command);
    else if (command.status === "failed") {
      entry.settle?.reject(new CommandError("failed", `the device refused the command: ${command.reason ?? "no reason"}`, command));
    } else entry.settle?.reject(new CommandError("timed_out", "the device did not answer in time", command));
    return true;
  }

  #drop(entry: Entry): void {
    this.#entries.delete(entry.key);
    this.#persist();
  }

  #persist(): void {
    if (!this.#stored) return;
    const waiting = [...this.#entries.values()].filter((entry) => !entry.accepted);
    this.#stored.write(waiting.map((entry) => ({ key: entry.key, device_id: entry.deviceId, values: entry.values })));
  }
}
