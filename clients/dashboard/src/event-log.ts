import type { ServerEvent, StoreDevice } from "@thermo-bridge/client";
import { css, html, LitElement, type TemplateResult } from "lit";
import { repeat } from "lit/directives/repeat.js";

import { label, time } from "./format.js";
import { cardStyles } from "./styles.js";

export const LOG_SIZE = 200;

/**
 * How often the log takes its new lines. It is for reading, not for watching every frame: at
 * 200 events/s, re-rendering it on every animation frame took the device cards' frame budget
 * (bench/dashboard.py: an update's p99 to paint 129 ms; 46 ms at four times a second).
 */
export const LOG_INTERVAL_MS = 250;

export interface LogEntry {
  readonly offset: number;
  readonly ts: number;
  readonly device: string;
  readonly kind: string;
  readonly text: string;
  readonly tone: "" | "ok" | "error" | "pending";
}

/** One line of the log for an event of the stream. */
export function entry(event: ServerEvent, device: StoreDevice | undefined): LogEntry {
  const base = { offset: event.offset, ts: event.ts, device: device?.name ?? event.device_id };
  switch (event.type) {
    case "state":
      return { ...base, kind: "state", tone: "", text: Object.entries(event.data.values).map(([k, v]) => `${label(k)} ${String(v)}`).join(", ") };
    case "command": {
      const values = Object.entries(event.data.values).map(([k, v]) => `${label(k)} ${String(v)}`).join(", ");
      const tone = event.data.status === "acked" ? "ok" : event.data.status === "pending" ? "pending" : "error";
      const reason = event.data.reason ? ` (${event.data.reason})` : "";
      return { ...base, kind: "command", tone, text: `${values}: ${event.data.status.replace("_", " ")}${reason}` };
    }
    case "availability":
      return { ...base, kind: "availability", tone: event.data.online ? "ok" : "error", text: event.data.online ? "online" : "offline" };
    case "device_event":
      return { ...base, kind: "event", tone: "", text: label(event.data.event) };
    case "device_added":
      return { ...base, kind: "device", tone: "", text: "added" };
    case "device_updated":
      return { ...base, kind: "device", tone: "", text: "updated" };
    case "device_removed":
      return { ...base, kind: "device", tone: "error", text: "removed" };
  }
}

/** The live event and command log, newest first. */
export class EventLog extends LitElement {
  static override properties = { entries: { attribute: false }, filter: { state: true } };
  declare entries: readonly LogEntry[];
  declare filter: "all" | "command";

  static override styles = [
    cardStyles,
    css`
      :host { display: block; }
      .card { align-content: start; }
      ol { list-style: none; margin: 0; padding: 0; font-size: 0.85rem; }
      [role="log"] { max-height: 70vh; overflow-y: auto; }
      li { content-visibility: auto; contain-intrinsic-size: auto 44px; display: grid; grid-template-columns: auto 1fr; gap: 0 8px; padding: 4px 0; border-bottom: 1px solid var(--tb-border); }
      time, .kind { color: var(--tb-muted); font-variant-numeric: tabular-nums; }
      .ok { color: var(--tb-ok); } .error { color: var(--tb-error); } .pending { color: var(--tb-pending); }
      .text { grid-column: 1 / -1; overflow-wrap: anywhere; }
      fieldset { border: 0; padding: 0; margin: 0; display: flex; gap: 6px; }
    `,
  ];

  constructor() {
    super();
    this.entries = [];
    this.filter = "all";
  }

  protected override render(): TemplateResult {
    const shown = this.filter === "all" ? this.entries : this.entries.filter((item) => item.kind === "command");
    return html`
      <section class="card" aria-labelledby="log-title">
        <header>
          <h2 id="log-title">Live log</h2>
          <fieldset>
            <legend class="visually-hidden">Show</legend>
            <button aria-pressed=${this.filter === "all" ? "true" : "false"} @click=${() => (this.filter = "all")}>All</button>
            <button aria-pressed=${this.filter === "command" ? "true" : "false"} @click=${() => (this.filter = "command")}>Commands</button>
          </fieldset>
        </header>
        <div role="log" aria-label="Events and commands, newest first"><ol>
          ${repeat(
            shown,
            (item) => item.offset,
            (item) => html`<li data-offset=${item.offset}>
              <time datetime=${new Date(item.ts * 1000).toISOString()}>${time(item.ts)}</time>
              <span><strong>${item.device}</strong> <span class="kind">${item.kind}</span></span>
              <span class="text ${item.tone}">${item.text}</span>
            </li>`,
          )}
        </ol></div>
      </section>
    `;
  }
}

customElements.define("tb-event-log", EventLog);
