"""What needs no token: the OpenAPI document, liveness, readiness and Prometheus metrics (the page: ``dashboard``)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import hdrs, web

from thermo_bridge_server.http.context import HTTP
from thermo_bridge_server.http.middlewares import OPENAPI_PATH
from thermo_bridge_server.http.params import check_query
from thermo_bridge_server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from thermo_bridge_server.store.base import Store

HEALTH_STORE_TIMEOUT = 2.0


routes = web.RouteTableDef()


@routes.get(OPENAPI_PATH)
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API (public: it holds no data)."""
    check_query(request, ())
    return web.json_response(request.app[HTTP].openapi())


async def store_error(store: Store) -> str | None:
    """Why the store does not answer a small read or cannot commit right now, or None when all is well."""
    try:
        await asyncio.wait_for(store.latest_offset(), HEALTH_STORE_TIMEOUT)
    except TimeoutError:
        return "timeout"
    except Exception as err:  # health reports any store failure, it never raises
        return type(err).__name__
    if (write_error := store.write_error) is not None:
        return f"writes failing: {write_error[:200]}"
    return None


@routes.get("/health/live")
async def liveness(request: web.Request) -> web.Response:
    """Liveness: 200 whenever the server runs and serves HTTP, whatever the broker and the store do.

    The add-on image's HEALTHCHECK asks this: a broker restarting must not get the add-on
    restarted; readiness stays on ``/health``.
    """
    check_query(request, ())
    return web.json_response({"status": "alive", "version": request.app[HTTP].settings.version})


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Readiness: 200 when the broker is connected and the store answers, else 503."""
    check_query(request, ())
    ctx = request.app[HTTP]
    broker_ok = ctx.broker.connected
    error = await store_error(ctx.store)
    store_ok, store_error_text = error is None, error
    healthy = broker_ok and store_ok
    body: dict[str, Any] = {
        "status": "ok" if healthy else "degraded",
        "version": ctx.settings.version,
        "broker": {"connected": broker_ok},
        "store": {"ok": store_ok},
    }
    if store_error_text:
        body["store"]["error"] = store_error_text
    return web.json_response(body, status=200 if healthy else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    check_query(request, ())
    text = await request.app[HTTP].metrics.render()
    return web.Response(body=text.encode(), headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})
