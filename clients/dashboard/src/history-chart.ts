import type { HistoryPoint, StoreDevice, ThermoBridgeClient } from "@thermo-bridge/client";
import { css, html, LitElement, type TemplateResult, unsafeCSS } from "lit";
import uPlot from "uplot";
import uplotCss from "uplot/dist/uPlot.min.css";

import { label, reading } from "./format.js";
import { cardStyles } from "./styles.js";

const DAY = 24 * 3600;
/** Buckets per visible range: the server aggregates to this many points whatever the zoom. */
export const TARGET_POINTS = 288;
const RANGES: readonly (readonly [string, number])[] = [
  ["24 h", DAY],
  ["6 h", 6 * 3600],
  ["1 h", 3600],
];

/** The bucket width (seconds) the server aggregates a range to. */
export function resolutionFor(seconds: number): number {
  return Math.max(1, Math.ceil(seconds / TARGET_POINTS));
}

/** Rows of one key per timestamp, aligned as uPlot wants them (null where a key has no bucket). */
export function align(points: readonly HistoryPoint[], keys: readonly string[]): uPlot.AlignedData {
  const times = [...new Set(points.map((point) => point.ts))].sort((a, b) => a - b);
  const index = new Map(times.map((ts, i) => [ts, i]));
  const series = keys.map(() => new Array<number | null>(times.length).fill(null));
  for (const point of points) {
    const row = series[keys.indexOf(point.key)];
    const at = index.get(point.ts);
    if (row && at !== undefined && typeof point.value === "number") row[at] = point.value;
  }
  return [times, ...series];
}

/**
 * The last 24 h of a device, aggregated by the server (`resolution`) to about 288 buckets;
 * drag to zoom (or the range buttons): the zoomed range is fetched again at a finer
 * resolution. `data-points` on the element is the number of buckets drawn.
 */
export class HistoryChart extends LitElement {
  static override properties = {
    device: { attribute: false },
    client: { attribute: false },
    keys: { attribute: false },
    status: { state: true },
    summary: { state: true },
  };

  declare device: StoreDevice;
  declare client: ThermoBridgeClient;
  declare keys: readonly string[];
  declare status: "loading" | "ready" | "error";
  declare summary: string;
  #chart: uPlot | undefined;
  #resize: ResizeObserver | undefined;
  #zoomTimer: ReturnType<typeof setTimeout> | undefined;
  #loaded: { start: number; end: number } | undefined;
  #request = 0;

  static override styles = [
    cardStyles,
    unsafeCSS(uplotCss),
    css`
      :host { display: block; min-height: 220px; }
      .bar { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
      .plot { width: 100%; min-height: 180px; }
      .uplot { font-family: var(--tb-font); color: var(--tb-text); }
      .u-legend { font-size: 0.8rem; color: var(--tb-text); }
      .u-select { background: color-mix(in srgb, var(--tb-primary) 20%, transparent); }
      .error { color: var(--tb-error); }
    `,
  ];

  constructor() {
    super();
    this.keys = [];
    this.status = "loading";
    this.summary = "";
  }

  override connectedCallback(): void {
    super.connectedCallback();
    const end = Date.now() / 1000;
    void this.#load(end - DAY, end);
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.#resize?.disconnect();
    this.#chart?.destroy();
    this.#chart = undefined;
    clearTimeout(this.#zoomTimer);
  }

  async #load(start: number, end: number): Promise<void> {
    const request = ++this.#request;
    this.status = "loading";
    const resolution = resolutionFor(end - start);
    try {
      const history = await this.client.rest.history(this.device.id, { start, end, keys: [...this.keys], resolution: `${resolution}s` });
      if (request !== this.#request) return;
      const data = align(history.points, this.keys);
      this.#loaded = { start, end };
      await this.updateComplete;
      this.#draw(data, start, end);
      this.dataset["points"] = String(data[0].length);
      this.dataset["resolution"] = String(resolution);
      this.status = "ready";
      this.summary = this.#describe(data);
    } catch (error) {
      if (request !== this.#request) return;
      this.status = "error";
      this.summary = `History unavailable: ${error instanceof Error ? error.message : String(error)}`;
    }
    this.dataset["status"] = this.status;
  }

  #describe(data: uPlot.AlignedData): string {
    const parts = this.keys.map((key, i) => {
      const values = (data[i + 1] ?? []).filter((value): value is number => typeof value === "number");
      if (values.length === 0) return `${label(key)}: no data`;
      const show = (value: number): string => reading(this.device.config, key.startsWith("target_") ? "temperature" : key, value);
      return `${label(key)} from ${show(Math.min(...values))} to ${show(Math.max(...values))}, last ${show(values[values.length - 1] ?? 0)}`;
    });
    return `${data[0].length} points. ${parts.join("; ")}.`;
  }

  #draw(data: uPlot.AlignedData, start: number, end: number): void {
    const plot = this.renderRoot.querySelector<HTMLElement>(".plot");
    if (!plot) return;
    if (this.#chart) {
      this.#chart.setData(data, false);
      this.#chart.setScale("x", { min: start, max: end });
      return;
    }
    const style = getComputedStyle(this);
    const color = (name: string): string => style.getPropertyValue(name).trim() || "#888";
    const units = this.keys.map((key) => (key.startsWith("target_") ? "temperature" : key));
    const scales = [...new Set(units)];
    this.#chart = new uPlot(
      {
        width: Math.max(240, plot.clientWidth),
        height: 180,
        scales: { x: { time: true, min: start, max: end } },
        series: [
          {},
          ...this.keys.map((key, i) => ({
            label: label(key),
            scale: units[i] ?? key,
            stroke: color(`--tb-series-${(i % 3) + 1}`),
            width: 2,
            spanGaps: false,
            ...(key.startsWith("target_") ? { dash: [6, 4] } : {}),
          })),
        ],
        axes: [
          { stroke: color("--tb-muted"), grid: { stroke: color("--tb-border") } },
          // uPlot declares Side as a const enum (3 left, 1 right), which a bundler cannot import.
          // eslint-disable-next-line @typescript-eslint/no-unsafe-enum-assignment
          ...scales.slice(0, 2).map((scale, i) => ({
            scale,
            side: i === 0 ? 3 : 1,
            stroke: color("--tb-muted"),
            grid: { show: i === 0, stroke: color("--tb-border") },
          })),
        ],
        cursor: { drag: { x: true, y: false } },
        hooks: { setSelect: [(chart: uPlot) => this.#zoomed(chart)] },
      },
      data,
      plot,
    );
    this.#resize = new ResizeObserver(() => this.#chart?.setSize({ width: Math.max(240, plot.clientWidth), height: 180 }));
    this.#resize.observe(plot);
  }

  #zoomed(chart: uPlot): void {
    const { left, width } = chart.select;
    if (width < 2) return;
    const min = chart.posToVal(left, "x");
    const max = chart.posToVal(left + width, "x");
    chart.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    clearTimeout(this.#zoomTimer);
    this.#zoomTimer = setTimeout(() => void this.#load(min, max), 100);
  }

  #range(seconds: number): void {
    const end = Date.now() / 1000;
    void this.#load(end - seconds, end);
  }

  protected override render(): TemplateResult {
    const loaded = this.#loaded;
    return html`
      <div class="bar" role="group" aria-label="History range">
        ${RANGES.map(([name, seconds]) => html`<button @click=${() => this.#range(seconds)}
          aria-pressed=${loaded && Math.abs(loaded.end - loaded.start - seconds) < 1 ? "true" : "false"}>${name}</button>`)}
        <span class="muted">Drag across the chart to zoom</span>
      </div>
      <div class="plot" role="img" aria-label="History of ${this.device.name}: ${this.summary}"></div>
      <p class="muted ${this.status === "error" ? "error" : ""}" aria-live="polite">${this.status === "loading" ? "Loading history…" : this.summary}</p>
    `;
  }
}

customElements.define("tb-history-chart", HistoryChart);
