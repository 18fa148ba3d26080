"""The PostgreSQL writer's two batches in flight: the overlap never changes the outcome.

The next batch inserts its duplicates-check keys and history rows while the previous batch
commits; everything else waits for that commit. These tests force the overlap (more than
``BATCH_CAP`` writes queued at once) on a real PostgreSQL schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed in asyncpg
import pytest

from thermo_bridge_protocol import StateUpdate, parse_config
from thermo_bridge_server.store import create_store
from thermo_bridge_server.store import postgres as postgres_module
from thermo_bridge_server.store.base import EventType
from thermo_bridge_server.store.postgres import PostgresStore
from thermo_bridge_server.store.rows import BATCH_CAP
from thermo_bridge_sim import devices

T0 = 1_750_000_000.0
SENSOR = devices.sensor("sensor_1", name="Living room", measurements=devices.measurements("temperature", "humidity"))
EXTRA = 10
"""Writes queued after the first full batch: they form the overlapping second batch."""


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    opened = create_store(pg_dsn, retention_days=30, dead_letter_limit=100)
    assert isinstance(opened, PostgresStore)
    await opened.open()
    await opened.apply_config(parse_config(devices.encode(SENSOR)), T0)
    yield opened
    try:
        async with asyncio.timeout(30):
            await opened.close()
    except TimeoutError:
        # A writer deadlocked on itself: drop its connections so the run goes on and fails here.
        if opened._pool is not None:
            opened._pool.terminate()
        raise


def report(seq: int) -> StateUpdate:
    return StateUpdate({"temperature": 20.0 + seq % 7, "humidity": 40.0 + seq % 5}, ts=T0 + seq, seq=seq)


def queue_two_batches(store: PostgresStore) -> list[asyncio.Future[bool]]:
    """A full batch of reports 0..BATCH_CAP-1, then a second batch: a redelivery of report 0 and new ones."""
    seqs = [*range(BATCH_CAP), 0, *range(BATCH_CAP, BATCH_CAP + EXTRA)]
    return [store.apply_state("sensor_1", report(seq), T0 + 5000) for seq in seqs]


async def check_outcome(store: PostgresStore, pg_dsn: str, results: list[bool]) -> None:
    """Exactly what one batch at a time would give: report 0 once, the log in queue order."""
    assert results[0] is True
    assert results[BATCH_CAP] is False  # the redelivery in the second batch is a duplicate
    assert all(results[:BATCH_CAP])
    assert all(results[BATCH_CAP + 1 :])
    stored = BATCH_CAP + EXTRA
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM history WHERE device_id = 'sensor_1'") == 2 * stored
        assert await conn.fetchval("SELECT count(*) FROM state_dedupe WHERE device_id = 'sensor_1'") == stored
    finally:
        await conn.close()
    events = [e for e in await store.events_since(0, limit=10 * stored) if e.type is EventType.STATE]
    assert [e.data["seq"] for e in events] == list(range(stored))  # offsets follow the queue
    offsets = [e.offset for e in events]
    assert offsets == sorted(set(offsets))
    state = await store.get_state("sensor_1")
    assert state is not None
    assert state.seq == stored - 1
    assert state.values == report(stored - 1).values


async def test_overlapping_batch_waits_for_the_previous_commit(store: PostgresStore, pg_dsn: str) -> None:
    """With the first batch held in PostgreSQL, the second resolves nothing either; then both commit."""
    blocker = await asyncpg.connect(pg_dsn)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE state_values IN ACCESS EXCLUSIVE MODE")
    try:
        futures = queue_two_batches(store)
        await asyncio.sleep(0.5)
        assert not any(f.done() for f in futures)
    finally:
        await transaction.commit()
        await blocker.close()
    async with asyncio.timeout(30):
        results = await asyncio.gather(*futures)
    assert (await store.stats())["batches_total"] >= 3  # the config, then the two batches
    await check_outcome(store, pg_dsn, results)


async def test_overlapping_batch_redoes_when_the_previous_one_retries(
    store: PostgresStore, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch fails once (a deadlock report) after the second started overlapping it.

    The second batch then holds report 0's key, which the first batch's retry needs; it must
    roll back and redo after the retry (a hang here would be the two waiting on each other).
    """
    original_flush = postgres_module._Batch.flush
    failed: list[int] = []

    async def flush_failing_once(self: Any) -> None:
        if not failed and len(self.rows.events) >= BATCH_CAP:
            failed.append(len(self.rows.events))
            await asyncio.sleep(0.3)  # the second batch reaches its wait for this one meanwhile
            raise asyncpg.DeadlockDetectedError("injected: deadlock detected")
        await original_flush(self)

    original_wait = postgres_module._Slot.wait
    restarts: list[bool] = []

    async def counting_wait(self: Any, step: asyncio.Future[None]) -> None:
        try:
            await original_wait(self, step)
        except postgres_module._RestartError:
            restarts.append(True)
            raise

    monkeypatch.setattr(postgres_module._Batch, "flush", flush_failing_once)
    monkeypatch.setattr(postgres_module._Slot, "wait", counting_wait)
    async with asyncio.timeout(30):
        results = await asyncio.gather(*queue_two_batches(store))
    assert failed == [BATCH_CAP]
    assert restarts == [True]
    assert (await store.stats())["retried_batches_total"] == 1
    await check_outcome(store, pg_dsn, results)
