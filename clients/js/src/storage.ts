/** The part of the Web Storage API the SDK uses: `localStorage`, or a Map-backed one in Node. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** In-memory storage (tests, Node services that persist elsewhere). */
export class MemoryStorage implements StorageLike {
  readonly #items = new Map<string, string>();

  getItem(key: string): string | null {
    return this.#items.get(key) ?? null;
  }

  setItem(key: string, value: string): void {
    this.#items.set(key, value);
  }

  removeItem(key: string): void {
    this.#items.delete(key);
  }
}

/** The browser's localStorage, if there is one and it may be used. */
export function browserStorage(): StorageLike | undefined {
  try {
    // Reading the property throws in sandboxed frames and with storage disabled.
    return (globalThis as { localStorage?: StorageLike }).localStorage;
  } catch {
    return undefined;
  }
}

/** One JSON value under one key; a value that does not parse counts as absent. */
export class StoredValue<T> {
  constructor(
    private readonly storage: StorageLike,
    private readonly key: string,
  ) {}

  read(): T | undefined {
    const text = this.storage.getItem(this.key);
    if (text === null) return undefined;
    try {
      return JSON.parse(text) as T;
    } catch {
      return undefined;
    }
  }

  write(value: T | undefined): void {
    // Quota errors must not break the connection: the value then lives in memory only.
    try {
      if (value === undefined) this.storage.removeItem(this.key);
      else this.storage.setItem(this.key, JSON.stringify(value));
    } catch {
      /* memory only */
    }
  }
}
