"""The real-time service: the hub and tailer of this process, its open streams, and how a stream starts.

A stream starts the same way on a WebSocket subscription and on SSE (``start_stream``): the
subscription is routed first, buffering live events, and only then is the position read, so
nothing can fall between the past and the live part:

* resumable (same epoch, offset still in the log): replay (offset, P] from the log, where P is
  the hub's position when routing began, then the buffered events after P;
* otherwise: a snapshot read in one transaction at log offset S (S >= P), then the buffered
  events after S.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from thermo_bridge_server.access import Access, AccessPolicy, Permissions
from thermo_bridge_server.auth import Authenticator, Principal
from thermo_bridge_server.errors import ApiError
from thermo_bridge_server.ratelimit import ClientAddress, RateLimiter
from thermo_bridge_server.realtime.connection import MAX_PENDING, CloseCode, Connection
from thermo_bridge_server.realtime.hub import Hub, Published, Subscription, visible
from thermo_bridge_server.realtime.tailer import Tailer
from thermo_bridge_server.resources import device_json, state_json
from thermo_bridge_server.services import CommandSender
from thermo_bridge_server.store.base import Store

_LOGGER = logging.getLogger(__name__)

REPLAY_BATCH = 1000
SHUTDOWN_DRAIN_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class RealtimeSettings:
    """Limits and policies of the real-time API (docs/websocket.md)."""

    version: str = "0.0.0"
    permissions: Permissions = field(default_factory=Permissions)
    allowed_origins: tuple[str, ...] = ()
    allow_no_origin: bool = False
    max_connections_per_user: int = 20
    max_unauthenticated_per_address: int = 20
    handshakes_per_minute: int = 120
    max_subscriptions: int = 100
    max_message_bytes: int = 64 * 1024
    auth_timeout: float = 10.0
    expiry_grace: float = 30.0
    messages_per_second: float = 50.0
    heartbeat: float = 20.0
    sse_keepalive: float = 15.0
    ticket_seconds: float = 30.0
    proxied_origin: Callable[[web.Request, str], bool] | None = None
    """An ``Origin`` that a trusted proxy vouches for (Home Assistant's, under ingress)."""
    client_address: ClientAddress = field(default_factory=ClientAddress)
    """The address the per-address limits count (the client behind trusted proxies)."""


class Realtime:
    """Owns this process's hub and tailer and every open WebSocket/SSE stream."""

    def __init__(  # noqa: PLR0917 - the service's collaborators, each needed
        self,
        store: Store,
        authenticator: Authenticator,
        policy: AccessPolicy,
        sender: CommandSender,
        settings: RealtimeSettings,
        command_limiter: RateLimiter,
    ) -> None:
        self.store = store
        self.authenticator = authenticator
        self.policy = policy
        self.sender = sender
        self.settings = settings
        self.command_limiter = command_limiter
        self.hub = Hub(lambda: store.epoch)
        self.tailer = Tailer(store, self.hub)
        self.connections: set[Connection] = set()
        self._by_sub: dict[str, set[Connection]] = {}
        self._principals: dict[Connection, Principal] = {}
        self.unauthenticated: Counter[str] = Counter()
        self.handshake_limiter = RateLimiter(settings.handshakes_per_minute)
        """WebSocket handshakes per client address."""
        self.accepting = True
        self.stats: Counter[str] = Counter()
        self.hub.grant_listeners.append(self._grants_changed)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.broker_connected = False
        self.broker_since = time.time()

    # ---------------------------------------------------------------- server status
    def status(self) -> dict[str, Any]:
        """What a client should know about the server's side of the devices (docs/websocket.md)."""
        return {"broker": {"connected": self.broker_connected, "since": self.broker_since}}

    def broker_changed(self, connected: bool) -> None:
        """The MQTT connection came up or was lost: tell every open stream (never part of the event log)."""
        if connected == self.broker_connected:
            return
        self.broker_connected = connected
        self.broker_since = time.time()
        self.stats["status_changes_total"] += 1
        status = self.status()
        for conn in list(self.connections):
            conn.send_status(status)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Follow the log."""
        await self.tailer.start()

    async def drain(self, seconds: float = SHUTDOWN_DRAIN_SECONDS) -> None:
        """Graceful shutdown: route everything committed, write it out, close every stream with 1001.

        Called once the ingest stopped and the store committed what was queued, so the offset
        in each close reason is the end of what this server will ever send.
        """
        self.accepting = False
        try:
            async with asyncio.timeout(seconds):
                await self.tailer.caught_up(await self.store.latest_offset())
        except TimeoutError:
            _LOGGER.warning("Shutdown: the event log was not fully routed within %.0f s", seconds)
        except Exception as err:  # the store may already be failing: close the streams anyway
            _LOGGER.warning("Shutdown: could not read the event log's end (%s)", err)
        epoch = self.store.epoch
        await asyncio.gather(
            *(
                conn.close_after_drain(CloseCode.GOING_AWAY, conn.position_reason("going_away", epoch), seconds)
                for conn in list(self.connections)
            ),
            return_exceptions=True,
        )

    async def stop(self) -> None:
        """Stop following the log."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.tailer.stop()

    # ---------------------------------------------------------------- connections
    def admit(self, principal: Principal, conn: Connection) -> None:
        """Register an authenticated stream; ApiError when its user holds too many."""
        if not self.accepting:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        streams = self._by_sub.setdefault(principal.sub, set())
        if len(streams) >= self.settings.max_connections_per_user:
            raise ApiError(
                429, "too_many_connections", f"at most {self.settings.max_connections_per_user} streams per user"
            )
        streams.add(conn)
        self.connections.add(conn)
        self._principals[conn] = principal
        self.stats["connections_total"] += 1

    def release(self, conn: Connection) -> None:
        """Forget a closed stream (``Connection``'s on_closed)."""
        self.connections.discard(conn)
        principal = self._principals.pop(conn, None)
        if principal is not None:
            streams = self._by_sub.get(principal.sub)
            if streams is not None:
                streams.discard(conn)
                if not streams:
                    del self._by_sub[principal.sub]
        if conn.close_code == CloseCode.SLOW_CONSUMER:
            self.stats["slow_consumers_total"] += 1

    def reauthenticate(self, conn: Connection, principal: Principal) -> None:
        """A refreshed token for an open stream (same user): remember it."""
        self._principals[conn] = principal

    def figures(self) -> dict[str, int]:
        """Open streams, subscriptions and counters (for /metrics and the linked integration)."""
        return {
            "connections": len(self.connections),
            "subscriptions": self.hub.subscriptions,
            "events_routed_total": self.hub.published_total,
            "log_reads_total": self.tailer.reads_total,
            "doorbell_direct_total": self.tailer.direct_total,
            **self.stats,
        }

    def _grants_changed(self, sub: str) -> None:
        """A user's grants changed (on any replica): recompute the access of that user's streams."""
        for conn in list(self._by_sub.get(sub, ())):
            principal = self._principals.get(conn)
            if principal is not None:
                self._spawn(self._refresh_access(conn, principal))

    async def _refresh_access(self, conn: Connection, principal: Principal) -> None:
        try:
            access = await self.policy.resolve(principal, self.settings.permissions.read)
        except ApiError:
            conn.finish(CloseCode.AUTH_INVALID, "access_revoked", drop_queue=True)
            return
        except Exception as err:  # the store is briefly unavailable: keep the old access for now
            _LOGGER.warning("Could not recompute a stream's access after a grants change: %s", err)
            return
        if not conn.closing:
            conn.set_access(access)

    def _spawn(self, coro: Any) -> None:  # noqa: ANN401 - a coroutine
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- streams
    async def start_stream(
        self,
        conn: Connection,
        sub: Subscription,
        since: tuple[str, int] | None,
        *,
        snapshot: bool,
        announce: Callable[[dict[str, Any]], None],
    ) -> None:
        """Route ``sub``, tell the client where it starts (``announce``), replay or snapshot, then go live."""
        conn.subscribe(sub)
        position = self.hub.position
        store = self.store
        epoch = store.epoch
        reason = "no_position"
        if since is not None:
            reason = "epoch_changed"
            if since[0] == epoch:
                earliest = await store.earliest_offset()
                if since[1] > position:
                    reason = "offset_unknown"
                elif since[1] < earliest - 1:
                    reason = "offset_expired"
                else:
                    announce({"recovered": True, "epoch": epoch, "offset": position})
                    await self._replay(conn, sub, since[1], position)
                    if not conn.closing:
                        conn.go_live(sub, after=position)
                    return
        start = position
        result: dict[str, Any] = {"recovered": False, "reason": reason, "epoch": epoch}
        if snapshot:
            snap = await store.snapshot(
                _effective_homes(conn.access, sub.filter.homes), devices=sub.filter.devices, kinds=sub.filter.kinds
            )
            start = snap.offset
            result["snapshot"] = {
                "devices": [
                    {**device_json(device), "state": state_json(device.device_id, state)}
                    for device, state in snap.devices
                ]
            }
        result["offset"] = start
        announce(result)
        conn.go_live(sub, after=start)

    async def _replay(self, conn: Connection, sub: Subscription, after: int, until: int) -> None:
        """Deliver the log's matching events in (after, until], pacing on the connection's queue."""
        homes = _effective_homes(conn.access, sub.filter.homes)
        epoch = self.store.epoch
        cursor = after
        while cursor < until and not conn.closing and conn.subscriptions.get(sub.id) is sub:
            records = await self.store.events_since(cursor, limit=REPLAY_BATCH, homes=homes)
            if not records:
                return
            for record in records:
                if record.offset > until:
                    return
                event = Published(record, epoch, self.hub.kind_of(record.device_id))
                if sub.filter.matches(event) and visible(conn.access, record):
                    conn.deliver(sub, event)
            cursor = records[-1].offset
            self.stats["replayed_total"] += len(records)
            await conn.drained(below=MAX_PENDING // 2)


def _effective_homes(access: Access, wanted: frozenset[str] | None) -> frozenset[str] | None:
    """The homes a read may touch: what the caller sees, narrowed by its filter (None: all)."""
    if access.homes is None:
        return wanted
    return access.homes if wanted is None else access.homes & wanted
