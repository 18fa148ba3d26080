"""The middlewares every HTTP request passes (outermost first) and the response headers.

errors (one JSON shape, never internals) → CORS pre-flight (before authentication: browsers
send it without a token) → declared body size → per-address limit of requests refused with
401 → authentication (``auth.bearer``; the public OpenAPI document skips it) → per-user rate
limit.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from thermo_bridge_server.auth.bearer import PRINCIPAL_KEY
from thermo_bridge_server.auth.tokens import Principal
from thermo_bridge_server.errors import ApiError, error_response

from .context import API_PREFIX, HTTP
from .params import payload_too_large

_LOGGER = logging.getLogger(__name__)

OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
CLIENT_CONFIG_PATH = f"{API_PREFIX}/client-config"
INGRESS_TOKEN_PATH = f"{API_PREFIX}/ingress/token"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> ApiError:
    status = exc.status
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers[hdrs.ALLOW] = ", ".join(sorted(exc.allowed_methods))
        message = f"{request.method} is not allowed here; allowed: {headers[hdrs.ALLOW]}"
    elif status == 404:
        message = f"no such resource: {request.path[:120]}"
    elif status == 413:
        limit = request.app[HTTP].settings.max_body_bytes
        return payload_too_large(limit)
    elif status >= 500:
        message = "internal server error"
    else:
        message = exc.reason
    code = _HTTP_CODES.get(status, "internal_error" if status >= 500 else "http_error")
    return ApiError(status, code, message, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error in the one JSON shape, never leak internals, count responses."""
    counters = request.app[HTTP].counters
    counters.in_flight += 1
    status = 500
    try:
        try:
            response = await handler(request)
        except ApiError as err:
            response = error_response(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(_from_http_exception(request, exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            _LOGGER.exception("Unhandled error in %s %s", request.method, request.path)
            response = error_response(ApiError(500, "internal_error", "internal server error"))
        status = response.status
    except web.HTTPException as exc:  # redirects re-raised above
        status = exc.status
        raise
    finally:
        counters.in_flight -= 1
        counters.observe(request.method, status)
    return response


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a declared oversized body before authentication or reading it."""
    limit = request.app[HTTP].settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise payload_too_large(limit)
    return await handler(request)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """429 with ``Retry-After`` when an authenticated user exceeds their request rate."""
    principal: Principal | None = request.get(PRINCIPAL_KEY)
    if principal is not None:
        wait = request.app[HTTP].rate_limiter.take(principal.sub)
        if wait > 0:
            request.app[HTTP].counters.rate_limited += 1
            raise _too_many(wait, "too many requests")
    return await handler(request)


def _too_many(wait: float, message: str) -> ApiError:
    retry = max(1, math.ceil(wait))
    return ApiError(
        429,
        "rate_limited",
        f"{message}; retry in {retry} s",
        details={"retry_after": retry},
        headers={hdrs.RETRY_AFTER: str(retry)},
    )


@web.middleware
async def unauthenticated_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Per client address, every request refused with 401 takes a token; with none left it gets 429.

    Counted after the token was checked, so a valid token is never refused by this limit: behind
    a reverse proxy every client has the proxy's address, and one client sending bad tokens
    must not lock the others out. The price: a guess that is right (a token, an SSE ticket) is
    still answered, so this does not slow guessing; it answers a prober 429 with Retry-After
    and counts it (``rate_limited`` in /metrics). Tickets and tokens are unguessable anyway.
    """
    ctx = request.app[HTTP]
    try:
        response = await handler(request)
    except ApiError as err:
        if err.status != 401:
            raise
        refused: ApiError | web.StreamResponse = err
    else:
        if response.status != 401:
            return response
        refused = response
    wait = ctx.address_limiter.take(ctx.client_address(request))
    if wait > 0:
        ctx.counters.rate_limited += 1
        raise _too_many(wait, "too many requests without a valid token from this address")
    if isinstance(refused, ApiError):
        raise refused
    return refused


CORS_ALLOW_METHODS = "GET, POST, PUT, OPTIONS"
CORS_ALLOW_HEADERS = "Authorization, Content-Type"
CORS_EXPOSE_HEADERS = "Location, Retry-After, WWW-Authenticate"
CORS_MAX_AGE = "600"


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return None
    origins = request.app[HTTP].settings.cors_origins
    if origin in origins:
        return origin
    return "*" if "*" in origins else None


@web.middleware
async def cors_preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights (before authentication: browsers send them without a token)."""
    if (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    ):
        if _allowed_origin(request) is None:
            raise ApiError(403, "cors_origin_not_allowed", "this origin is not allowed to call the API")
        return web.Response(
            status=204,
            headers={
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: CORS_ALLOW_METHODS,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: CORS_ALLOW_HEADERS,
                hdrs.ACCESS_CONTROL_MAX_AGE: CORS_MAX_AGE,
            },
        )
    return await handler(request)


API_CSP = "default-src 'none'; frame-ancestors 'none'"
"""The API's policy: JSON and event streams load nothing, and nothing may frame them."""

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": API_CSP,
    "Cache-Control": "no-store",
}
"""On every response; a response that sets its own (the dashboard page) keeps its values."""

INGRESS_PROXY = "172.30.32.2"
"""The Supervisor's ingress proxy: the only peer whose ``X-Ingress-Path`` is believed."""


def served_under_ingress(request: web.Request) -> bool:
    """Whether Home Assistant's ingress proxy forwarded this request (the page is framed by HA)."""
    return request.remote == INGRESS_PROXY and "X-Ingress-Path" in request.headers


def ingress_origin_allowed(request: web.Request, origin: str) -> bool:
    """A WebSocket ``Origin`` from the panel: Home Assistant's own, only through its ingress proxy.

    The page runs on Home Assistant's origin there. Its host is the one the browser reached
    Home Assistant at, which Home Assistant's proxy passes on as ``X-Forwarded-Host`` (a
    browser cannot set that header on a WebSocket handshake).
    """
    if not served_under_ingress(request) or not request.app[HTTP].settings.ingress:
        return False
    host = request.headers.get(hdrs.X_FORWARDED_HOST, "")
    parts = urlsplit(origin)
    return bool(host) and parts.scheme in {"http", "https"} and parts.netloc.lower() == host.strip().lower()


def page_csp(auth_origin: str | None, *, ingress: bool) -> str:
    """The policy of the dashboard page served at ``/`` (a Lit + uPlot single-page app).

    Everything from the server's own origin, no inline script or style: Lit applies its styles
    as constructable stylesheets (``adoptedStyleSheets``) and uPlot sets styles through the
    CSSOM, neither of which ``style-src`` governs. ``connect-src`` adds the Auth0 tenant
    (``auth_origin``) for the token and refresh-token calls of the SPA SDK; login itself is a
    top-level redirect. ``'self'`` covers the WebSocket to the same host (CSP 3). Framing:
    only by Home Assistant's frontend when served through ingress (same origin as HA),
    otherwise never.
    """
    connect = "'self'" if not auth_origin else f"'self' {auth_origin}"
    ancestors = "'self'" if ingress else "'none'"
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "manifest-src 'self'",
            f"connect-src {connect}",
            "base-uri 'none'",
            "form-action 'none'",
            f"frame-ancestors {ancestors}",
        )
    )


def auth_origin(issuer: str) -> str:
    """The origin (scheme, host, port) of the token issuer, for ``page_csp``."""
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def page_security_headers(auth_origin: str | None, *, ingress: bool) -> dict[str, str]:
    """Headers the dashboard page sets itself (``on_response_prepare`` fills in the rest)."""
    return {
        "Content-Security-Policy": page_csp(auth_origin, ingress=ingress),
        "X-Frame-Options": "SAMEORIGIN" if ingress else "DENY",
        # The page opens Auth0's login in a popup in some flows; it must keep its opener.
        "Cross-Origin-Opener-Policy": "same-origin-allow-popups",
        "Cache-Control": "no-cache",
    }


SERVER_HEADER = "thermo_bridge"  # no version banner


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Security headers on every response; CORS headers for allowed origins (errors included)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers[hdrs.SERVER] = SERVER_HEADER  # aiohttp set its own banner before this signal
    if request.path in {"/metrics", "/health"}:
        return
    origin = _allowed_origin(request)
    if origin is not None:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = CORS_EXPOSE_HEADERS
    if request.app[HTTP].settings.cors_origins and origin != "*":
        response.headers.add(hdrs.VARY, hdrs.ORIGIN)


PUBLIC_API_PATHS = frozenset({OPENAPI_PATH, CLIENT_CONFIG_PATH})
PUBLIC_POST_PATHS = frozenset({INGRESS_TOKEN_PATH})
"""Authenticated by who forwarded them (Home Assistant's ingress proxy), not by a token."""


def _bypass(auth: Middleware, self_authenticating: frozenset[str]) -> Middleware:
    """Let the public documents (GET) and the streams that authenticate in-band skip the bearer check."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in (hdrs.METH_GET, hdrs.METH_HEAD) and (
            request.path in PUBLIC_API_PATHS or request.path in self_authenticating
        ):
            return await handler(request)
        if request.method == hdrs.METH_POST and request.path in PUBLIC_POST_PATHS:
            return await handler(request)
        return await auth(request, handler)

    return middleware


def middlewares(auth: Middleware, *, self_authenticating: frozenset[str] = frozenset()) -> list[Middleware]:
    """Middlewares in order, outermost first.

    Errors, CORS preflight, body size, the per-address limit of refused requests, auth, the
    per-user rate limit.

    ``self_authenticating``: GET paths whose handler authenticates itself (the WebSocket's auth
    message, SSE's bearer header or ticket).
    """
    return [
        error_middleware,
        cors_preflight_middleware,
        body_limit_middleware,
        unauthenticated_limit_middleware,
        _bypass(auth, self_authenticating),
        rate_limit_middleware,
    ]
