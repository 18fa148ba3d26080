"""``GET /api/v1/events``: the same events as Server-Sent Events, for clients where WebSockets are blocked.

Authentication is the bearer header or, for the browser's EventSource (which cannot send
headers), a single-use ticket from ``POST /api/v1/events/tickets``: 30 s, stored hashed in the
database so any replica accepts it, carrying the identity it was issued to. A bearer token is
never accepted in the URL. Every event's SSE id is ``<epoch>:<offset>``, so the browser's
automatic ``Last-Event-ID`` resumes exactly where the stream stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from typing import Any

from aiohttp import web

from thermo_bridge_server.auth import Principal
from thermo_bridge_server.auth.bearer import bearer_token, principal_of
from thermo_bridge_server.auth.tokens import missing_token_error, require
from thermo_bridge_server.errors import ApiError
from thermo_bridge_server.realtime.commands import EVENT_TYPES, filter_of
from thermo_bridge_server.realtime.connection import CloseCode, Connection
from thermo_bridge_server.realtime.hub import Published, Subscription
from thermo_bridge_server.realtime.service import Realtime

_LOGGER = logging.getLogger(__name__)

_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_LISTS = {"devices": (1000, 64), "kinds": (2, 16), "homes": (256, 64), "events": (len(EVENT_TYPES), 32)}


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def _principal_json(principal: Principal) -> str:
    return _COMPACT(
        {
            "sub": principal.sub,
            "permissions": sorted(principal.permissions),
            "homes": sorted(principal.homes),
            "expires_at": principal.expires_at,
        }
    )


def _principal_from_json(text: str) -> Principal:
    data = json.loads(text)
    return Principal(
        sub=data["sub"],
        permissions=frozenset(data["permissions"]),
        homes=frozenset(data["homes"]),
        expires_at=data["expires_at"],
    )


async def create_ticket(request: web.Request, realtime: Realtime) -> web.Response:
    """A single-use ticket for one EventSource connection, for the authenticated caller."""
    principal = require(principal_of(request), realtime.settings.permissions.read)
    ticket = secrets.token_urlsafe(32)
    lifetime = realtime.settings.ticket_seconds
    expires_at = time.time() + lifetime
    if principal.expires_at is not None:
        expires_at = min(expires_at, principal.expires_at)
    await realtime.store.add_ticket(_hash(ticket), _principal_json(principal), expires_at)
    return web.json_response({"ticket": ticket, "expires_in": lifetime}, status=201)


def parse_position(text: str) -> tuple[str, int]:
    """``<epoch>:<offset>`` (an SSE id) as a position; 400 otherwise."""
    epoch, sep, offset = text.strip().partition(":")
    if not sep or not epoch or len(epoch) > 64 or not offset.isdigit() or len(offset) > 16:
        raise ApiError(400, "invalid_parameter", "a position is <epoch>:<offset>", details={"parameter": "since"})
    return epoch, int(offset)


def _filters(request: web.Request) -> dict[str, list[str]]:
    allowed = {*_LISTS, "since", "ticket"}
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise ApiError(
            400,
            "invalid_parameter",
            f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}",
            details={"parameter": unknown[0]},
        )
    found: dict[str, list[str]] = {}
    for name, (most, longest) in _LISTS.items():
        values = [v.strip() for text in request.query.getall(name, []) for v in text.split(",") if v.strip()]
        if not values and name not in request.query:
            continue
        if not values or len(values) > most or any(len(v) > longest for v in values):
            raise ApiError(
                400,
                "invalid_parameter",
                f"{name} must be a comma-separated list of at most {most} values",
                details={"parameter": name},
            )
        if name == "events" and (bad := sorted(set(values) - set(EVENT_TYPES))):
            raise ApiError(
                400,
                "invalid_parameter",
                f"unknown event type {bad[0][:32]!r}; known: {', '.join(EVENT_TYPES)}",
                details={"parameter": "events"},
            )
        found[name] = values
    return found


class SseTransport:
    """Frames of an event stream: ``id``, ``event`` and ``data`` lines."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response

    def event_frame(self, subscription: Subscription, event: Published) -> str:
        """One event; its id is its position, so Last-Event-ID resumes after it."""
        return f"id: {event.epoch}:{event.offset}\nevent: {event.record.type.value}\ndata: {event.json}\n\n"

    def status_frame(self, status: dict[str, Any]) -> str:
        """``event: status`` without an id: it is no position in the log, Last-Event-ID stays."""
        return f"event: status\ndata: {_COMPACT(status)}\n\n"

    def write_now(self, frame: str) -> bool:
        """Always queued: the response's chunked encoding belongs to aiohttp's writer."""
        return False

    async def write(self, frame: str) -> None:
        """Write and flush one frame."""
        await self.response.write(frame.encode())

    async def close(self, code: int, reason: str) -> None:
        """End the stream (the client reconnects and resumes)."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.response.write_eof()


async def _authenticate(request: web.Request, realtime: Realtime) -> Principal:
    if (token := bearer_token(request)) is not None:
        principal = await realtime.authenticator.authenticate(token)
    elif (ticket := request.query.get("ticket")) is not None:
        if len(ticket) > 128:
            raise ApiError(401, "invalid_ticket", "the ticket is unknown, used or expired")
        stored = await realtime.store.take_ticket(_hash(ticket), time.time())
        if stored is None:
            raise ApiError(401, "invalid_ticket", "the ticket is unknown, used or expired")
        principal = _principal_from_json(stored)
    else:
        raise missing_token_error()
    return require(principal, realtime.settings.permissions.read)


async def events_handler(request: web.Request, realtime: Realtime) -> web.StreamResponse:
    """Stream the matching events; resume from ``Last-Event-ID`` or ``since``."""
    filters = _filters(request)
    principal = await _authenticate(request, realtime)
    access = await realtime.policy.resolve(principal, realtime.settings.permissions.read)
    resume = request.headers.get("Last-Event-ID") or request.query.get("since")
    since = parse_position(resume) if resume else None
    if not realtime.accepting:
        raise ApiError(503, "shutting_down", "the server is shutting down", headers={"Retry-After": "1"})
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # proxies must not hold events back
        }
    )
    conn = Connection(SseTransport(response), access, realtime.hub, on_closed=realtime.release)
    realtime.admit(principal, conn)
    conn.send_status(realtime.status())  # the first message; later changes follow as they happen
    try:
        await response.prepare(request)
        conn.start()
        sub = Subscription(1, conn, filter_of(filters))

        def announce(result: dict[str, Any]) -> None:
            snapshot = result.pop("snapshot", None)
            conn.send(f"event: ready\ndata: {_COMPACT(result)}\n\n")
            if snapshot is not None:
                conn.send(f"event: snapshot\ndata: {_COMPACT(snapshot)}\n\n")

        await realtime.start_stream(conn, sub, since, snapshot=True, announce=announce)
        await _keep_alive(conn, principal, realtime, request)
    finally:
        if not conn.closing:
            conn.finish(CloseCode.NORMAL, "closed", drop_queue=True)
        await conn.wait_closed()
    return response


async def _keep_alive(conn: Connection, principal: Principal, realtime: Realtime, request: web.Request) -> None:
    """Comment lines while idle; end at the token's expiry or when the client or server goes."""
    interval = realtime.settings.sse_keepalive
    while not conn.closing:
        now = time.time()
        if principal.expires_at is not None and now >= principal.expires_at:
            conn.send("event: token_expired\ndata: {}\n\n")
            conn.finish(CloseCode.TOKEN_EXPIRED, "token_expired")
            return
        transport = request.transport
        if transport is None or transport.is_closing():
            conn.finish(CloseCode.GOING_AWAY, "client gone", drop_queue=True)
            return
        # Wake at the token's expiry too: the stream must not outlive it by a keep-alive interval.
        wait = interval if principal.expires_at is None else min(interval, principal.expires_at - now)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await conn.done.wait()
        if not conn.closing and conn.pending == 0 and wait >= interval:
            conn.send(": keep-alive\n\n")
