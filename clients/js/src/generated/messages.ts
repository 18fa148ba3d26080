// Generated from docs/asyncapi.yaml (components.schemas) by json-schema-to-typescript (clients/js/scripts/generate-types.mjs).
// Do not edit: run `npm run generate -w @thermo-bridge/client` after changing the source.

/**
 * Any payload of the WebSocket and SSE channels.
 */
export type RealtimeMessage = ServerMessage | ClientMessage | SseMessage;
/**
 * Everything the server sends on the WebSocket (operation sendServerMessages).
 */
export type ServerMessage = AuthRequired | AuthOk | AuthInvalid | TokenExpired | Status | Result | Pong | EventMessage;
/**
 * The event log's id; a recreated database has another one.
 */
export type Epoch = string;
export type Offset = number;
export type Result =
  | {
      id: Id;
      type: "result";
      success: true;
      /**
       * The command's result; its shape per command is in docs/websocket.md.
       */
      result: null | AuthResult | DeviceList | State | SubscribeResult | Command;
    }
  | {
      /**
       * null when the message had no usable id
       */
      id: number | null;
      type: "result";
      success: false;
      error: Error;
    };
export type Id = number;
export type DeviceId = string;
export type Kind = "thermostat" | "sensor";
export type Home = string;
export type StateValue = number | boolean | string | null;
export type EventType =
  "device_added" | "device_updated" | "device_removed" | "state" | "availability" | "device_event" | "command";
/**
 * Everything a client sends on the WebSocket (operation receiveClientMessages).
 */
export type ClientMessage = Auth | ClientCommand;
export type ClientCommand =
  | AuthCommand
  | PingCommand
  | GetDevicesCommand
  | GetStateCommand
  | SubscribeCommand
  | UnsubscribeCommand
  | SendCommandCommand;
/**
 * @maxItems 1000
 */
export type Devices = DeviceId[];
/**
 * @maxItems 2
 */
export type Kinds = Kind[];
/**
 * @maxItems 256
 */
export type Homes = Home[];
/**
 * The data of every Server-Sent Event (channel sse).
 */
export type SseMessage = ServerStatus | Position | Snapshot | Event;

export interface AuthRequired {
  type: "auth_required";
  version: string;
}
export interface AuthOk {
  type: "auth_ok";
  version: string;
  sub: string;
  permissions: string[];
  expires_at: number | null;
  epoch: Epoch;
  offset: Offset;
  status?: ServerStatus;
}
export interface ServerStatus {
  broker: BrokerStatus;
}
export interface BrokerStatus {
  /**
   * Whether the server is connected to the MQTT broker: false means no device data arrives and commands fail (broker_unavailable).
   */
  connected: boolean;
  /**
   * Epoch seconds of the last change (the server's start before the first one).
   */
  since: number;
}
export interface AuthInvalid {
  type: "auth_invalid";
  code: string;
  message: string;
}
export interface TokenExpired {
  type: "token_expired";
}
export interface Status {
  type: "status";
  broker: BrokerStatus;
}
export interface AuthResult {
  sub: string;
  permissions: string[];
  expires_at: number | null;
}
export interface DeviceList {
  devices: Device[];
}
export interface Device {
  id: DeviceId;
  name: string;
  kind: Kind;
  home: Home;
  online: boolean | null;
  first_seen: number;
  updated_at: number;
  /**
   * The config wire form (docs/schemas/device-config.schema.json).
   */
  config: {
    [k: string]: unknown;
  };
  state?: State;
  [k: string]: unknown;
}
export interface State {
  device_id: DeviceId;
  values: {
    [k: string]: StateValue;
  };
  updated_at: number | null;
  device_ts: number | null;
  seq: number | null;
}
export interface SubscribeResult {
  recovered: boolean;
  reason?: "no_position" | "epoch_changed" | "offset_expired" | "offset_unknown";
  epoch: Epoch;
  offset: Offset;
  snapshot?: Snapshot;
}
export interface Snapshot {
  devices: (Device & {
    state: State;
    [k: string]: unknown;
  })[];
}
export interface Command {
  id: string;
  device_id: DeviceId;
  values: {
    [k: string]: number | string;
  };
  status: "pending" | "acked" | "failed" | "timed_out";
  reason: string | null;
  created_at: number;
  updated_at: number;
}
export interface Error {
  /**
   * Stable and machine-readable (the REST error codes and the WebSocket ones).
   */
  code: string;
  /**
   * For humans; may change.
   */
  message: string;
  details?: {
    [k: string]: unknown;
  };
}
export interface Pong {
  id: Id;
  type: "pong";
}
export interface EventMessage {
  id: Id;
  type: "event";
  event: Event;
}
export interface Event {
  type: EventType;
  device_id: DeviceId;
  home: Home;
  offset: Offset;
  epoch: Epoch;
  /**
   * The server's time of the change (epoch seconds).
   */
  ts: number;
  data: ConfigData | RemovedData | StateData | AvailabilityData | DeviceEventData | CommandData;
}
/**
 * The device's config wire form (docs/schemas/device-config.schema.json).
 */
export interface ConfigData {
  schema: number;
  id: DeviceId;
  kind: Kind;
  name: string;
  [k: string]: unknown;
}
export interface RemovedData {}
export interface StateData {
  values: {
    [k: string]: StateValue;
  };
  ts: number | null;
  seq: number | null;
}
export interface AvailabilityData {
  online: boolean;
}
export interface DeviceEventData {
  event: string;
  data: {
    [k: string]: unknown;
  };
  ts: number | null;
}
export interface CommandData {
  id: string;
  device_id: DeviceId;
  values: {
    [k: string]: number | string;
  };
  status: "pending" | "acked" | "failed" | "timed_out";
  reason: string | null;
  /**
   * The Auth0 subject who sent the command.
   */
  sub: string;
  created_at: number;
  updated_at: number;
}
export interface Auth {
  type: "auth";
  access_token: string;
}
export interface AuthCommand {
  id: Id;
  type: "auth";
  access_token: string;
}
export interface PingCommand {
  id: Id;
  type: "ping";
}
export interface GetDevicesCommand {
  id: Id;
  type: "get_devices";
  devices?: Devices;
  kinds?: Kinds;
  homes?: Homes;
}
export interface GetStateCommand {
  id: Id;
  type: "get_state";
  device_id: string;
}
export interface SubscribeCommand {
  id: Id;
  type: "subscribe";
  devices?: Devices;
  kinds?: Kinds;
  homes?: Homes;
  /**
   * @maxItems 7
   */
  events?: EventType[];
  since?: {
    epoch: string;
    offset: Offset;
  };
  snapshot?: boolean;
}
export interface UnsubscribeCommand {
  id: Id;
  type: "unsubscribe";
  subscription: Id;
}
export interface SendCommandCommand {
  id: Id;
  type: "send_command";
  device_id: string;
  /**
   * Validated against the device's capabilities (docs/protocol.md, set).
   */
  values: {
    [k: string]: number | string;
  };
  idempotency_key?: string;
}
export interface Position {
  recovered: boolean;
  reason?: "no_position" | "epoch_changed" | "offset_expired" | "offset_unknown";
  epoch: Epoch;
  offset: Offset;
}
