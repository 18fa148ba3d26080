/** One dispatched Server-Sent Event. */
export interface SseMessage {
  readonly event: string;
  readonly data: string;
}

/**
 * An incremental text/event-stream parser (the WHATWG rules the SDK needs: fields `event` and
 * `data`, comments, any line ending, chunks split anywhere). Fed decoded text, it returns the
 * events each chunk completes. `id` is not kept: every event's data carries its own position.
 */
export class SseParser {
  #buffer = "";
  #event = "";
  #data: string[] = [];

  feed(text: string): SseMessage[] {
    const messages: SseMessage[] = [];
    this.#buffer += text;
    const endings = /\r\n|\r|\n/g;
    let start = 0;
    for (let match = endings.exec(this.#buffer); match; match = endings.exec(this.#buffer)) {
      // A final "\r" may be the first half of a "\r\n" split between two chunks.
      if (match[0] === "\r" && endings.lastIndex === this.#buffer.length) break;
      this.#line(this.#buffer.slice(start, match.index), messages);
      start = endings.lastIndex;
    }
    this.#buffer = this.#buffer.slice(start);
    return messages;
  }

  #line(line: string, messages: SseMessage[]): void {
    if (line === "") {
      if (this.#data.length > 0) messages.push({ event: this.#event || "message", data: this.#data.join("\n") });
      this.#event = "";
      this.#data = [];
      return;
    }
    if (line.startsWith(":")) return; // a comment: the server's keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const raw = colon < 0 ? "" : line.slice(colon + 1);
    const value = raw.startsWith(" ") ? raw.slice(1) : raw;
    if (field === "event") this.#event = value;
    else if (field === "data") this.#data.push(value);
  }
}
