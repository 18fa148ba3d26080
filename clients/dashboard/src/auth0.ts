import { createAuth0Client } from "@auth0/auth0-spa-js";

import type { Session, SignIn } from "./auth.js";
import { baseUrl } from "./config.js";

/**
 * Authorization code flow with PKCE. Refresh tokens (rotating, kept in localStorage) instead of
 * the SDK's hidden-iframe renewal, which the page's CSP forbids (no frame-src), and which
 * third-party cookie blocking breaks anyway; localStorage rather than memory so a reload
 * stays signed in without a worker (the CSP allows no blob: workers either).
 */
export async function auth0Session(domain: string, clientId: string, audience: string): Promise<Session | SignIn> {
  const redirect = baseUrl().toString();
  const auth0 = await createAuth0Client({
    domain,
    clientId,
    authorizationParams: { audience, redirect_uri: redirect },
    useRefreshTokens: true,
    useRefreshTokensFallback: false,
    cacheLocation: "localstorage",
  });
  const query = new URLSearchParams(location.search);
  if (query.has("code") && query.has("state")) {
    await auth0.handleRedirectCallback();
    history.replaceState(history.state, "", redirect);
  }
  if (!(await auth0.isAuthenticated())) {
    return { kind: "auth0", login: () => auth0.loginWithRedirect() };
  }
  const user = await auth0.getUser();
  return {
    getToken: async (request) => {
      const token: unknown = await auth0.getTokenSilently({ cacheMode: request.reason === "use" ? "on" : "off" });
      if (typeof token !== "string") throw new Error("Auth0 returned no access token");
      return token;
    },
    user: user?.name ?? user?.email ?? user?.sub ?? null,
    logout: () => void auth0.logout({ logoutParams: { returnTo: redirect } }),
  };
}
