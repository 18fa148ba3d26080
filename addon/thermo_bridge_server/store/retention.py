"""The background retention task: history and event-log entries older than N days go."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .base import Store

_LOGGER = logging.getLogger(__name__)

DAY = 86_400.0


async def purge_once(store: Store, days: float, *, now: Callable[[], float] = time.time) -> int:
    """Delete what is older than ``days`` (history, events, dedupe keys, finished commands)."""
    cutoff = now() - days * DAY
    deleted = await store.purge_before(cutoff)
    if deleted:
        _LOGGER.info("Retention removed %d rows older than %.1f days", deleted, days)
    return deleted


async def run_retention(store: Store, days: float, interval: float, *, now: Callable[[], float] = time.time) -> None:
    """Purge now and then every ``interval`` seconds until cancelled; ``days`` <= 0 keeps everything.

    A failed purge (database briefly unreachable) is logged and retried at the next interval:
    retention is housekeeping and must never take the server down.
    """
    if days <= 0:
        _LOGGER.info("Retention disabled (retention_days <= 0): history is kept forever")
        return
    if interval <= 0:
        raise ValueError("retention interval must be positive")
    while True:
        try:
            await purge_once(store, days, now=now)
        except asyncio.CancelledError:
            raise
        except Exception:
            _LOGGER.exception("Retention purge failed; retrying in %.0f s", interval)
        await asyncio.sleep(interval)
