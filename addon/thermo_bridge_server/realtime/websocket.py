"""``GET /api/v1/ws``: the WebSocket API (docs/websocket.md), Home Assistant style.

The handshake checks ``Origin`` (cross-site WebSocket hijacking) and caps connections still in
the auth phase per address. Then the auth phase: ``auth_required``, the client's ``auth``
within the timeout, ``auth_ok`` or ``auth_invalid`` and close. Then every message is a
command with an increasing id, dispatched to ``commands.py``; each runs as its own task so a
slow one (a long replay) does not hold up the others, and each gets exactly one result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any, Final, NoReturn

import voluptuous as vol
from aiohttp import WSMsgType, hdrs, web

from thermo_bridge_server.auth import Principal
from thermo_bridge_server.errors import ApiError
from thermo_bridge_server.ratelimit import RateLimiter
from thermo_bridge_server.realtime.commands import COMMANDS, MESSAGE_ID
from thermo_bridge_server.realtime.connection import CloseCode, Connection
from thermo_bridge_server.realtime.hub import Published, Subscription
from thermo_bridge_server.realtime.service import Realtime

_LOGGER = logging.getLogger(__name__)

_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
MAX_COMMANDS_IN_FLIGHT: Final = 32


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _decode(text: str) -> Any:  # noqa: ANN401 - any JSON value
    return json.loads(text, parse_constant=_reject_constant)


def origin_allowed(request: web.Request, realtime: Realtime) -> bool:
    """Whether the handshake's ``Origin`` may open a socket (the server's own origin always may)."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return realtime.settings.allow_no_origin
    allowed = realtime.settings.allowed_origins
    if origin in allowed or "*" in allowed:
        return True
    if origin == f"{request.scheme}://{request.host}":
        return True
    proxied = realtime.settings.proxied_origin
    return proxied is not None and proxied(request, origin)


DIRECT_WRITE_LIMIT: Final = 64 * 1024
"""Bytes the socket's transport may hold before frames wait in the connection's queue instead."""


class WsTransport:
    """Frames of a WebSocket: one JSON message per text frame."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request

    def write_now(self, frame: str) -> bool:
        """An unmasked text frame (RFC 6455 §5.2) straight to the transport while it has room.

        aiohttp's own writes (pings, close) are whole frames too, so frames never interleave;
        compression is off on these sockets, so a frame is its header and its payload.
        """
        transport = self.request.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            return False
        if transport.get_write_buffer_size() > DIRECT_WRITE_LIMIT:
            return False
        payload = frame.encode()
        size = len(payload)
        if size < 126:
            header = bytes((0x81, size))
        elif size < 65536:
            header = bytes((0x81, 126)) + size.to_bytes(2, "big")
        else:
            header = bytes((0x81, 127)) + size.to_bytes(8, "big")
        transport.write(header + payload)
        return True

    def event_frame(self, subscription: Subscription, event: Published) -> str:
        """``{"id": <subscription>, "type": "event", "event": {...}}`` around the once-encoded event."""
        return f'{{"id":{subscription.id},"type":"event","event":{event.json}}}'

    def status_frame(self, status: dict[str, Any]) -> str:
        """``{"type": "status", "broker": {...}}``."""
        return _COMPACT({"type": "status", **status})

    async def write(self, frame: str) -> None:
        """Write one text frame."""
        await self.ws.send_str(frame)

    async def close(self, code: int, reason: str) -> None:
        """Close the socket."""
        await self.ws.close(code=code, message=reason.encode()[:123])


class Session:
    """One authenticated WebSocket: its principal, its connection and its in-flight commands."""

    NO_RESULT: Final = object()
    """A handler's return value when it sent its result itself (or a pong)."""

    def __init__(self, realtime: Realtime, conn: Connection, principal: Principal) -> None:
        self.realtime = realtime
        self.conn = conn
        self.principal = principal
        self.last_id = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.device_turns: dict[str, tuple[asyncio.Lock, int]] = {}
        """Per device: the lock its send_commands take in message order, and how many hold or wait."""
        rate = realtime.settings.messages_per_second
        self.limiter = RateLimiter(rate * 60, burst=rate * 2, max_users=1)
        self._expiry: asyncio.TimerHandle | None = None
        self._grace: asyncio.TimerHandle | None = None
        self.watch_expiry()

    # ---------------------------------------------------------------- sending
    def send_json(self, message: dict[str, Any]) -> None:
        """Queue a message."""
        self.conn.send(_COMPACT(message))

    def send_result(self, msg_id: int | None, result: Any) -> None:  # noqa: ANN401 - any JSON value
        """Queue a successful result."""
        self.send_json({"id": msg_id, "type": "result", "success": True, "result": result})

    def send_error(self, msg_id: int | None, err: ApiError) -> None:
        """Queue a failed result."""
        error: dict[str, Any] = {"code": err.code, "message": err.message}
        if err.details:
            error["details"] = err.details
        self.send_json({"id": msg_id, "type": "result", "success": False, "error": error})

    @contextlib.asynccontextmanager
    async def device_turn(self, device_id: str) -> AsyncIterator[None]:
        """Hold ``device_id``'s turn: this connection's commands to a device leave in message order.

        Handlers run concurrently and their store reads finish in any order; without a turn,
        setpoints sent 20, 20.5, 21 could reach the device as 20, 21, 20.5. The turn covers
        the checks and the publish, not the wait for the device's answer.
        """
        lock, users = self.device_turns.get(device_id) or (asyncio.Lock(), 0)
        self.device_turns[device_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self.device_turns[device_id]
            if users == 1:
                del self.device_turns[device_id]
            else:
                self.device_turns[device_id] = (lock, users - 1)

    # ---------------------------------------------------------------- token expiry and refresh
    def watch_expiry(self) -> None:
        """At the token's expiry warn the client; close after the grace unless it refreshed."""
        for handle in (self._expiry, self._grace):
            if handle is not None:
                handle.cancel()
        self._expiry = self._grace = None
        expires_at = self.principal.expires_at
        if expires_at is None:
            return
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(max(0.0, expires_at - time.time()), self._expired)

    def _expired(self) -> None:
        self.send_json({"type": "token_expired"})
        self._grace = asyncio.get_running_loop().call_later(
            self.realtime.settings.expiry_grace,
            lambda: self.conn.finish(CloseCode.TOKEN_EXPIRED, "token_expired"),
        )

    async def refresh(self, token: str) -> dict[str, Any]:
        """A new token for the same user: new expiry, access recomputed (homes claim, grants)."""
        principal = await self.realtime.authenticator.authenticate(token)
        if principal.sub != self.principal.sub:
            raise ApiError(403, "sub_mismatch", "a refreshed token must be for the same user")
        access = await self.realtime.policy.resolve(principal, self.realtime.settings.permissions.read)
        self.principal = principal
        self.realtime.reauthenticate(self.conn, principal)
        self.conn.set_access(access)
        self.watch_expiry()
        return {
            "sub": principal.sub,
            "permissions": sorted(principal.permissions),
            "expires_at": principal.expires_at,
        }

    def stop(self) -> None:
        """Cancel timers and commands in flight."""
        for handle in (self._expiry, self._grace):
            if handle is not None:
                handle.cancel()
        for task in self.tasks:
            task.cancel()

    # ---------------------------------------------------------------- messages
    def handle(self, text: str) -> None:
        """Validate one client message and run its command (as a task)."""
        try:
            msg = _decode(text)
        except (ValueError, RecursionError):
            self.send_error(None, ApiError(400, "invalid_message", "the message is not valid JSON"))
            return
        if not isinstance(msg, dict):
            self.send_error(None, ApiError(400, "invalid_message", "a message must be a JSON object"))
            return
        try:
            msg_id: int = MESSAGE_ID(msg.get("id"))
        except vol.Invalid:
            self.send_error(None, ApiError(400, "invalid_message", "the message needs an integer id >= 1"))
            return
        if msg_id <= self.last_id:
            self.send_error(msg_id, ApiError(400, "id_reuse", f"ids must increase (the last was {self.last_id})"))
            return
        self.last_id = msg_id
        kind = msg.get("type")
        entry = COMMANDS.get(kind) if isinstance(kind, str) else None
        if entry is None:
            shown = kind[:40] if isinstance(kind, str) else type(kind).__name__
            self.send_error(msg_id, ApiError(400, "unknown_command", f"unknown message type {shown!r}"))
            return
        schema, handler = entry
        try:
            valid = schema(msg)
        except vol.MultipleInvalid as err:
            first = err.errors[0]
            path = ".".join(str(p) for p in first.path) or None
            self.send_error(
                msg_id,
                ApiError(400, "invalid_message", f"{first.msg} at {path or 'the message'}", details={"path": path}),
            )
            return
        if len(self.tasks) >= MAX_COMMANDS_IN_FLIGHT:
            self.send_error(msg_id, ApiError(429, "too_many_requests", "too many commands in flight"))
            return
        task = asyncio.get_running_loop().create_task(self._run(handler, valid))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, handler: Any, msg: dict[str, Any]) -> None:  # noqa: ANN401 - a commands.Handler
        try:
            result = await handler(self, msg)
        except ApiError as err:
            self.send_error(msg["id"], err)
        except asyncio.CancelledError:
            raise
        except Exception:
            _LOGGER.exception("WebSocket command %s failed", msg.get("type"))
            self.send_error(msg["id"], ApiError(500, "internal_error", "internal server error"))
        else:
            if result is not self.NO_RESULT:
                self.send_result(msg["id"], result)


def _refuse(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> NoReturn:
    raise ApiError(status, code, message, headers=headers)


async def websocket_handler(request: web.Request, realtime: Realtime) -> web.StreamResponse:
    """The handshake, the auth phase, then commands until either side closes."""
    if not web.WebSocketResponse().can_prepare(request).ok:
        _refuse(
            426, "upgrade_required", "this is the WebSocket API: send a WebSocket upgrade", {"Upgrade": "websocket"}
        )
    if not origin_allowed(request, realtime):
        _refuse(403, "origin_not_allowed", "this origin may not open a WebSocket to this server")
    if not realtime.accepting:
        _refuse(503, "shutting_down", "the server is shutting down", {"Retry-After": "1"})
    settings = realtime.settings
    address = settings.client_address(request)
    if (wait := realtime.handshake_limiter.take(address)) > 0:
        realtime.stats["handshakes_rate_limited_total"] += 1
        retry = max(1, math.ceil(wait))
        _refuse(
            429,
            "rate_limited",
            f"too many WebSocket handshakes from this address; retry in {retry} s",
            {"Retry-After": str(retry)},
        )
    if realtime.unauthenticated[address] >= settings.max_unauthenticated_per_address:
        _refuse(429, "too_many_connections", "too many connections waiting to authenticate", {"Retry-After": "5"})
    # No permessage-deflate: the messages are small JSON, where zlib costs more CPU per frame
    # than it saves on the wire (and frames can then be written without aiohttp's writer).
    ws = web.WebSocketResponse(heartbeat=settings.heartbeat, max_msg_size=settings.max_message_bytes, compress=False)
    realtime.unauthenticated[address] += 1
    try:
        await ws.prepare(request)
        principal = await _auth_phase(ws, realtime)
    finally:
        realtime.unauthenticated[address] -= 1
        if realtime.unauthenticated[address] <= 0:
            del realtime.unauthenticated[address]
    if principal is None:
        return ws
    await _serve(ws, request, realtime, principal)
    return ws


async def _auth_phase(ws: web.WebSocketResponse, realtime: Realtime) -> Principal | None:
    """``auth_required`` → ``auth`` → ``auth_ok``; None (and the socket closed) when it fails."""
    await ws.send_str(_COMPACT({"type": "auth_required", "version": realtime.settings.version}))
    try:
        msg = await ws.receive(timeout=realtime.settings.auth_timeout)
    except TimeoutError:
        realtime.stats["auth_timeouts_total"] += 1
        await ws.close(code=CloseCode.AUTH_TIMEOUT, message=b"auth_timeout")
        return None
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return None  # the client went away during the auth phase
    if msg.type is not WSMsgType.TEXT:
        await _auth_invalid(ws, realtime, ApiError(400, "invalid_message", "messages are JSON text frames"))
        return None
    try:
        data = _decode(msg.data)
        if not isinstance(data, dict) or data.get("type") != "auth" or set(data) != {"type", "access_token"}:
            raise ApiError(400, "invalid_message", 'the first message must be {"type": "auth", "access_token": ...}')
        token = data["access_token"]
        if not isinstance(token, str) or not token:
            raise ApiError(400, "invalid_message", "access_token must be a non-empty string")
        principal = await realtime.authenticator.authenticate(token)
        await realtime.policy.resolve(principal, realtime.settings.permissions.read)
    except (ValueError, RecursionError):
        await _auth_invalid(ws, realtime, ApiError(400, "invalid_message", "the message is not valid JSON"))
        return None
    except ApiError as err:
        await _auth_invalid(ws, realtime, err)
        return None
    return principal


async def _auth_invalid(ws: web.WebSocketResponse, realtime: Realtime, err: ApiError) -> None:
    realtime.stats["auth_failures_total"] += 1
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(_COMPACT({"type": "auth_invalid", "code": err.code, "message": err.message}))
        await ws.close(code=CloseCode.AUTH_INVALID, message=b"auth_invalid")


async def _serve(ws: web.WebSocketResponse, request: web.Request, realtime: Realtime, principal: Principal) -> None:
    access = await realtime.policy.resolve(principal, realtime.settings.permissions.read)
    conn = Connection(WsTransport(ws, request), access, realtime.hub, on_closed=realtime.release)
    try:
        realtime.admit(principal, conn)
    except ApiError as err:
        await ws.send_str(_COMPACT({"type": "auth_invalid", "code": err.code, "message": err.message}))
        await ws.close(code=CloseCode.TOO_MANY, message=err.code.encode())
        return
    session = Session(realtime, conn, principal)
    conn.start()
    session.send_json(
        {
            "type": "auth_ok",
            "version": realtime.settings.version,
            "sub": principal.sub,
            "permissions": sorted(principal.permissions),
            "expires_at": principal.expires_at,
            "epoch": realtime.store.epoch,
            "offset": realtime.hub.position,
            "status": realtime.status(),
        }
    )
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if session.limiter.take("messages") > 0:
                    conn.finish(CloseCode.TOO_MANY, "too_many_messages", drop_queue=True)
                    break
                session.handle(msg.data)
            elif msg.type is WSMsgType.BINARY:
                session.send_error(None, ApiError(400, "invalid_message", "messages are JSON text frames"))
            elif msg.type is WSMsgType.ERROR:
                _LOGGER.debug("WebSocket error: %s", ws.exception())
                break
    finally:
        session.stop()
        if not conn.closing:
            conn.finish(ws.close_code or CloseCode.NORMAL, "closed", drop_queue=True)
        await conn.wait_closed()
