import type { StoreDevice, ThermoBridgeClient } from "@thermo-bridge/client";
import { html, LitElement, nothing, type PropertyValues, type TemplateResult } from "lit";

import { benchRendered } from "./bench.js";
import { label, reading } from "./format.js";
import "./history-chart.js";
import { cardStyles, deviceCardHost } from "./styles.js";
import { availability } from "./thermostat-card.js";

/** A sensor: every measurement it declares, its availability, and its history on demand. */
export class SensorTile extends LitElement {
  static override properties = {
    device: { attribute: false },
    client: { attribute: false },
    showHistory: { state: true },
  };

  declare device: StoreDevice;
  declare client: ThermoBridgeClient;
  declare showHistory: boolean;

  static override styles = [cardStyles, deviceCardHost];

  constructor() {
    super();
    this.showHistory = false;
  }

  protected override updated(changed: PropertyValues): void {
    if (changed.has("device")) benchRendered(this.device);
  }

  protected override render(): TemplateResult {
    const device = this.device;
    const keys = Object.keys(device.config.measurements ?? {});
    const numeric = keys.filter((key) => !["window_open", "low_battery", "fault"].includes(key));
    const id = device.id;
    return html`
      <article class="card ${device.online === false ? "offline" : ""}" aria-labelledby="name-${id}" data-device-id=${id}>
        <header>
          <h4 id="name-${id}">${device.name}</h4>
          ${availability(device.online)}
        </header>
        <dl class="readings">
          ${keys.map(
            (key) => html`<div><dt>${label(key)}</dt><dd data-key=${key}>${reading(device.config, key, device.state.values[key])}</dd></div>`,
          )}
        </dl>
        ${numeric.length
          ? html`<div class="actions">
              <button aria-expanded=${this.showHistory ? "true" : "false"} aria-controls="history-${id}"
                @click=${() => (this.showHistory = !this.showHistory)}>${this.showHistory ? "Hide history" : "History"}</button>
            </div>`
          : nothing}
        ${this.showHistory
          ? html`<tb-history-chart id="history-${id}" .client=${this.client} .device=${device} .keys=${numeric.slice(0, 3)}></tb-history-chart>`
          : nothing}
      </article>
    `;
  }
}

customElements.define("tb-sensor-tile", SensorTile);
