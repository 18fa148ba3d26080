"""What needs no token: the OpenAPI document, health and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import hdrs, web

from thermo_bridge_server.http.context import HTTP
from thermo_bridge_server.http.middlewares import OPENAPI_PATH
from thermo_bridge_server.http.params import check_query
from thermo_bridge_server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

HEALTH_STORE_TIMEOUT = 2.0

routes = web.RouteTableDef()


@routes.get(OPENAPI_PATH)
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API (public: it holds no data)."""
    check_query(request, ())
    return web.json_response(request.app[HTTP].openapi())


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness/readiness: 200 when the broker is connected and the store answers, else 503."""
    check_query(request, ())
    ctx = request.app[HTTP]
    broker_ok = ctx.broker.connected
    store_ok = True
    store_error: str | None = None
    try:
        await asyncio.wait_for(ctx.store.latest_offset(), HEALTH_STORE_TIMEOUT)
    except TimeoutError:
        store_ok, store_error = False, "timeout"
    except Exception as err:  # health reports any store failure, it never raises
        store_ok, store_error = False, type(err).__name__
    if store_ok and (write_error := ctx.store.write_error) is not None:
        store_ok, store_error = False, f"writes failing: {write_error[:200]}"
    healthy = broker_ok and store_ok
    body: dict[str, Any] = {
        "status": "ok" if healthy else "degraded",
        "version": ctx.settings.version,
        "broker": {"connected": broker_ok},
        "store": {"ok": store_ok},
    }
    if store_error:
        body["store"]["error"] = store_error
    return web.json_response(body, status=200 if healthy else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    check_query(request, ())
    text = await request.app[HTTP].metrics.render()
    return web.Response(body=text.encode(), headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})
