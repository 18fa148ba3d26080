import {
  type ConnectionState,
  DeviceStore,
  type ServerStatus,
  type StoreDevice,
  type Subscription,
  ThermoBridgeClient,
} from "@thermo-bridge/client";
import { css, html, LitElement, nothing, type TemplateResult } from "lit";
import { repeat } from "lit/directives/repeat.js";

import type { Session, SignIn } from "./auth.js";
import { bench, benchAllRendered, benchWebSocket } from "./bench.js";
import { baseUrl } from "./config.js";
import { entry, LOG_INTERVAL_MS, LOG_SIZE, type LogEntry } from "./event-log.js";
import "./event-log.js";
import "./sensor-tile.js";
import { cardStyles } from "./styles.js";
import "./thermostat-card.js";

/** How the last reconnect came back: every missed event replayed, or rebuilt from a snapshot. */
export type Resume = { readonly kind: "gapless" } | { readonly kind: "snapshot"; readonly reason: string } | null;

interface Group {
  readonly home: string;
  readonly areas: readonly { readonly area: string; readonly ids: readonly string[] }[];
}

/** Devices by home, then area (the device's suggested area), each sorted by name. */
export function group(devices: ReadonlyMap<string, StoreDevice>): Group[] {
  const homes = new Map<string, Map<string, StoreDevice[]>>();
  for (const device of devices.values()) {
    const areas = homes.get(device.home) ?? new Map<string, StoreDevice[]>();
    homes.set(device.home, areas);
    const area = device.config.suggested_area ?? "";
    areas.set(area, [...(areas.get(area) ?? []), device]);
  }
  const byName = (a: string, b: string): number => a.localeCompare(b, undefined, { numeric: true });
  return [...homes.entries()]
    .sort(([a], [b]) => byName(a, b))
    .map(([home, areas]) => ({
      home,
      areas: [...areas.entries()]
        .sort(([a], [b]) => (a === "" ? 1 : b === "" ? -1 : byName(a, b)))
        .map(([area, list]) => ({ area, ids: list.sort((x, y) => byName(x.name, y.name) || byName(x.id, y.id)).map((d) => d.id) })),
    }));
}

function layoutKey(device: StoreDevice): string {
  return `${device.home}\u0000${device.config.suggested_area ?? ""}\u0000${device.name}`;
}

/**
 * The page: a connection and resume indicator, the devices by home and area, the live log.
 * Renders from the SDK's DeviceStore, which calls back at most once per animation frame with
 * the devices that changed; only those cards update.
 */
export class ThermoBridgeApp extends LitElement {
  static override properties = {
    devices: { state: true },
    groups: { state: true },
    connection: { state: true },
    resume: { state: true },
    serverStatus: { state: true },
    log: { state: true },
    session: { state: true },
    signIn: { attribute: false },
    problem: { attribute: false },
    version: { attribute: false },
    loaded: { state: true },
  };

  declare devices: ReadonlyMap<string, StoreDevice>;
  declare groups: readonly Group[];
  declare connection: ConnectionState;
  declare resume: Resume;
  declare serverStatus: ServerStatus | undefined;
  declare log: readonly LogEntry[];
  declare session: Session | undefined;
  declare signIn: SignIn | undefined;
  declare problem: string | undefined;
  declare version: string;
  declare loaded: boolean;
  /** Every offset the log's subscription delivered, in order (the browser tests compare them with the server's log). */
  readonly offsets: number[] = [];
  client: ThermoBridgeClient | undefined;
  store: DeviceStore | undefined;
  #logSubscription: Subscription | undefined;
  #layout = new Map<string, string>();
  #resuming = false;
  #resetDuringResume: string | null = null;
  #logPending: LogEntry[] = [];
  #logFlushQueued = false;

  constructor() {
    super();
    this.devices = new Map();
    this.groups = [];
    this.connection = { state: "closed", code: null, reason: "not connected", willRetry: false };
    this.resume = null;
    this.serverStatus = undefined;
    this.log = [];
    this.version = "";
    this.loaded = false;
  }

  static override styles = [
    cardStyles,
    css`
      :host { display: block; min-height: 100vh; }
      .top {
        position: sticky; top: 0; z-index: 1; display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px;
        padding: 10px 16px; background: var(--tb-card); border-bottom: 1px solid var(--tb-border);
      }
      h1 { margin: 0; font-size: 1.2rem; flex: 1 1 auto; }
      .connection { display: flex; align-items: center; gap: 8px; font-size: 0.9rem; }
      .dot { width: 12px; height: 12px; border-radius: 50%; background: var(--tb-muted); flex: none; }
      .dot.open { background: var(--tb-ok); }
      .dot.connecting, .dot.resuming { background: var(--tb-warn); }
      .dot.closed { background: var(--tb-error); }
      .user { display: flex; align-items: center; gap: 8px; font-size: 0.85rem; color: var(--tb-muted); }
      .layout { display: grid; grid-template-columns: minmax(0, 1fr) 340px; gap: 16px; padding: 16px; align-items: start; }
      @media (max-width: 900px) { .layout { grid-template-columns: minmax(0, 1fr); padding: 10px; } }
      h2 { font-size: 1.1rem; margin: 0 0 8px; }
      h3 { font-size: 0.95rem; margin: 12px 0 8px; color: var(--tb-muted); font-weight: 600; }
      .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(300px, 100%), 1fr)); gap: 12px; }
      section.home + section.home { margin-top: 20px; }
      .banner { margin: 10px 16px 0; padding: 10px 14px; border-radius: 8px; border: 1px solid var(--tb-warn); color: var(--tb-warn); }
      .center { max-width: 36rem; margin: 12vh auto; padding: 0 16px; display: grid; gap: 12px; }
      .center form { display: grid; gap: 8px; }
      .empty { color: var(--tb-muted); }
    `,
  ];

  /** Signed in: connect, keep the store and the log current. */
  start(session: Session): void {
    this.session = session;
    this.signIn = undefined;
    const WebSocket = benchWebSocket();
    const client = new ThermoBridgeClient({ url: baseUrl(), getToken: session.getToken, ...(WebSocket && { WebSocket }) });
    this.client = client;
    client.on("state", (state) => this.#connectionChanged(state));
    client.on("reset", (reset) => {
      if (this.#resuming) this.#resetDuringResume = reset.reason;
    });
    client.on("status", (status) => (this.serverStatus = status));
    const store = new DeviceStore(client);
    this.store = store;
    store.subscribe((devices, changed) => this.#devicesChanged(devices, changed));
    this.#logSubscription = client.subscribe(
      {},
      {
        onEvent: (event) => {
          this.offsets.push(event.offset);
          this.#logPending.push(entry(event, this.devices.get(event.device_id)));
          if (this.#logPending.length > LOG_SIZE) this.#logPending.shift();
          if (!this.#logFlushQueued) {
            this.#logFlushQueued = true;
            setTimeout(() => this.#flushLog(), LOG_INTERVAL_MS);
          }
          this.#position();
        },
        onReset: () => this.#position(),
      },
      { snapshot: false },
    );
    client.connect();
  }

  /** The log's new lines, gathered for `LOG_INTERVAL_MS`: a burst of events costs one render, not one each. */
  #flushLog(): void {
    this.#logFlushQueued = false;
    this.log = [...this.#logPending.reverse(), ...this.log].slice(0, LOG_SIZE);
    this.#logPending = [];
  }

  #position(): void {
    const position = this.#logSubscription?.position;
    if (!position) return;
    this.dataset["epoch"] = position.epoch;
    this.dataset["lastOffset"] = String(position.offset);
  }

  #connectionChanged(state: ConnectionState): void {
    if (state.state === "resuming") {
      this.#resuming = true;
      this.#resetDuringResume = null;
    } else if (state.state === "open" && this.#resuming) {
      this.#resuming = false;
      this.resume = this.#resetDuringResume === null ? { kind: "gapless" } : { kind: "snapshot", reason: this.#resetDuringResume };
    } else if (state.state === "closed") {
      this.#resuming = false;
    }
    this.connection = state;
    this.dataset["connection"] = state.state;
    this.dataset["resume"] = this.resume?.kind ?? "";
  }

  #devicesChanged(devices: ReadonlyMap<string, StoreDevice>, changed: ReadonlySet<string>): void {
    let relayout = devices.size !== this.#layout.size;
    for (const id of changed) {
      const device = devices.get(id);
      const key = device ? layoutKey(device) : undefined;
      if (this.#layout.get(id) !== key) relayout = true;
      if (key === undefined) this.#layout.delete(id);
      else this.#layout.set(id, key);
    }
    this.devices = devices;
    if (relayout) this.groups = group(devices);
    if (!this.loaded) {
      this.loaded = true;
      if (bench) void this.#allRendered();
    }
    this.dataset["devices"] = String(devices.size);
  }

  async #allRendered(): Promise<void> {
    await this.updateComplete;
    const cards = [...this.renderRoot.querySelectorAll<LitElement>("tb-thermostat-card, tb-sensor-tile")];
    await Promise.all(cards.map((card) => card.updateComplete));
    benchAllRendered();
  }

  protected override render(): TemplateResult {
    return html`
      <header class="top">
        <h1>Thermo Bridge</h1>
        ${this.session ? this.#indicator() : nothing}
        ${this.session ? this.#user() : nothing}
      </header>
      ${this.serverStatus && !this.serverStatus.broker.connected
        ? html`<p class="banner" role="alert">The server has lost its MQTT broker: no device data arrives and commands fail until it is back.</p>`
        : nothing}
      ${this.problem ? html`<div class="center" role="alert"><h2>Cannot start</h2><p>${this.problem}</p></div>` : nothing}
      ${this.signIn ? this.#signIn(this.signIn) : nothing}
      ${this.session ? this.#dashboard() : nothing}
    `;
  }

  #indicator(): TemplateResult {
    const state = this.connection;
    let text: string;
    switch (state.state) {
      case "connecting":
        text = state.attempt > 0 ? `Reconnecting (attempt ${state.attempt + 1})…` : "Connecting…";
        break;
      case "resuming":
        text = "Resuming…";
        break;
      case "open":
        text = "Live";
        break;
      case "closed":
        text = state.willRetry
          ? `Offline (${state.reason})${state.retryInMs === undefined ? "" : `, retrying in ${Math.ceil(state.retryInMs / 1000)} s`}`
          : `Disconnected (${state.reason})`;
        break;
    }
    const resume = this.resume;
    const detail =
      state.state === "open" && resume
        ? resume.kind === "gapless"
          ? " · resumed without gaps"
          : ` · rebuilt from snapshot (${resume.reason.replace(/_/g, " ")})`
        : "";
    return html`<div class="connection" role="status" aria-live="polite" data-role="connection">
      <span class="dot ${state.state}" aria-hidden="true"></span><span>${text}${detail}</span>
    </div>`;
  }

  #user(): TemplateResult {
    const session = this.session;
    return html`<div class="user">
      ${session?.user ? html`<span>${session.user}</span>` : nothing}
      ${session?.logout ? html`<button @click=${() => session.logout?.()}>Sign out</button>` : nothing}
      ${this.version ? html`<span>v${this.version}</span>` : nothing}
    </div>`;
  }

  #signIn(signIn: SignIn): TemplateResult {
    switch (signIn.kind) {
      case "auth0":
        return html`<div class="center"><h2>Sign in</h2><p>Sign in with your account to see your thermostats.</p>
          <button class="primary" @click=${() => void signIn.login()}>Sign in</button></div>`;
      case "auth0-unconfigured":
        return html`<div class="center" role="alert"><h2>Sign-in is not set up</h2>
          <p>This server uses Auth0, but the option <code>auth0_client_id</code> (the client id of an Auth0 Single Page
          Application whose allowed callback URL is this page) is empty. The API works; the dashboard needs that option.</p></div>`;
      case "dev":
        return html`<div class="center"><h2>Dev token</h2>
          <p>This server runs with dev auth (never in production). Open the URL <code>scripts/demo</code> printed, or paste a
          token from <code>thermo-bridge-token</code>.</p>
          <form @submit=${(event: SubmitEvent) => this.#pasted(event, signIn)}>
            <label for="token">Access token</label>
            <input id="token" name="token" autocomplete="off" spellcheck="false" required>
            <button class="primary" type="submit">Use this token</button>
          </form></div>`;
    }
  }

  #pasted(event: SubmitEvent, signIn: Extract<SignIn, { kind: "dev" }>): void {
    event.preventDefault();
    const input = (event.target as HTMLFormElement).elements.namedItem("token") as HTMLInputElement;
    signIn.useToken(input.value);
  }

  #dashboard(): TemplateResult {
    return html`<div class="layout">
      <main aria-label="Devices">
        ${!this.loaded ? html`<p class="empty">Loading devices…</p>` : nothing}
        ${this.loaded && this.devices.size === 0 ? html`<p class="empty">No devices yet: they appear as soon as they announce themselves.</p>` : nothing}
        ${repeat(
          this.groups,
          (home) => home.home,
          (home) => html`<section class="home" aria-labelledby="home-${home.home}">
            <h2 id="home-${home.home}">Home: ${home.home}</h2>
            ${repeat(
              home.areas,
              (area) => area.area,
              (area) => html`<h3>${area.area || "No area"}</h3>
                <div class="grid">${repeat(area.ids, (id) => id, (id) => this.#card(id))}</div>`,
            )}
          </section>`,
        )}
      </main>
      <aside aria-label="Live log"><tb-event-log .entries=${this.log}></tb-event-log></aside>
    </div>`;
  }

  #card(id: string): TemplateResult | typeof nothing {
    const device = this.devices.get(id);
    if (!device) return nothing;
    return device.kind === "thermostat"
      ? html`<tb-thermostat-card .device=${device} .client=${this.client}></tb-thermostat-card>`
      : html`<tb-sensor-tile .device=${device} .client=${this.client}></tb-sensor-tile>`;
  }
}

customElements.define("tb-app", ThermoBridgeApp);

declare global {
  interface HTMLElementTagNameMap {
    "tb-app": ThermoBridgeApp;
  }
}
