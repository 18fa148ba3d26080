"""The dashboard (``/`` and ``/assets/``), its public configuration and the panel's tokens.

The page is built by ``clients/dashboard`` (esbuild) into ``http/dashboard/``, committed and
shipped in the package. Asset names carry their content hash, so they are cached for a year;
``index.html`` is revalidated on every load and carries the page's own security headers. Every
URL in the page is relative: it works at ``/`` and under Home Assistant's ingress prefix.
"""

from __future__ import annotations

import functools
import gzip
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web

from thermo_bridge_server.auth.ingress import INGRESS_TOKEN_TTL, SUB_PREFIX, valid_user_id
from thermo_bridge_server.errors import ApiError
from thermo_bridge_server.http.context import HTTP
from thermo_bridge_server.http.middlewares import (
    CLIENT_CONFIG_PATH,
    INGRESS_TOKEN_PATH,
    page_security_headers,
    served_under_ingress,
)
from thermo_bridge_server.http.params import check_query

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
IMMUTABLE = "public, max-age=31536000, immutable"
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".txt": "text/plain"}
_ASSET_NAME = re.compile(r"[A-Za-z0-9_-]+-[A-Z0-9]{8}\.(js|css|txt)")
# The Supervisor passes these with every ingress request (supervisor/api/ingress.py, _init_header).
REMOTE_USER_ID = "X-Remote-User-Id"
REMOTE_USER_NAME = "X-Remote-User-Name"
REMOTE_USER_DISPLAY_NAME = "X-Remote-User-Display-Name"
# What Auth0 appends when it sends the user back to the page.
_INDEX_QUERY = ("code", "state", "error", "error_description", "bench")

routes = web.RouteTableDef()


@dataclass(frozen=True, slots=True)
class Asset:
    """One built file, and its gzip form."""

    body: bytes
    gzipped: bytes
    content_type: str


@functools.cache
def _assets() -> dict[str, Asset]:
    """Every built file, read and compressed once.

    A request can only pick one of them: no name a client makes up is read from disk or kept.
    """
    assets: dict[str, Asset] = {}
    for path in DASHBOARD_DIR.rglob("*"):
        if path.is_file():
            body = path.read_bytes()
            content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
            name = path.relative_to(DASHBOARD_DIR).as_posix()
            assets[name] = Asset(body, gzip.compress(body, 9, mtime=0), content_type)
    return assets


def _asset(relative: str) -> Asset | None:
    return _assets().get(relative)


def _send(request: web.Request, asset: Asset, headers: dict[str, str]) -> web.Response:
    accepts_gzip = "gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, "").lower()
    headers = {**headers, hdrs.VARY: hdrs.ACCEPT_ENCODING}
    if accepts_gzip:
        headers[hdrs.CONTENT_ENCODING] = "gzip"
    return web.Response(
        body=asset.gzipped if accepts_gzip else asset.body,
        content_type=asset.content_type,
        charset="utf-8",
        headers=headers,
    )


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    """The dashboard; also where Home Assistant's device page (*Visit*) and the ingress panel open."""
    check_query(request, _INDEX_QUERY)
    asset = _asset("index.html")
    if asset is None:  # a source checkout whose page was never built
        raise ApiError(503, "dashboard_missing", "the dashboard is not built: scripts/setup builds it")
    headers = page_security_headers(request.app[HTTP].settings.page_auth_origin, ingress=served_under_ingress(request))
    return _send(request, asset, headers)


@routes.get("/assets/{name}")
async def asset_file(request: web.Request) -> web.Response:
    """A content-hashed module of the page: never changes under its name."""
    check_query(request, ())
    name = request.match_info["name"]
    asset = _asset(f"assets/{name}") if _ASSET_NAME.fullmatch(name) else None
    if asset is None:
        raise ApiError(404, "not_found", f"no such resource: {request.path[:120]}")
    return _send(request, asset, {hdrs.CACHE_CONTROL: IMMUTABLE})


@routes.get(CLIENT_CONFIG_PATH)
async def client_config(request: web.Request) -> web.Response:
    """What the page needs before any login: how it signs in (public: no secret in it)."""
    check_query(request, ())
    ctx = request.app[HTTP]
    if ctx.ingress is not None and served_under_ingress(request):
        user = request.headers.get(REMOTE_USER_DISPLAY_NAME) or request.headers.get(REMOTE_USER_NAME)
        auth: dict[str, object] = {"mode": "ingress", "user": user or None}
    else:
        auth = dict(ctx.settings.page_auth)
    return web.json_response({"version": ctx.settings.version, "auth": auth})


@routes.post(INGRESS_TOKEN_PATH)
async def ingress_token(request: web.Request) -> web.Response:
    """A short-lived token for the Home Assistant user the Supervisor's ingress proxy names.

    Only from the proxy's address (``served_under_ingress``), and only when this server trusts
    ingress (the add-on): the same headers from anywhere else are ignored and answered 403.
    """
    check_query(request, ())
    ctx = request.app[HTTP]
    if ctx.ingress is None or not served_under_ingress(request):
        raise ApiError(403, "not_ingress", "panel tokens are only for Home Assistant's ingress proxy")
    user_id = request.headers.get(REMOTE_USER_ID)
    if not valid_user_id(user_id):
        raise ApiError(403, "no_ingress_user", "the ingress proxy named no Home Assistant user")
    assert user_id is not None  # noqa: S101 - valid_user_id refused None
    name = request.headers.get(REMOTE_USER_DISPLAY_NAME) or request.headers.get(REMOTE_USER_NAME)
    token, expires_at = ctx.ingress.mint(user_id, name=name)
    return web.json_response(
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_at": expires_at,
            "expires_in": INGRESS_TOKEN_TTL,
            "sub": SUB_PREFIX + user_id,
            "permissions": list(ctx.ingress.permissions),
        }
    )
