// The WebSocket surface the SDK needs, structural so that the browser's WebSocket, Node 22's
// global one and the `ws` package all fit without a cast.

export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "error", listener: () => void): void;
  addEventListener(type: "message", listener: (event: { readonly data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { readonly code: number; readonly reason: string }) => void): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Why the SDK asks for a token, so a provider can skip its cache when it matters. */
export interface TokenRequest {
  /**
   * `use`: for a new connection or request (a cached token is fine); `refresh`: the current
   * one expires soon; `rejected`: the server refused the last one.
   */
  readonly reason: "use" | "refresh" | "rejected";
}

/** Returns an access token for the API (e.g. Auth0's getTokenSilently). */
export type TokenProvider = (request: TokenRequest) => Promise<string>;

export function defaultWebSocket(): WebSocketConstructor {
  const constructor = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!constructor) {
    throw new TypeError(
      "no global WebSocket (Node 20 without --experimental-websocket): pass one, e.g. `WebSocket` from the ws package",
    );
  }
  return constructor;
}
