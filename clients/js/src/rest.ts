import { ApiError } from "./errors.js";
import { randomKey } from "./random.js";
import type { TokenProvider } from "./socket.js";
import type { Command, CommandValues, Device, DeviceQuery, DeviceState, ErrorBody, EventTicket, History } from "./types.js";
import { apiUrl } from "./url.js";

export type FetchLike = (input: URL, init: RequestInit) => Promise<Response>;

export interface RestOptions {
  /** The server's base URL (the API is under `api/v1/` below it). */
  readonly url: string | URL;
  readonly getToken: TokenProvider;
  /** Default: the global fetch. */
  readonly fetch?: FetchLike;
}

/** A time for history ranges: a Date, epoch seconds, or an ISO-8601 string. */
export type TimeLike = Date | number | string;

export interface HistoryOptions {
  /** Default: end minus 24 hours. */
  readonly start?: TimeLike;
  /** Default: now. */
  readonly end?: TimeLike;
  /** State keys; default all. */
  readonly keys?: readonly string[];
  /** Aggregate into buckets: seconds, or `30s`, `5m`, `1h`, `1d`. Default: raw points. */
  readonly resolution?: number | string;
  /** At most this many points (the server's default and ceiling: 10,000). */
  readonly limit?: number;
}

interface Call {
  readonly method?: "GET" | "POST";
  readonly query?: URLSearchParams;
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
}

/** Typed helpers for the REST API; the bearer token comes from the same provider as the socket's. */
export class RestClient {
  readonly #url: string | URL;
  readonly #getToken: TokenProvider;
  readonly #fetch: FetchLike;

  constructor(options: RestOptions) {
    this.#url = options.url;
    this.#getToken = options.getToken;
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  async devices(query: DeviceQuery = {}): Promise<Device[]> {
    const params = new URLSearchParams();
    // Callers compiled without exactOptionalPropertyTypes may pass undefined for "any".
    for (const [name, value] of Object.entries(query) as [string, string | boolean | undefined][]) {
      if (value !== undefined) params.set(name, String(value));
    }
    return (await this.#call<{ devices: Device[] }>("api/v1/devices", { query: params })).devices;
  }

  device(deviceId: string): Promise<Device> {
    return this.#call(`api/v1/devices/${encodeURIComponent(deviceId)}`);
  }

  state(deviceId: string): Promise<DeviceState> {
    return this.#call(`api/v1/devices/${encodeURIComponent(deviceId)}/state`);
  }

  history(deviceId: string, options: HistoryOptions = {}): Promise<History> {
    const params = new URLSearchParams();
    if (options.start !== undefined) params.set("start", timeParam(options.start));
    if (options.end !== undefined) params.set("end", timeParam(options.end));
    if (options.keys) params.set("keys", options.keys.join(","));
    if (options.resolution !== undefined) params.set("resolution", String(options.resolution));
    if (options.limit !== undefined) params.set("limit", String(options.limit));
    return this.#call(`api/v1/devices/${encodeURIComponent(deviceId)}/history`, { query: params });
  }

  /**
   * Sends a command; resolves with it as accepted (`pending`), not with the device's answer
   * (use ThermoBridgeClient.sendCommand for that). The idempotency key makes a retry of the
   * same call safe: the server answers with the command it already has.
   */
  sendCommand(deviceId: string, values: CommandValues, options: { idempotencyKey?: string } = {}): Promise<Command> {
    return this.#call(`api/v1/devices/${encodeURIComponent(deviceId)}/commands`, {
      method: "POST",
      body: { values },
      headers: { "Idempotency-Key": options.idempotencyKey ?? randomKey() },
    });
  }

  command(commandId: string): Promise<Command> {
    return this.#call(`api/v1/commands/${encodeURIComponent(commandId)}`);
  }

  eventTicket(): Promise<EventTicket> {
    return this.#call("api/v1/events/tickets", { method: "POST" });
  }

  async #call<T>(path: string, call: Call = {}): Promise<T> {
    const url = apiUrl(this.#url, path, call.query);
    let response = await this.#send(url, call, await this.#getToken({ reason: "use" }));
    if (response.status === 401) {
      // The token may have expired in the app's cache: one retry with a fresh one.
      response = await this.#send(url, call, await this.#getToken({ reason: "rejected" }));
    }
    if (!response.ok) throw await responseError(response);
    return (await response.json()) as T;
  }

  #send(url: URL, call: Call, token: string): Promise<Response> {
    const headers: Record<string, string> = { Accept: "application/json", Authorization: `Bearer ${token}`, ...call.headers };
    const init: RequestInit = { method: call.method ?? "GET", headers };
    if (call.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(call.body);
    }
    return this.#fetch(url, init);
  }
}

function timeParam(time: TimeLike): string {
  if (time instanceof Date) return time.toISOString();
  return String(time);
}

/** The server's error body as an ApiError; a body of another shape (a proxy's page) keeps the status. */
export async function responseError(response: Response): Promise<ApiError> {
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    body = undefined;
  }
  const error = (body as { error?: Partial<ErrorBody> } | undefined)?.error;
  if (error && typeof error.code === "string") {
    return new ApiError(error.code, error.message ?? error.code, response.status, error.details);
  }
  return new ApiError("http_error", `HTTP ${response.status} ${response.statusText}`.trim(), response.status);
}
