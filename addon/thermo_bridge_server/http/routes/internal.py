"""``/internal/v1/status``: the server's figures for Home Assistant's Thermo Bridge integration.

Outside the Auth0-protected ``/api/v1``: it accepts only the server's internal token
(``auth/internal.py``), compared in constant time, and tells nothing about any device.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from thermo_bridge_server.auth.bearer import bearer_token
from thermo_bridge_server.auth.internal import token_matches
from thermo_bridge_server.errors import ApiError
from thermo_bridge_server.http.context import HTTP
from thermo_bridge_server.http.params import check_query
from thermo_bridge_server.http.routes.public import store_error

INTERNAL_PREFIX = "/internal/v1"

routes = web.RouteTableDef()


@routes.get(f"{INTERNAL_PREFIX}/status")
async def status(request: web.Request) -> web.Response:
    """Version, readiness and load figures, for the internal token's holder only."""
    ctx = request.app[HTTP]
    if ctx.internal is None:
        raise ApiError(404, "not_found", "no such resource")
    if not token_matches(ctx.internal.token, bearer_token(request)):
        raise ApiError(
            401,
            "invalid_token",
            "this endpoint takes the server's internal token",
            headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="thermo_bridge internal"'},
        )
    check_query(request, ())
    body = {
        "version": ctx.settings.version,
        "broker_connected": ctx.broker.connected,
        "store_ok": await store_error(ctx.store) is None,
        **await ctx.internal.figures(),
    }
    return web.json_response(body)
