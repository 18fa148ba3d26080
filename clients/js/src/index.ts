export { Backoff, type BackoffOptions } from "./backoff.js";
export {
  type ClientEvents,
  type ClientOptions,
  type ClientStats,
  type ConnectionState,
  ThermoBridgeClient,
} from "./client.js";
export type { Clock } from "./clock.js";
export { ApiError, CommandError, type CommandErrorCode } from "./errors.js";
export { type FetchLike, type HistoryOptions, RestClient, type RestOptions, type TimeLike } from "./rest.js";
export type { TokenProvider, TokenRequest, WebSocketConstructor, WebSocketLike } from "./socket.js";
export { SseClient, type SseClientEvents, type SseClientOptions, type StreamState } from "./sse.js";
export { MemoryStorage, type StorageLike } from "./storage.js";
export {
  DeviceStore,
  type DeviceStoreOptions,
  type EventFeed,
  type StoreDevice,
  type StoreListener,
} from "./store.js";
export type { Reset, SubscribeOptions, Subscription, SubscriptionHandlers } from "./subscription.js";
export type * from "./types.js";
