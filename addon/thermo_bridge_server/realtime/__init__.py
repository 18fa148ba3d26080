"""The real-time API: WebSocket and SSE streams fed from the committed event log.

``tailer`` follows the log, ``hub`` routes each event to its subscriptions, ``connection``
is one client's queue and writer, ``service`` owns them and starts streams (replay or
snapshot, then live), ``commands`` are the WebSocket commands, ``websocket`` and ``sse``
the two transports. The contract is docs/websocket.md and docs/asyncapi.yaml.
"""

from __future__ import annotations

from aiohttp import web

from thermo_bridge_server.realtime.service import Realtime, RealtimeSettings
from thermo_bridge_server.realtime.sse import create_ticket, events_handler
from thermo_bridge_server.realtime.websocket import websocket_handler

WS_PATH = "/api/v1/ws"
EVENTS_PATH = "/api/v1/events"
TICKETS_PATH = "/api/v1/events/tickets"
SELF_AUTHENTICATING = frozenset({WS_PATH, EVENTS_PATH})
"""Paths that authenticate inside the stream (WebSocket auth message, SSE ticket), not by the bearer middleware."""

REALTIME: web.AppKey[Realtime] = web.AppKey("realtime", Realtime)

routes = web.RouteTableDef()


@routes.get(WS_PATH)
async def websocket(request: web.Request) -> web.StreamResponse:
    """The WebSocket API."""
    return await websocket_handler(request, request.app[REALTIME])


@routes.get(EVENTS_PATH)
async def events(request: web.Request) -> web.StreamResponse:
    """The event stream (SSE)."""
    return await events_handler(request, request.app[REALTIME])


@routes.post(TICKETS_PATH)
async def tickets(request: web.Request) -> web.Response:
    """A single-use SSE ticket."""
    return await create_ticket(request, request.app[REALTIME])


def setup_realtime(app: web.Application, realtime: Realtime) -> None:
    """Register the streams' routes and the service."""
    app[REALTIME] = realtime
    app.router.add_routes(routes)


__all__ = [
    "EVENTS_PATH",
    "REALTIME",
    "SELF_AUTHENTICATING",
    "TICKETS_PATH",
    "WS_PATH",
    "Realtime",
    "RealtimeSettings",
    "setup_realtime",
]
