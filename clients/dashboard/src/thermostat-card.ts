import { ApiError, CommandError, type CommandValues, type StoreDevice, type ThermoBridgeClient } from "@thermo-bridge/client";
import { css, html, LitElement, nothing, type PropertyValues, type TemplateResult } from "lit";
import { live } from "lit/directives/live.js";

import { benchRendered } from "./bench.js";
import { label, reading } from "./format.js";
import "./history-chart.js";
import { cardStyles, deviceCardHost } from "./styles.js";

type SetpointKey = "target_temperature" | "target_temperature_low" | "target_temperature_high";
type SelectKey = "hvac_mode" | "preset" | "fan_mode" | "swing_mode";

/** How long +/- presses are gathered into one command: one command per pause, not per press. */
export const SETPOINT_DEBOUNCE_MS = 600;

interface Outcome {
  readonly kind: "ok" | "error";
  readonly text: string;
}

/**
 * A thermostat: readings, the setpoint (or range) with +/-, mode, preset and fan as the
 * device declares them; a command shows as pending until the device acks, and the device's
 * reason when it refuses or does not answer.
 */
export class ThermostatCard extends LitElement {
  static override properties = {
    device: { attribute: false },
    client: { attribute: false },
    draft: { state: true },
    inFlight: { state: true },
    outcome: { state: true },
    showHistory: { state: true },
  };

  declare device: StoreDevice;
  declare client: ThermoBridgeClient;
  /** Setpoints pressed but not sent yet (the debounce window). */
  declare draft: Partial<Record<SetpointKey, number>>;
  /** Values sent and not settled yet, newest command's last. */
  declare inFlight: readonly CommandValues[];
  declare outcome: Outcome | null;
  declare showHistory: boolean;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor() {
    super();
    this.draft = {};
    this.inFlight = [];
    this.outcome = null;
    this.showHistory = false;
  }

  static override styles = [
    cardStyles,
    deviceCardHost,
    css`
      .now { display: flex; align-items: baseline; gap: 14px; }
      .now .temperature { font-size: 2rem; font-weight: 600; font-variant-numeric: tabular-nums; }
      .setpoints { display: grid; gap: 8px; }
      .setpoint { display: grid; grid-template-columns: 1fr auto auto auto; align-items: center; gap: 6px; }
      .setpoint output { min-width: 4.5em; text-align: center; font-size: 1.25rem; font-variant-numeric: tabular-nums; }
      .setpoint output.pending { color: var(--tb-pending); font-style: italic; }
      .controls { display: grid; grid-template-columns: repeat(auto-fill, minmax(120px, 1fr)); gap: 8px; }
      .controls label { display: grid; gap: 2px; font-size: 0.8rem; color: var(--tb-muted); }
      .status { min-height: 1.4em; font-size: 0.85rem; }
      .status.pending { color: var(--tb-pending); }
      .status.error { color: var(--tb-error); }
      .status.ok { color: var(--tb-ok); }
      .actions { display: flex; justify-content: flex-end; }
    `,
  ];

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    clearTimeout(this.#timer);
  }

  #requested(key: string): number | string | undefined {
    if (key in this.draft) return this.draft[key as SetpointKey];
    for (let i = this.inFlight.length - 1; i >= 0; i -= 1) {
      const values = this.inFlight[i] as Record<string, number | string | undefined> | undefined;
      if (values && key in values) return values[key];
    }
    return undefined;
  }

  #shown(key: string): { value: unknown; pending: boolean } {
    const requested = this.#requested(key);
    if (requested !== undefined) return { value: requested, pending: true };
    return { value: this.device.state.values[key], pending: false };
  }

  #step(key: SetpointKey, direction: 1 | -1): void {
    const spec = this.device.config.thermostat;
    if (!spec) return;
    const step = spec.temp_step ?? (spec.temperature_unit === "°F" ? 1 : 0.5);
    const min = spec.min_temp ?? (spec.temperature_unit === "°F" ? 45 : 7);
    const max = spec.max_temp ?? (spec.temperature_unit === "°F" ? 95 : 35);
    const current = this.#shown(key).value;
    const base = typeof current === "number" ? current : (min + max) / 2;
    const next = Math.min(max, Math.max(min, Math.round((base + direction * step) / step) * step));
    this.draft = { ...this.draft, [key]: Number(next.toFixed(3)) };
    this.outcome = null;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      const values = this.draft;
      this.draft = {};
      void this.#send(values);
    }, SETPOINT_DEBOUNCE_MS);
  }

  async #send(values: CommandValues): Promise<void> {
    this.inFlight = [...this.inFlight, values];
    this.outcome = null;
    try {
      await this.client.sendCommand(this.device.id, values);
      this.outcome = { kind: "ok", text: "Confirmed by the device" };
    } catch (error) {
      this.outcome = { kind: "error", text: describeFailure(error) };
    } finally {
      this.inFlight = this.inFlight.filter((item) => item !== values);
    }
  }

  #select(key: SelectKey, event: Event): void {
    const value = (event.target as HTMLSelectElement).value;
    void this.#send({ [key]: value });
  }

  protected override updated(changed: PropertyValues): void {
    if (changed.has("device")) benchRendered(this.device);
  }

  protected override render(): TemplateResult {
    const device = this.device;
    const spec = device.config.thermostat;
    const values = device.state.values;
    const online = device.online;
    const disabled = online === false;
    const mode = this.#shown("hvac_mode").value;
    const range = spec?.setpoint === "range" || (spec?.setpoint === "both" && mode === "heat_cool");
    const keys: SetpointKey[] = range ? ["target_temperature_low", "target_temperature_high"] : ["target_temperature"];
    const pending = this.inFlight.length > 0 || Object.keys(this.draft).length > 0;
    const id = device.id;
    return html`
      <article class="card ${online === false ? "offline" : ""}" aria-labelledby="name-${id}" data-device-id=${id}
        data-pending=${pending ? "true" : "false"}>
        <header>
          <h4 id="name-${id}">${device.name}</h4>
          ${availability(online)}
        </header>
        <div class="now">
          <span class="temperature" data-key="temperature" aria-label="Current temperature">${reading(device.config, "temperature", values["temperature"])}</span>
          ${device.config.measurements?.humidity
            ? html`<span data-key="humidity" aria-label="Humidity">${reading(device.config, "humidity", values["humidity"])}</span>`
            : nothing}
          ${typeof values["hvac_action"] === "string" ? html`<span class="muted" data-key="hvac_action">${label(values["hvac_action"])}</span>` : nothing}
        </div>
        ${spec
          ? html`<div class="setpoints">${keys.map((key) => this.#setpoint(key, disabled))}</div>
              <div class="controls">
                ${this.#choice("hvac_mode", "Mode", spec.hvac_modes, disabled)}
                ${this.#choice("preset", "Preset", spec.presets ?? [], disabled)}
                ${this.#choice("fan_mode", "Fan", spec.fan_modes ?? [], disabled)}
                ${this.#choice("swing_mode", "Swing", spec.swing_modes ?? [], disabled)}
              </div>`
          : nothing}
        <div class="status ${pending ? "pending" : (this.outcome?.kind ?? "")}" role="status" data-role="command-status">
          ${pending ? "Waiting for the device…" : (this.outcome?.text ?? "")}
        </div>
        <div class="actions">
          <button aria-expanded=${this.showHistory ? "true" : "false"} aria-controls="history-${id}"
            @click=${() => (this.showHistory = !this.showHistory)}>${this.showHistory ? "Hide history" : "History"}</button>
        </div>
        ${this.showHistory
          ? html`<tb-history-chart id="history-${id}" .client=${this.client} .device=${device}
              .keys=${["temperature", range ? "target_temperature_low" : "target_temperature", ...(range ? ["target_temperature_high"] : [])]}></tb-history-chart>`
          : nothing}
      </article>
    `;
  }

  #setpoint(key: SetpointKey, disabled: boolean): TemplateResult {
    const names: Record<SetpointKey, string> = {
      target_temperature: "Setpoint",
      target_temperature_low: "Heat to",
      target_temperature_high: "Cool to",
    };
    const shown = this.#shown(key);
    const text = reading(this.device.config, "temperature", shown.value);
    const id = `${this.device.id}-${key}`;
    return html`
      <div class="setpoint" role="group" aria-labelledby="${id}-label">
        <span id="${id}-label">${names[key]}</span>
        <button aria-label="Lower ${names[key].toLowerCase()}" ?disabled=${disabled} @click=${() => this.#step(key, -1)}>−</button>
        <output class=${shown.pending ? "pending" : ""} data-key=${key} aria-live="polite"
          aria-label="${names[key]}${shown.pending ? " (pending)" : ""}">${text}</output>
        <button aria-label="Raise ${names[key].toLowerCase()}" ?disabled=${disabled} @click=${() => this.#step(key, 1)}>+</button>
      </div>
    `;
  }

  #choice(key: SelectKey, name: string, options: readonly string[], disabled: boolean): TemplateResult | typeof nothing {
    if (options.length === 0) return nothing;
    const shown = this.#shown(key).value;
    const current = typeof shown === "string" ? shown : "";
    return html`
      <label>${name}
        <select data-key=${key} .value=${live(current)} ?disabled=${disabled} @change=${(event: Event) => this.#select(key, event)}>
          ${current === "" ? html`<option value="" selected disabled>—</option>` : nothing}
          ${options.map((option) => html`<option value=${option} ?selected=${option === current}>${label(option)}</option>`)}
        </select>
      </label>
    `;
  }
}

export function availability(online: boolean | null): TemplateResult {
  const kind = online === null ? "unknown" : online ? "online" : "offline";
  return html`<span class="badge ${kind}" data-role="availability">${online === null ? "Unknown" : online ? "Online" : "Offline"}</span>`;
}

export function describeFailure(error: unknown): string {
  if (error instanceof CommandError) {
    if (error.code === "failed") return `Refused by the device: ${error.reason ?? "no reason given"}`;
    if (error.code === "timed_out") return "The device did not answer in time";
    if (error.code === "queue_full") return "Not sent: too many commands waiting for the connection";
    return "Not sent: the connection was closed";
  }
  if (error instanceof ApiError) return `Not sent: ${error.message}`;
  return `Not sent: ${String(error)}`;
}

customElements.define("tb-thermostat-card", ThermostatCard);
