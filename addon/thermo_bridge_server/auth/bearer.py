"""The HTTP glue of authentication: the ``Authorization: Bearer`` header and the middleware.

RFC 6750 §3.1: a request without bearer credentials (none, or another scheme like Basic)
gets 401 with no ``error`` attribute; a malformed header (``Bearer`` without a token, extra
parts, characters outside ``b64token``, repeated headers) gets 400 ``invalid_request``; a
token that does not verify gets 401 ``invalid_token`` from the Authenticator.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from thermo_bridge_server.errors import ApiError, error_response

from .tokens import Authenticator, Principal, invalid_request_error, missing_token_error, require

_LOGGER = logging.getLogger(__name__)

# RFC 6750 §2.1 b64token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# An auth-scheme (an RFC 9110 token), the whitespace after it, the next word and what follows.
_CREDENTIALS = re.compile(
    r"(?P<scheme>[!#$%&'*+.^_`|~0-9A-Za-z-]+)(?P<separator>\s*)(?P<token>\S*)(?P<rest>.*)", re.DOTALL
)

if TYPE_CHECKING or hasattr(web, "RequestKey"):
    PRINCIPAL_KEY = web.RequestKey("principal", Principal)
    """Where the auth middleware leaves the request's Principal."""
else:  # aiohttp < 3.14 (Home Assistant 2025.4's 3.11) has no RequestKey: a plain string key
    PRINCIPAL_KEY = "principal"


def _is_protected(request: web.Request, prefix: str) -> bool:
    path = request.path
    if path == prefix or path.startswith(prefix + "/"):
        return True
    # Also protect whatever route matched under the prefix, however the URL was spelled.
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    return canonical == prefix or canonical.startswith(prefix + "/")


def bearer_token(request: web.Request) -> str | None:
    """The bearer token of the request; None without bearer credentials; ApiError 400 when malformed.

    RFC 6750 §2.1: ``credentials = "Bearer" 1*SP b64token`` (the scheme is case-insensitive,
    RFC 9110 §11.1). Whether the token is a JWT is the Authenticator's question (401).
    """
    values = request.headers.getall("Authorization", [])
    if not values:
        return None
    if len(values) > 1:
        raise invalid_request_error("more than one Authorization header")
    match = _CREDENTIALS.fullmatch(values[0])
    if match is None or match["scheme"].lower() != "bearer":
        return None  # another scheme (Basic, ...): no bearer credentials at all
    separator, token, rest = match["separator"], match["token"], match["rest"]
    if not token:
        raise invalid_request_error("Bearer scheme without a token")
    if not separator or separator.strip(" "):
        raise invalid_request_error("the scheme and the token must be separated by spaces")
    if rest:
        raise invalid_request_error("unexpected data after the token")
    if not _B64TOKEN.fullmatch(token):
        raise invalid_request_error("token contains characters not allowed in a bearer token")
    return token


def _is_cors_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def auth_middleware(authenticator: Authenticator, *, protected_prefix: str = "/api/v1") -> Middleware:
    """Authenticate every request under ``protected_prefix``; sets ``request[PRINCIPAL_KEY]``.

    Auth failures are answered here (the error body from errors.py plus WWW-Authenticate), so
    the middleware works with or without an outer error-handling middleware. CORS pre-flights
    (OPTIONS with Origin and Access-Control-Request-Method) carry no credentials by design and
    pass through; any other OPTIONS request is authenticated like the rest.
    """
    prefix = protected_prefix.rstrip("/")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_cors_preflight(request) or not _is_protected(request, prefix):
            return await handler(request)
        try:
            token = bearer_token(request)
            if token is None:
                raise missing_token_error()
            principal = await authenticator.authenticate(token)
        except ApiError as err:
            _LOGGER.debug("Rejected %s %s: %s %s", request.method, request.path, err.status, err.message)
            return error_response(err)
        request[PRINCIPAL_KEY] = principal
        return await handler(request)

    return middleware


def principal_of(request: web.Request) -> Principal:
    """The principal the middleware authenticated; ApiError 401 when there is none."""
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise missing_token_error()
    return principal


def require_permission(request: web.Request, permission: str) -> Principal:
    """The request's principal if it holds ``permission``; else ApiError 403 insufficient_scope."""
    return require(principal_of(request), permission)
