/** A minimal typed event emitter: `on` returns the function that removes the listener. */
export class Emitter<Events extends object> {
  readonly #listeners = new Map<keyof Events, Set<(value: never) => void>>();

  on<K extends keyof Events>(type: K, listener: (value: Events[K]) => void): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  emit<K extends keyof Events>(type: K, value: Events[K]): void {
    for (const listener of this.#listeners.get(type) ?? []) {
      try {
        (listener as (value: Events[K]) => void)(value);
      } catch (error) {
        // A failing listener must not break the connection logic that emitted; rethrown
        // outside it so the app still sees it (console, window.onerror).
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
