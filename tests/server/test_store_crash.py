"""kill -9 during heavy ingest leaves a consistent store that kept every acknowledged write.

A child process ingests state updates as fast as the store takes them and prints the seq of
every update whose future resolved (the point where the MQTT ingest would acknowledge the
message). The parent kills it with SIGKILL mid-ingest, reopens the store and checks:
every acknowledged seq is there; what is there is a prefix of what was queued (batches
commit in order, none half-way: each stored update has its history rows, its event and its
idempotency key, and nothing else is there); SQLite's integrity check passes; the latest
state is the newest stored update.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import wait_for
from thermo_bridge_protocol import DeviceEvent, StateUpdate, parse_config
from thermo_bridge_server.store import create_store
from thermo_bridge_server.store.base import EventType
from thermo_bridge_sim import devices

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_750_000_000.0
DEVICE = "crash_1"
CONFIG = devices.sensor(DEVICE, name="Crash", measurements=devices.measurements("temperature", "humidity"))
WINDOW = 3000  # writes in flight at once: several batches queued behind the one committing
MIN_ACKED = 4000  # kill only once this many writes were acknowledged
EVENT_EVERY = 10  # a device event and a dead letter are queued after every 10th update


def values(seq: int) -> dict[str, Any]:
    return {"temperature": round(15 + (seq % 200) / 10, 1), "humidity": float(seq % 100)}


def device_ts(seq: int) -> float:
    return T0 + seq / 100


def _ack(acked: list[int], seq: int) -> Callable[[asyncio.Future[bool]], None]:
    def done(future: asyncio.Future[bool]) -> None:
        if future.result():  # an exception here would end the child loudly, which the parent reports
            acked.append(seq)

    return done


async def _ingest(url: str) -> None:
    store = create_store(url, retention_days=0, dead_letter_limit=10)
    await store.open()
    await store.apply_config(parse_config(devices.encode(CONFIG)), T0)
    acked: list[int] = []
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    seq = 0
    in_flight: set[asyncio.Future[Any]] = set()
    while True:  # until killed
        while len(in_flight) < WINDOW:
            seq += 1
            future = store.apply_state(DEVICE, StateUpdate(values(seq), ts=device_ts(seq), seq=seq), time.time())
            future.add_done_callback(_ack(acked, seq))
            in_flight.add(future)
            if seq % EVENT_EVERY == 0:  # other tables in the same batches
                in_flight.add(store.record_device_event(DEVICE, DeviceEvent("button_press", {"seq": seq}), time.time()))
                in_flight.add(store.add_dead_letter(f"x/{seq}/state", "invalid_json", "", b"{", time.time()))
        _, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        if acked:
            out.write("".join(f"{s}\n" for s in acked))
            out.flush()
            acked.clear()


def child_main() -> None:
    """Entry point of the child process (argv[1]: the store URL)."""
    asyncio.run(_ingest(sys.argv[1]))


def run_and_kill(url: str) -> set[int]:
    """Run the child, SIGKILL it mid-ingest, return the seqs it reported as acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tests.server.test_store_crash import child_main; child_main()", url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert proc.stdout is not None
    acked: set[int] = set()
    try:
        first = proc.stdout.readline()
        assert first == b"READY\n", first + (proc.stderr.read() if proc.stderr else b"")
        deadline = time.monotonic() + 60
        while len(acked) < MIN_ACKED and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.add(int(line))
        assert len(acked) >= MIN_ACKED, proc.stderr.read() if proc.stderr else b""
        assert proc.poll() is None, "the child stopped by itself"
        proc.send_signal(signal.SIGKILL)
        # Whatever the child printed before it died was acknowledged before it died.
        for line in proc.stdout.read().splitlines():
            if line.isdigit():
                acked.add(int(line))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return acked


async def check_consistent(url: str, acked: set[int], raw: list[tuple[int, int, int]]) -> None:
    """``raw``: (seq, history rows, dedupe rows) per stored seq, read with plain SQL."""
    store = create_store(url, retention_days=0, dead_letter_limit=10)
    await store.open()  # migrations are a no-op on the crashed database
    try:
        log = await store.events_since(0, limit=10_000_000)
        event_seqs = [e.data["seq"] for e in log if e.type is EventType.STATE]
        device_events = [e.data["data"]["seq"] for e in log if e.type is EventType.DEVICE_EVENT]
        stored = [seq for seq, _, _ in raw]
        assert event_seqs == stored, "events and history disagree"
        assert stored == list(range(1, len(stored) + 1)), "not a prefix of what was queued: a batch was lost"
        assert all(history == 2 and dedupe == 1 for _, history, dedupe in raw), "a partial write survived"
        assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged writes are missing"
        # What was queued between the updates committed with them, in order, none beyond.
        newest = stored[-1]
        expected = list(range(EVENT_EVERY, newest + 1, EVENT_EVERY))
        allowed = (expected, expected[:-1]) if newest % EVENT_EVERY == 0 else (expected,)  # queued after M: maybe
        assert device_events in allowed, "device events are not the committed prefix"
        assert [e.offset for e in log] == sorted({e.offset for e in log})
        assert len(stored) >= len(acked)
        state = await store.get_state(DEVICE)
        assert state is not None
        assert state.values == values(newest)
        assert (state.seq, state.device_ts) == (newest, device_ts(newest))
        history = await store.history(DEVICE, device_ts(newest), device_ts(newest) + 1)
        assert {p.key: p.value for p in history} == values(newest)
        # The store still works after the crash.
        assert await store.apply_state(DEVICE, StateUpdate({"humidity": 1.0}, seq=newest + 1), time.time())
        assert not await store.apply_state(DEVICE, StateUpdate(values(1), ts=device_ts(1), seq=1), time.time())
    finally:
        await store.close()


RAW_SQL = (
    "SELECT d.seq, (SELECT count(*) FROM history h WHERE h.device_id = d.device_id AND h.ts = d.ts),"
    " (SELECT count(*) FROM state_dedupe x WHERE x.device_id = d.device_id AND x.seq = d.seq)"
    " FROM (SELECT DISTINCT device_id, seq, ts FROM state_dedupe UNION SELECT device_id,"
    " CAST(round((ts - {t0}) * 100) AS INTEGER), ts FROM history) d ORDER BY d.seq"
)


async def test_sqlite_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    url = f"sqlite://{path}"
    acked = await asyncio.to_thread(run_and_kill, url)

    def inspect() -> list[tuple[int, int, int]]:
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            return conn.execute(RAW_SQL.format(t0=T0)).fetchall()
        finally:
            conn.close()

    raw = await asyncio.to_thread(inspect)
    await check_consistent(url, acked, raw)
    await asyncio.to_thread(inspect)  # and again after the store reopened and wrote


async def test_postgres_survives_kill_9(pg_dsn: str) -> None:
    import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415

    acked = await asyncio.to_thread(run_and_kill, pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        # The killed child's session goes away with its socket: give the server a moment to notice
        # before reading (what it committed is the same either way).
        async def quiet() -> bool:
            busy = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = current_database()"
                " AND state <> 'idle' AND query LIKE '%state_%'"
            )
            return not busy

        with contextlib.suppress(AssertionError):
            await wait_for(quiet, timeout=5, interval=0.05, what="the killed child's session to end")
        raw = [tuple(row) for row in await conn.fetch(RAW_SQL.format(t0=T0).replace("INTEGER", "bigint"))]
    finally:
        await conn.close()
    await check_consistent(pg_dsn, acked, raw)


@pytest.mark.parametrize("seq", [1, 12345])
def test_seq_round_trips_through_the_history_timestamp(seq: int) -> None:
    """RAW_SQL recovers a seq from its history timestamp; make sure that inversion is exact."""
    assert round((device_ts(seq) - T0) * 100) == seq
