/**
 * A URL under the server's base URL. The base may carry a path (Home Assistant ingress serves
 * the add-on under /api/hassio_ingress/<token>/) and, in a browser, may be relative to the page.
 */
export function apiUrl(base: string | URL, path: string, query?: URLSearchParams): URL {
  const root = new URL(base, (globalThis as { location?: { href: string } }).location?.href);
  if (!root.pathname.endsWith("/")) root.pathname += "/";
  const url = new URL(path, root);
  if (query) url.search = query.toString();
  return url;
}

/** The same URL with the WebSocket scheme that matches its HTTP scheme. */
export function webSocketUrl(url: URL): string {
  const ws = new URL(url);
  ws.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return ws.toString();
}
