"""One client's stream: its access, its subscriptions, and its own bounded queue and writer.

The hub never waits on a socket: it appends frames to the connection's queue and returns, and
each connection's writer task drains its own queue. A client that cannot keep up (more than
``MAX_PENDING`` frames waiting, or more than ``PEAK_PENDING`` for ``PEAK_SECONDS``) is closed
with ``slow_consumer`` and the offset of the last event written to it, so it can resume; the
others are not delayed by it. WebSocket and SSE differ only in how a frame is written and
closed (``Transport``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from thermo_bridge_server.access import Access
from thermo_bridge_server.realtime.hub import Hub, Published, Subscription

_LOGGER = logging.getLogger(__name__)

MAX_PENDING = 4096
PEAK_PENDING = 1024
PEAK_SECONDS = 10.0


class CloseCode:
    """WebSocket close codes (docs/websocket.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_BIG = 1009
    AUTH_TIMEOUT = 4001
    AUTH_INVALID = 4002
    TOKEN_EXPIRED = 4003
    SLOW_CONSUMER = 4008
    TOO_MANY = 4029


class Transport(Protocol):
    """How frames reach the client."""

    def event_frame(self, subscription: Subscription, event: Published) -> str:
        """The text written for ``event`` on ``subscription``."""
        ...

    def status_frame(self, status: dict[str, Any]) -> str:
        """The text written for a server status message (docs/websocket.md, "Server status")."""
        ...

    def write_now(self, frame: str) -> bool:
        """Write ``frame`` at once if the socket can take it without waiting; False to queue it instead."""
        ...

    async def write(self, frame: str) -> None:
        """Write one frame (raises ConnectionError once the peer is gone)."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close the stream with ``code`` (WebSocket) and ``reason``."""
        ...


class Connection:
    """Per-connection state and the writer that drains its queue."""

    def __init__(
        self, transport: Transport, access: Access, hub: Hub, *, on_closed: Callable[[Connection], None]
    ) -> None:
        self.transport = transport
        self.access = access
        self.hub = hub
        self.subscriptions: dict[int, Subscription] = {}
        self.commands: dict[str, Subscription] = {}  # send_command streams by command id
        self.last_offset = 0  # the offset of the last event frame written
        self.closing = False
        self.done = asyncio.Event()  # set once the connection stops routing (it is closing)
        self.close_code: int | None = None
        self._on_closed = on_closed
        self._queue: deque[tuple[str, int]] = deque()
        self._ready: asyncio.Future[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (queue length to wait for, future)
        self._peak: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.sent = 0

    # ---------------------------------------------------------------- queue
    def start(self) -> None:
        """Start the writer."""
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="thermo_bridge stream writer")

    def send(self, frame: str, offset: int = 0) -> None:
        """Queue a frame; ``offset`` > 0 marks an event frame (for the resume position)."""
        if self.closing:
            return
        queue = self._queue
        ready = self._ready
        # The fast path: nothing waiting and the writer idle, so the frame goes out now without
        # a task switch (a broadcast to N sockets would otherwise be N wake-ups).
        if not queue and ready is not None and not ready.done() and self.transport.write_now(frame):
            self.sent += 1
            if offset:
                self.last_offset = offset
            return
        queue.append((frame, offset))
        size = len(queue)
        if size >= MAX_PENDING:
            self.abort_slow()
            return
        if size > PEAK_PENDING and self._peak is None:
            self._peak = asyncio.get_running_loop().call_later(PEAK_SECONDS, self._check_peak)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def send_status(self, status: dict[str, Any]) -> None:
        """Queue a server status message (not an event of the log: it carries no offset)."""
        self.send(self.transport.status_frame(status))

    def deliver(self, subscription: Subscription, event: Published) -> None:
        """The hub's entry point: queue ``event`` for ``subscription``."""
        self.send(self.transport.event_frame(subscription, event), event.offset)

    @property
    def pending(self) -> int:
        """Frames waiting to be written."""
        return len(self._queue)

    async def drained(self, below: int = 0) -> None:
        """Wait until at most ``below`` frames are waiting (a replay paces itself on this)."""
        if len(self._queue) <= below or self.closing:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((below, future))
        try:
            await future
        finally:
            if not future.done():
                future.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove((below, future))

    def _wake_waiters(self) -> None:
        size = len(self._queue)
        for below, future in self._waiters:
            if (size <= below or self.closing) and not future.done():
                future.set_result(None)

    def _check_peak(self) -> None:
        self._peak = None
        if len(self._queue) > PEAK_PENDING:
            self.abort_slow()

    def abort_slow(self) -> None:
        """Close a client that cannot keep up; it resumes from the last offset written to it."""
        if self.closing:
            return
        _LOGGER.info("Closing a slow client (%d messages waiting)", len(self._queue))
        self.finish(CloseCode.SLOW_CONSUMER, "slow_consumer", drop_queue=True)

    async def _write_loop(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not queue:
                    self._ready = loop.create_future()
                    await self._ready
                    continue
                frame, offset = queue.popleft()
                await self.transport.write(frame)
                self.sent += 1
                if offset:
                    self.last_offset = offset
                if self._waiters:
                    self._wake_waiters()
        except (ConnectionError, RuntimeError) as err:  # the peer went away mid-write
            _LOGGER.debug("Stream writer stopped: %s", err)
            self.finish(CloseCode.GOING_AWAY, "write failed", drop_queue=True)
        finally:
            self._wake_waiters()

    # ---------------------------------------------------------------- subscriptions
    def subscribe(self, sub: Subscription) -> None:
        """Route to ``sub`` from now on (it buffers until ``go_live``)."""
        self.subscriptions[sub.id] = sub
        self.hub.add(sub)

    def go_live(self, sub: Subscription, after: int) -> None:
        """Deliver what ``sub`` buffered after offset ``after``, then route to it directly."""
        buffered, sub.buffer = sub.buffer or [], None
        sub.after = after
        for event in buffered:
            if event.offset > after:
                self.deliver(sub, event)

    def unsubscribe(self, sub_id: int) -> bool:
        """Stop a subscription; False if there is none with that id."""
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None:
            return False
        self.hub.remove(sub)
        return True

    def follow_command(self, command_id: str, sub: Subscription) -> None:
        """Deliver the command's later events on ``sub`` (the send_command's id)."""
        self.commands[command_id] = sub
        self.hub.add_command(command_id, sub)

    def set_access(self, access: Access) -> None:
        """New access (a refreshed token, changed grants): re-index every subscription."""
        self.access = access
        for sub in self.subscriptions.values():
            self.hub.add(sub)

    # ---------------------------------------------------------------- closing
    def position_reason(self, code: str, epoch: str) -> str:
        """The close reason that lets the client resume: ``{"code", "epoch", "offset"}`` (< 123 bytes)."""
        return json.dumps({"code": code, "epoch": epoch, "offset": self.last_offset}, separators=(",", ":"))

    def finish(self, code: int, reason: str, *, drop_queue: bool = False) -> None:
        """Stop routing to this connection and close it (in the background)."""
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        self._detach()
        if drop_queue:
            self._queue.clear()
        self._closer = asyncio.get_running_loop().create_task(self._close(code, reason, drain=not drop_queue))

    async def wait_closed(self) -> None:
        """Wait until the close started by ``finish`` is done (a handler returns only then)."""
        if self._closer is not None:
            await asyncio.shield(self._closer)

    async def close_after_drain(self, code: int, reason: str, seconds: float) -> None:
        """Write what is queued (for at most ``seconds``), then close: a graceful shutdown's last step."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.drained()
        if not self.closing:
            self.closing = True
            self.close_code = code
            self._detach()
            await self._close(code, reason, drain=False)

    def _detach(self) -> None:
        for sub in self.subscriptions.values():
            self.hub.remove(sub)
        for command_id in self.commands:
            self.hub.remove_command(command_id)
        if self._peak is not None:
            self._peak.cancel()
            self._peak = None
        self._on_closed(self)
        self.done.set()
        self._wake_waiters()

    async def _close(self, code: int, reason: str, *, drain: bool) -> None:
        if drain:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self.drained()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.transport.close(code, reason)
