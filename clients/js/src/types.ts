// The SDK's public names for the wire types, all derived from the generated files: REST
// shapes from the OpenAPI document, real-time shapes from the AsyncAPI document, the device
// config from the protocol's JSON Schema. Nothing here restates a field by hand except the
// narrowing of Event.data by Event.type, which the schema expresses with if/then and the
// generator cannot.
import type * as Wire from "./generated/messages.js";
import type { DeviceConfig } from "./generated/protocol.js";
import type { components, operations } from "./generated/rest.js";

export type { DeviceConfig, Thermostat } from "./generated/protocol.js";
export type { Wire };

type Schemas = components["schemas"];

// ---- REST

/** A device in the REST form (`GET /devices/{id}`). */
export type Device = Schemas["Device"];
/** A device's latest merged state (`GET /devices/{id}/state`). */
export type DeviceState = Schemas["State"];
export type History = Schemas["History"];
export type HistoryPoint = Schemas["HistoryPoint"];
/** A command and its status (`GET /commands/{id}`). */
export type Command = Schemas["Command"];
export type CommandStatus = Command["status"];
/** What a command may set (validated by the server against the device's capabilities). */
export type CommandValues = Schemas["CommandRequest"]["values"];
/** The body of every REST error. */
export type ErrorBody = Schemas["Error"]["error"];
export type DeviceQuery = NonNullable<operations["listDevices"]["parameters"]["query"]>;
/** A single-use ticket that authenticates one SSE stream (`POST /events/tickets`). */
export type EventTicket = Schemas["Ticket"];

// ---- real-time (WebSocket and SSE)

export type Kind = Wire.Kind;
export type StateValue = Wire.StateValue;
export type EventType = Wire.EventType;

/** A position in the event log: the log's epoch and an offset in it. */
export interface Position {
  readonly epoch: Wire.Epoch;
  readonly offset: Wire.Offset;
}

/** Whether the server reaches the MQTT broker (no device data and no commands while it does not). */
export type ServerStatus = Wire.ServerStatus;

/** What a subscription selects; every given filter must match (docs/websocket.md). */
export type Filters = Pick<Wire.SubscribeCommand, "devices" | "kinds" | "homes" | "events">;

/** Why the server could not resume a subscription and sent a snapshot instead. */
export type ResetReason = NonNullable<Wire.SubscribeResult["reason"]>;

/** A device as a snapshot carries it: the REST form with its latest state. */
export type SnapshotDevice = Pick<
  Wire.Snapshot["devices"][number],
  "id" | "name" | "kind" | "home" | "online" | "first_seen" | "updated_at" | "state"
> & { readonly config: DeviceConfig };
/** A device's latest state as the real-time API sends it. */
export type LiveState = Wire.State;
export interface Snapshot {
  readonly devices: readonly SnapshotDevice[];
}

/** The command payload of `command` events: the command plus who sent it. */
export type CommandData = Wire.CommandData;

interface EventDataByType {
  device_added: DeviceConfig;
  device_updated: DeviceConfig;
  device_removed: Record<string, never>;
  state: Wire.StateData;
  availability: Wire.AvailabilityData;
  device_event: Wire.DeviceEventData;
  command: CommandData;
}

/** One event of the log, its `data` typed by its `type`. */
export type ServerEvent = {
  [T in EventType]: Omit<Wire.Event, "type" | "data"> & { readonly type: T; readonly data: EventDataByType[T] };
}[EventType];

/** A client command without its `id` (the connection numbers its messages). */
export type CommandBody = Wire.ClientCommand extends infer C ? (C extends unknown ? Omit<C, "id"> : never) : never;
