"""Two replicas share the ingest (MQTT v5 shared subscription, one PostgreSQL); one dies for good.

What mosquitto 2.0.11 does with the dead member's messages, as measured here and documented
in DOCS.md ("Several replicas") and docs/benchmarks.md ("Fault runs"):

* the dead member stays in the group while its session lives: the broker goes on handing it
  its share (round robin) and queues those messages in its session, next to the QoS 1
  messages it had in flight and never acknowledged; the surviving member gets none of them;
* when a process connects again with the same client id before the session expires, it
  receives all of them (the in-flight ones marked DUP) and stores each once;
* when the session expires first, the broker drops them all: they are lost, and only then
  does the surviving member get every new message.

The test stops replica B (SIGSTOP, so it holds unacknowledged messages in flight), kills it
(SIGKILL) and keeps publishing, then counts what is missing and what comes back.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from tests.broker import Mosquitto
from tests.server.faults import LoadPublisher, stored_reports
from tests.waiting import wait_for
from thermo_bridge_server.store import create_store
from thermo_bridge_server.store.base import Store

ROOT = Path(__file__).resolve().parents[2]
DEVICES = [f"shr_{i:02d}" for i in range(10)]
RATE = 200.0
GROUP = "replicas"


def _start(broker: Mosquitto, store_url: str, client_id: str, expiry: int, log: Path) -> subprocess.Popen[str]:
    with log.open("a") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.server.ingest_worker",
                broker.host,
                str(broker.port),
                store_url,
                client_id,
                GROUP,
                str(expiry),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"replica did not start: {line!r}, see {log}"
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(30)
    if proc.stdout is not None:
        proc.stdout.close()


async def _missing(store: Store, acked: set[tuple[str, int]]) -> set[tuple[str, int]]:
    return acked - set(await stored_reports(store, DEVICES))


async def _settled(store: Store, acked: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """What is still missing once the store stopped changing for a second."""
    last: set[tuple[str, int]] | None = None
    while True:
        missing = await _missing(store, acked)
        if missing == last:
            return missing
        last = missing
        await asyncio.sleep(1.0)


async def _kill_b_under_load(
    mosquitto: Mosquitto, pg_dsn: str, tmp_path: Path, expiry: int
) -> tuple[Store, LoadPublisher, list[subprocess.Popen[str]], set[tuple[str, int]]]:
    """Start A and B, publish, freeze then kill B mid-stream; return what the store misses afterwards."""
    store = create_store(pg_dsn, retention_days=30, dead_letter_limit=100)
    await store.open()
    procs = [
        await asyncio.to_thread(_start, mosquitto, pg_dsn, f"tb_share_{name}", expiry, tmp_path / f"{name}.log")
        for name in ("a", "b")
    ]
    load = LoadPublisher(mosquitto.host, mosquitto.port, DEVICES, RATE)
    await asyncio.to_thread(load.publish_retained, load.configs())
    await wait_for(lambda: _count_devices(store), what="every device in the store")
    load.start()
    await wait_for(lambda: len(load.acked) >= 200, timeout=20, what="200 reports")
    procs[1].send_signal(signal.SIGSTOP)  # B stops acknowledging: its deliveries stay in flight
    await wait_for(lambda: len(load.acked) >= 500, timeout=20, what="300 more reports")
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait(10)
    await wait_for(lambda: len(load.acked) >= 800, timeout=20, what="300 more after the kill")
    load.pause()
    await wait_for(lambda: load.in_flight == 0, what="the broker's acknowledgements")
    missing = await _settled(store, set(load.acked))
    return store, load, procs, missing


async def _count_devices(store: Store) -> bool:
    return len(await store.list_devices()) == len(DEVICES)


async def test_a_dead_member_keeps_its_share_until_it_returns_with_the_same_client_id(
    mosquitto: Mosquitto, pg_dsn: str, tmp_path: Path
) -> None:
    store, load, procs, missing = await _kill_b_under_load(mosquitto, pg_dsn, tmp_path, expiry=300)
    try:
        acked = set(load.acked)
        # Not handed to A: B's in-flight and queued share waits in B's session at the broker.
        assert len(missing) >= 200, len(missing)
        assert len(missing) <= len(acked) * 0.7
        procs[1] = await asyncio.to_thread(_start, mosquitto, pg_dsn, "tb_share_b", 300, tmp_path / "b2.log")
        await wait_for(lambda: _none_missing(store, acked), timeout=30, what="B's share, delivered to B again")
        load.pause(False)
        await wait_for(lambda: len(load.acked) >= len(acked) + 200, timeout=20, what="200 more reports")
        await asyncio.to_thread(load.stop)
        everything = set(load.acked)
        await wait_for(lambda: _none_missing(store, everything), timeout=30, what="every acknowledged report")
        stored = await stored_reports(store, DEVICES)
        assert len(stored) == len(set(stored)), "a redelivered report was stored twice"
    finally:
        await asyncio.to_thread(load.stop, 0)
        for proc in procs:
            await asyncio.to_thread(_end, proc)
        await store.close()


async def test_a_dead_members_messages_are_lost_when_its_session_expires(
    mosquitto: Mosquitto, pg_dsn: str, tmp_path: Path
) -> None:
    expiry = 2
    store, load, procs, missing = await _kill_b_under_load(mosquitto, pg_dsn, tmp_path, expiry=expiry)
    try:
        assert len(missing) >= 200, len(missing)
        await asyncio.sleep(expiry + 2)  # B's session expires at the broker
        before = set(load.acked)
        load.pause(False)
        await wait_for(lambda: len(load.acked) >= len(before) + 300, timeout=20, what="300 reports after expiry")
        await asyncio.to_thread(load.stop)
        after = set(load.acked) - before
        await wait_for(lambda: _none_missing(store, after), timeout=30, what="A taking every new report")
        # Starting B again now brings nothing back: the broker dropped its share with the session.
        procs[1] = await asyncio.to_thread(_start, mosquitto, pg_dsn, "tb_share_b", 300, tmp_path / "b2.log")
        await asyncio.sleep(2)
        lost = await _missing(store, before)
        assert lost == missing, "the broker delivered part of an expired session's messages"
    finally:
        await asyncio.to_thread(load.stop, 0)
        for proc in procs:
            await asyncio.to_thread(_end, proc)
        await store.close()


async def _none_missing(store: Store, acked: set[tuple[str, int]]) -> bool:
    return not await _missing(store, acked)
