"""The tailer: the one reader of the committed event log per process, feeding the hub in offset order.

The store rings its doorbell after every commit that appended events. A ring from this
process carries the committed rows: when they continue exactly where the hub stopped they are
routed at once, with no read. Anything else (another replica's commit, which carries only its
offset; rows that do not continue the hub's position; a ring while a read is running) wakes
the read loop, which reads ``events_since(position)`` until it has caught up. A slow poll
covers a lost notification (a broken LISTEN connection is re-established by the store, which
then rings once so the log is read).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from thermo_bridge_server.realtime.hub import Hub
from thermo_bridge_server.store.base import EventRecord, Store

_LOGGER = logging.getLogger(__name__)

READ_BATCH = 1000
POLL_INTERVAL = 2.0


def _nothing() -> None:
    pass


class Tailer:
    """Keeps the hub at the end of the committed log."""

    def __init__(self, store: Store, hub: Hub, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.store = store
        self.hub = hub
        self.poll_interval = poll_interval
        self.known = 0  # the highest offset any ring announced
        self._wake = asyncio.Event()
        self._reading = False
        self._caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop_listening: Callable[[], None] = _nothing
        self.reads_total = 0
        self.direct_total = 0

    async def start(self) -> None:
        """Begin at the end of the log and follow it (events before now are for resumes to read)."""
        position = await self.store.latest_offset()
        self.hub.position = self.known = position
        self.hub.know_devices((d.device_id, str(d.config.kind)) for d in await self.store.list_devices())
        self._stop_listening = self.store.on_commit(self.ring)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="thermo_bridge tailer")

    async def stop(self) -> None:
        """Stop following the log."""
        self._stop_listening()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def ring(self, offset: int, records: Sequence[EventRecord]) -> None:
        """The doorbell: ``offset`` is committed; ``records`` are its rows when this process wrote them."""
        self.known = max(self.known, offset)
        if records and not self._reading and records[0].offset == self.hub.position + 1:
            self.direct_total += 1
            self.hub.publish(records)
        if self.known > self.hub.position:
            self._caught_up.clear()
            self._wake.set()

    async def caught_up(self, offset: int) -> None:
        """Wait until every event up to ``offset`` has been routed."""
        self.known = max(self.known, offset)
        while self.hub.position < offset:
            self._caught_up.clear()
            self._wake.set()
            await self._caught_up.wait()

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                try:
                    self.known = max(self.known, await self.store.latest_offset())
                except Exception as err:  # the store may be briefly unavailable: keep following
                    _LOGGER.warning("Event-log poll failed: %s", err)
                    continue
            self._wake.clear()
            try:
                await self._read_up_to_known()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                _LOGGER.warning("Reading the event log failed (%s); retrying", err)
                await asyncio.sleep(min(1.0, self.poll_interval))
                self._wake.set()

    async def _read_up_to_known(self) -> None:
        self._reading = True
        try:
            while self.hub.position < self.known:
                records = await self.store.events_since(self.hub.position, limit=READ_BATCH)
                self.reads_total += 1
                if not records:
                    # Announced offsets that never appear: rolled back after drawing (PostgreSQL)
                    # or purged. Nothing to route up to there.
                    self.hub.position = self.known
                    break
                self.hub.publish(records)
        finally:
            self._reading = False
        if self.hub.position >= self.known:
            self._caught_up.set()
