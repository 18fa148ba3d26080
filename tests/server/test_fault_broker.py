"""The broker restarted under load with web clients connected: they are told, and nothing is lost.

A WebSocket and an SSE client stay connected while mosquitto is stopped for two seconds and
started again (same data folder: the server's persistent session and its queued messages
survive, as with a production broker). Each client gets a ``status`` message with
``broker.connected`` false when the server's MQTT connection drops and true when it is back;
status messages carry no offset and leave the event stream alone. Afterwards every report the
broker acknowledged to the publisher is stored once, and both streams hold every state event
of the log in order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.server.api_stack import ADMIN, ServerStack
from tests.server.faults import LoadPublisher, SseStream, log_state_offsets, stored_reports
from tests.server.realtime_client import WsClient
from tests.waiting import wait_for
from thermo_bridge_server.store.base import Store

DEVICES = [f"brk_{i:02d}" for i in range(10)]
RATE = 200.0


def statuses(client: WsClient) -> list[bool]:
    return [m["broker"]["connected"] for m in client.others if m.get("type") == "status"]


async def test_broker_restart_tells_the_clients_and_loses_nothing(tmp_path: Path) -> None:
    stack = ServerStack(tmp_path, env={"ws_allow_no_origin": "true"}, simulate=False)
    await stack.start()
    load = LoadPublisher(stack.broker.host, stack.broker.port, DEVICES, RATE)
    client = WsClient(stack.api.base_url)
    sse: SseStream | None = None
    try:
        store = stack.components.store
        await asyncio.to_thread(load.publish_retained, load.configs())
        await wait_for(lambda: _all_known(store), what="every device in the store")
        token = stack.api.token("auth0|admin", ADMIN)
        auth = await client.connect(token)
        assert auth["status"]["broker"]["connected"] is True
        sub, _ = await client.subscribe(events=["state"], snapshot=False)
        sse = await SseStream.open(stack.api.base_url, token, "events=state")
        await wait_for(lambda: sse.of("status"), what="the stream's first message")
        assert sse.records[0]["event"] == "status"
        assert "id" not in sse.records[0]
        assert sse.of("status") == [{"broker": {"connected": True, "since": auth["status"]["broker"]["since"]}}]
        load.start()
        await client.until(lambda: len(client.of(sub)) >= 100, "100 states before the restart", timeout=30)

        await asyncio.to_thread(stack.broker.stop)
        await client.until(lambda: statuses(client) == [False], "the status: broker disconnected")
        await wait_for(lambda: [s["broker"]["connected"] for s in sse.of("status")] == [True, False], what="SSE too")
        health = await stack.api.call("GET", "/health")
        assert (health.status, health.json()["broker"]) == (503, {"connected": False})
        await asyncio.sleep(2)
        await asyncio.to_thread(stack.broker.start)
        await client.until(lambda: statuses(client) == [False, True], "the status: broker connected", timeout=30)
        await wait_for(
            lambda: [s["broker"]["connected"] for s in sse.of("status")] == [True, False, True], what="SSE too"
        )
        after = len(client.of(sub))
        await client.until(lambda: len(client.of(sub)) >= after + 200, "states after the restart", timeout=30)
        await asyncio.to_thread(load.stop)
        acked = set(load.acked)
        await wait_for(lambda: _stored_all(store, acked), timeout=30, what="every acknowledged report stored")
        stored = await stored_reports(store, DEVICES)
        assert len(stored) == len(set(stored))
        assert acked <= set(stored) <= acked | load.unconfirmed
        assert load.connects >= 2  # the publisher, too, lived through the restart
        log = await log_state_offsets(store, DEVICES)
        await client.until(lambda: client.of(sub)[-1]["offset"] == log[-1], "the WebSocket to catch up")
        seen = [e["offset"] for e in client.of(sub)]
        assert seen == [o for o in log if o >= seen[0]]
        await wait_for(lambda: sse.of("state")[-1]["offset"] == log[-1], what="the SSE stream to catch up")
        sse_seen = [e["offset"] for e in sse.of("state")]
        assert sse_seen == [o for o in log if o >= sse_seen[0]]
        assert sse.last_id is not None
        assert sse.last_id.endswith(f":{log[-1]}")  # status messages did not move the resume position
        assert stack.components.transport.stats.connection_losses == 1
    finally:
        await asyncio.to_thread(load.stop, 0)
        if sse is not None:
            await sse.close()
        await client.close()
        await stack.stop()


async def _all_known(store: Store) -> bool:
    return len(await store.list_devices()) == len(DEVICES)


async def _stored_all(store: Store, acked: set[tuple[str, int]]) -> bool:
    return acked <= set(await stored_reports(store, DEVICES))
