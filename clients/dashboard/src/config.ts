/** What the server tells the page before any login: `GET api/v1/client-config` (public). */
export type AuthConfig =
  | { readonly mode: "auth0"; readonly domain: string; readonly client_id: string | null; readonly audience: string }
  | { readonly mode: "dev" }
  | { readonly mode: "ingress"; readonly user: string | null };

export interface ClientConfig {
  readonly version: string;
  readonly auth: AuthConfig;
}

/** The page's base URL: every request is relative to it, so the page works under ingress's path prefix. */
export function baseUrl(): URL {
  return new URL(".", location.href);
}

export async function loadConfig(): Promise<ClientConfig> {
  const response = await fetch(new URL("api/v1/client-config", baseUrl()), { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`the server answered ${response.status} to api/v1/client-config`);
  return (await response.json()) as ClientConfig;
}
