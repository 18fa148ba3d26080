"""PostgreSQL restarted (cleanly, or crashed) under ingest: nothing acknowledged is lost, streams have no gap.

A private PostgreSQL (``private_pg.py``; the machine's shared one serves other tests) is
restarted while a publisher sends QoS 1 reports and a WebSocket and an SSE client follow
them. The writer keeps retrying the batch it holds until the database is back (its MQTT
messages stay unacknowledged meanwhile), so afterwards every report the broker acknowledged
is stored exactly once and both clients saw every state event of the log, in order.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.api_stack import ADMIN, ServerStack
from tests.server.faults import LoadPublisher, SseStream, log_state_offsets, stored_reports
from tests.server.private_pg import PrivatePostgres, find_bindir
from tests.server.realtime_client import WsClient
from tests.waiting import wait_for
from thermo_bridge_server.store.base import Store

DEVICES = [f"pgf_{i:02d}" for i in range(20)]
RATE = 250.0


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL's initdb/pg_ctl are not installed (Debian: postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PrivatePostgres(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart_during_ingest_loses_nothing(
    private_pg: PrivatePostgres, tmp_path: Path, mode: str
) -> None:
    stack = ServerStack(
        tmp_path,
        env={"store_url": private_pg.dsn, "ws_allow_no_origin": "true", "rate_limit_per_minute": "100000"},
        simulate=False,
    )
    await stack.start()
    load = LoadPublisher(stack.broker.host, stack.broker.port, DEVICES, RATE)
    client = WsClient(stack.api.base_url)
    sse: SseStream | None = None
    try:
        store = stack.components.store
        await asyncio.to_thread(load.publish_retained, load.configs())
        await wait_for(lambda: _all_known(stack), what="every device in the store")
        token = stack.api.token("auth0|admin", ADMIN)
        await client.connect(token)
        sub, _ = await client.subscribe(events=["state"], snapshot=False)
        sse = await SseStream.open(stack.api.base_url, token, "events=state")
        load.start()
        await client.until(lambda: len(client.of(sub)) >= 200, "200 states before the restart", timeout=30)
        before = len(client.of(sub))
        await asyncio.to_thread(private_pg.stop, mode)
        # Down for a few seconds, as a real restart or failover is: longer than the retries a
        # closing store allows itself, so only retrying until the database is back loses nothing.
        await wait_for(lambda: store.write_error, timeout=15, what="the writer to report the outage")
        health = await stack.api.call("GET", "/health")
        assert health.status == 503
        assert health.json()["store"]["ok"] is False
        await asyncio.sleep(2)
        assert stack.components.transport.held_acks > 0  # the broker still holds those messages
        await asyncio.to_thread(private_pg.start)
        await client.until(lambda: len(client.of(sub)) >= before + 300, "300 states after the restart", timeout=60)
        await asyncio.to_thread(load.stop)
        acked = set(load.acked)
        await wait_for(
            lambda: _stored_all(store, acked), timeout=60, what=lambda: f"the {len(acked)} acknowledged reports stored"
        )
        stored = await stored_reports(store, DEVICES)
        assert len(stored) == len(set(stored)), "a report was stored twice"
        assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged reports lost"
        assert set(stored) <= acked | load.unconfirmed
        assert len(acked) >= 500
        stats = await store.stats()
        assert stats["retried_batches_total"] >= 1  # the writer met the outage and retried through it
        assert stack.components.ingest.store_errors == 0
        assert store.write_error is None
        assert stack.components.transport.stats.connection_losses == 0  # MQTT never noticed
        log = await log_state_offsets(store, DEVICES)
        await client.until(lambda: len(client.of(sub)) >= len(log), "the WebSocket to catch up", timeout=30)
        seen = [e["offset"] for e in client.of(sub)]
        assert seen == [o for o in log if o >= seen[0]], "the WebSocket stream has a gap or a duplicate"
        await wait_for(lambda: len(sse.of("state")) >= len(seen), timeout=30, what="the SSE stream to catch up")
        assert [e["offset"] for e in sse.of("state")] == [o for o in log if o >= sse.of("state")[0]["offset"]]
        health = await stack.api.call("GET", "/health")
        assert health.status == 200, health.text
    finally:
        await asyncio.to_thread(load.stop, 0)
        if sse is not None:
            await sse.close()
        await client.close()
        await stack.stop()


async def _all_known(stack: ServerStack) -> bool:
    return len(await stack.components.store.list_devices()) == len(DEVICES)


async def _stored_all(store: Store, acked: set[tuple[str, int]]) -> bool:
    return acked <= set(await stored_reports(store, DEVICES))
