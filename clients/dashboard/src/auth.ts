import type { TokenProvider, TokenRequest } from "@thermo-bridge/client";

import { baseUrl, type AuthConfig } from "./config.js";

/** How the page gets its access tokens, and who is signed in (for the header). */
export interface Session {
  readonly getToken: TokenProvider;
  readonly user: string | null;
  /** Present when the user can sign out (Auth0, a pasted dev token). */
  readonly logout?: () => void;
}

/** No session yet: what the page shows instead of the devices. */
export type SignIn =
  | { readonly kind: "auth0"; readonly login: () => Promise<void> }
  | { readonly kind: "auth0-unconfigured" }
  | { readonly kind: "dev"; readonly useToken: (token: string) => void };

export const DEV_TOKEN_KEY = "thermo-bridge.dev-token";

/**
 * Dev auth (the demo): the token comes in the URL's fragment (`#token=...`, never sent to the
 * server), is kept in sessionStorage for reloads and removed from the address bar at once.
 */
export function devSession(onSignedIn: (session: Session) => void): Session | SignIn {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get("token");
  if (fromUrl) {
    sessionStorage.setItem(DEV_TOKEN_KEY, fromUrl);
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(history.state, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  }
  const session = (token: string): Session => ({
    getToken: () => Promise.resolve(sessionStorage.getItem(DEV_TOKEN_KEY) ?? token),
    user: subject(token),
    logout: () => {
      sessionStorage.removeItem(DEV_TOKEN_KEY);
      location.reload();
    },
  });
  const stored = sessionStorage.getItem(DEV_TOKEN_KEY);
  if (stored) return session(stored);
  return {
    kind: "dev",
    useToken: (token) => {
      sessionStorage.setItem(DEV_TOKEN_KEY, token.trim());
      onSignedIn(session(token.trim()));
    },
  };
}

interface IngressToken {
  readonly access_token: string;
  readonly expires_at: number;
}

/**
 * Under Home Assistant's ingress the Supervisor has authenticated the user: the server mints
 * a short-lived token for them (`POST api/v1/ingress/token`), fetched again before it expires
 * (the SDK asks with reason "refresh") or when the server refused it ("rejected").
 */
export function ingressSession(user: string | null): Session {
  let current: IngressToken | undefined;
  const getToken = async (request: TokenRequest): Promise<string> => {
    const fresh = current && current.expires_at * 1000 - Date.now() > 30_000;
    if (current && fresh && request.reason === "use") return current.access_token;
    const response = await fetch(new URL("api/v1/ingress/token", baseUrl()), { method: "POST", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`no ingress token: the server answered ${response.status}`);
    current = (await response.json()) as IngressToken;
    return current.access_token;
  };
  return { getToken, user };
}

/** Auth0 (standalone): PKCE through Auth0's SPA SDK, loaded only in this mode (a separate chunk). */
export async function auth0Session(config: Extract<AuthConfig, { mode: "auth0" }>): Promise<Session | SignIn> {
  if (!config.client_id) return { kind: "auth0-unconfigured" };
  const { auth0Session: start } = await import("./auth0.js");
  return start(config.domain, config.client_id, config.audience);
}

/** The token's subject, for display only (the server verifies tokens, the page never does). */
export function subject(token: string): string | null {
  try {
    const payload = token.split(".")[1] ?? "";
    const claims = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))) as { sub?: unknown };
    return typeof claims.sub === "string" ? claims.sub : null;
  } catch {
    return null;
  }
}
