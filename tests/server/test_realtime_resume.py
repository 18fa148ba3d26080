"""Resume without a gap or a duplicate across the drops that matter.

After a graceful restart (going-away close with the position), after ``kill -9`` of the
server under load, after retention or a recreated database (not resumable: a snapshot), and
across two replicas on one PostgreSQL with a shared MQTT subscription. A client that is not
ours (the ``websockets`` library) speaks the same protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from aiohttp import web

from tests.broker import Mosquitto
from tests.server.api_stack import ADMIN, ServerStack, make_config
from tests.server.faults import SseStream
from tests.server.jwks import JwksServer
from tests.server.realtime_client import WsClient
from tests.waiting import wait_for
from thermo_bridge_server.app import COMPONENTS, create_app
from thermo_bridge_server.store import create_store
from thermo_bridge_sim.simulator import Simulator

T1 = "z_thermostat_1"


def offsets(events: list[dict[str, Any]]) -> list[int]:
    return [e["offset"] for e in events]


async def log_offsets(store_url: str, devices: set[str], types: set[str] | None = None) -> list[int]:
    """The offsets the log holds for ``devices`` (of ``types``), read with a store of its own."""
    store = create_store(store_url, retention_days=30, dead_letter_limit=100)
    await store.open()
    try:
        return [
            e.offset
            for e in await store.events_since(0, limit=1_000_000)
            if e.device_id in devices and (types is None or e.type in types)
        ]
    finally:
        await store.close()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ServerStack]:
    server = ServerStack(tmp_path, prefix="z", thermostats=1, sensors=1, env={"ws_allow_no_origin": "true"})
    await server.start()
    yield server
    await server.stop()


async def test_a_graceful_restart_closes_with_the_position_and_resume_loses_nothing(stack: ServerStack) -> None:
    client = WsClient(stack.api.base_url)
    admin = stack.api.token("auth0|admin", ADMIN)
    await client.connect(admin)
    sub, _ = await client.subscribe(devices=[T1], snapshot=False)
    for i in range(5):
        stack.sim.publish_state(T1, temperature=10 + i / 4)
    await client.until(lambda: len(client.of(sub)) >= 5, "five states")
    restarting = asyncio.get_running_loop().create_task(stack.restart())
    await asyncio.wait_for(client.closed.wait(), 15)
    assert client.close_code == 1001
    assert client.close_reason is not None
    position = json.loads(client.close_reason)
    assert position["code"] == "going_away"
    assert position["epoch"] == stack.components.store.epoch
    assert position["offset"] == offsets(client.of(sub))[-1]  # everything written before the close
    for i in range(5):
        stack.sim.publish_state(T1, temperature=20 + i / 4)  # while the server restarts: the broker queues them
    await restarting
    await client.close()
    again = WsClient(stack.api.base_url)
    try:
        await again.connect(admin)
        sub2, result = await again.subscribe(
            devices=[T1], since={"epoch": position["epoch"], "offset": position["offset"]}
        )
        assert result["recovered"] is True
        stack.sim.publish_state(T1, temperature=30.5)
        await again.until(
            lambda: any(e["data"].get("values", {}).get("temperature") == 30.5 for e in again.of(sub2)), "live"
        )
        seen = offsets(client.of(sub)) + offsets(again.of(sub2))
        log = await log_offsets(f"sqlite:///{stack.workdir / 'store.db'}", {T1})
        assert seen == [o for o in log if o >= seen[0]]  # from the subscription on: each once, in order
    finally:
        await again.close()


async def test_a_recreated_database_or_retention_cannot_resume(stack: ServerStack, tmp_path: Path) -> None:
    admin = stack.api.token("auth0|admin", ADMIN)
    store = stack.components.store
    old_epoch = store.epoch
    client = WsClient(stack.api.base_url)
    try:
        await client.connect(admin)
        _, start = await client.subscribe(snapshot=False)
        stack.sim.publish_state(T1, temperature=5.25)
        await wait_for(lambda: _latest(store, start["offset"]), what="one more event")
        await store.purge_before(time.time() + 3600)  # everything but the newest entry goes
        _, expired = await client.subscribe(since={"epoch": old_epoch, "offset": start["offset"] - 1})
        assert (expired["recovered"], expired["reason"]) == (False, "offset_expired")
        assert {d["id"] for d in expired["snapshot"]["devices"]} >= {T1}
    finally:
        await client.close()
    assert stack.config is not None
    stack.config = dataclasses.replace(stack.config, store_url=f"sqlite:///{tmp_path / 'fresh.db'}")
    await stack.restart()
    assert stack.components.store.epoch != old_epoch
    fresh = WsClient(stack.api.base_url)
    try:
        await fresh.connect(admin)
        _, changed = await fresh.subscribe(since={"epoch": old_epoch, "offset": 3})
        assert (changed["recovered"], changed["reason"], changed["epoch"]) == (
            False,
            "epoch_changed",
            stack.components.store.epoch,
        )
    finally:
        await fresh.close()


async def _latest(store: Any, after: int) -> bool:
    return bool(await store.latest_offset() > after)


async def test_a_client_that_is_not_ours(stack: ServerStack) -> None:
    """The ``websockets`` library, as another team's web app or script would use."""
    url = stack.api.base_url.replace("http://", "ws://") + "/api/v1/ws"
    async with websockets.connect(url) as ws:
        assert json.loads(await ws.recv())["type"] == "auth_required"
        await ws.send(json.dumps({"type": "auth", "access_token": stack.api.token("auth0|admin", ADMIN)}))
        assert json.loads(await ws.recv())["type"] == "auth_ok"
        await ws.send(json.dumps({"id": 1, "type": "subscribe", "devices": [T1], "snapshot": False}))
        result = json.loads(await ws.recv())
        assert (result["id"], result["success"], result["result"]["recovered"]) == (1, True, False)
        stack.sim.publish_state(T1, temperature=7.75)
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "event" and message["event"]["data"]["values"].get("temperature") == 7.75:
                    break
        assert message["id"] == 1


# --------------------------------------------------------------------------- kill -9 under load


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "mosquitto", websockets=False)
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


class ServerProcess:
    """``python -m thermo_bridge_server`` with dev auth, as the add-on runs it; killable."""

    def __init__(self, broker: Mosquitto, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.key = workdir / "dev_key.pem"
        self.env = {
            **os.environ,
            "THERMO_BRIDGE_MQTT_HOST": broker.host,
            "THERMO_BRIDGE_MQTT_PORT": str(broker.port),
            "THERMO_BRIDGE_MQTT_CLIENT_ID": "tb_kill_test",
            "THERMO_BRIDGE_STORE_URL": f"sqlite:///{workdir / 'server.db'}",
            "THERMO_BRIDGE_HTTP_PORT": str(self.port),
            "THERMO_BRIDGE_ZEROCONF": "false",
            "THERMO_BRIDGE_DEV_AUTH": "true",
            "THERMO_BRIDGE_DEV_KEY_PATH": str(self.key),
            "THERMO_BRIDGE_WS_ALLOW_NO_ORIGIN": "true",
            "THERMO_BRIDGE_OPTIONS_FILE": "",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        with (self.workdir / "server.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "thermo_bridge_server"], env=self.env, stdout=log, stderr=log
            )

    async def start(self) -> None:
        self.proc = await asyncio.to_thread(self._spawn)
        await wait_for(self._healthy, timeout=30, what="the server process to serve /health")

    async def _healthy(self) -> bool:
        import aiohttp  # noqa: PLC0415

        try:
            async with aiohttp.ClientSession() as session, session.get(self.base_url + "/health") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def token(self) -> str:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "thermo_bridge_server.auth.devauth",
                "--key",
                str(self.key),
                "--issuer",
                f"http://localhost:{self.port}/",
                "--sub",
                "dev|kill",
                "--permissions",
                "read:devices",
                "write:devices",
                "admin",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return result.stdout.strip()


async def test_kill_9_under_load_then_resume_gives_every_event_once(broker: Mosquitto, tmp_path: Path) -> None:
    """A WebSocket and an SSE client attached during a burst; both resume after the restart."""
    server = ServerProcess(broker, tmp_path)
    await server.start()
    sim = Simulator(broker.host, broker.port, thermostats=4, sensors=0, id_prefix="k", seed=3, rate=150.0)
    await asyncio.to_thread(sim.start)
    client = WsClient(server.base_url)
    sse: SseStream | None = None
    received: list[dict[str, Any]] = []
    sse_received: list[dict[str, Any]] = []
    try:
        token = server.token()
        await client.connect(token)
        sub, _ = await client.subscribe(events=["state"], snapshot=False)
        first_sse = sse = await SseStream.open(server.base_url, token, "events=state")
        await client.until(lambda: len(client.of(sub)) >= 100, "100 states under load")
        await wait_for(lambda: len(first_sse.of("state")) >= 50, what="50 states on SSE")
        server.kill()  # mid-burst: the log has what was committed, the broker what was not acknowledged
        await asyncio.wait_for(client.closed.wait(), 10)
        await asyncio.wait_for(sse.ended.wait(), 10)
        received.extend(client.of(sub))
        sse_received.extend(sse.of("state"))
        last_event_id = sse.last_id
        assert last_event_id is not None
        await sse.close()
        await client.close()
        await server.start()
        client = WsClient(server.base_url)
        await client.connect(token)
        position = {"epoch": client.auth["epoch"] if client.auth else "", "offset": received[-1]["offset"]}
        sub, result = await client.subscribe(events=["state"], since=position)
        assert result["recovered"] is True
        sse = await SseStream.open(server.base_url, token, "events=state", last_event_id=last_event_id)
        await client.until(lambda: len(client.of(sub)) >= 200, "200 more states")
        await asyncio.to_thread(sim.stop)
        quiet = await wait_for(_settled(client, sub), timeout=20, what="the stream to settle")
        assert quiet
        received.extend(client.of(sub))
        assert sse.of("ready")[0]["recovered"] is True
        resumed = sse
        await wait_for(
            lambda: bool(resumed.of("state")) and resumed.of("state")[-1]["offset"] == received[-1]["offset"],
            timeout=20,
            what="the SSE stream to catch up",
        )
        sse_received.extend(sse.of("state"))
    finally:
        if sim.devices:
            await asyncio.to_thread(sim.stop)
        if sse is not None:
            await sse.close()
        await client.close()
        server.stop()
    seen = [e["offset"] for e in received]
    log = await log_offsets(f"sqlite:///{tmp_path / 'server.db'}", set(sim.devices), {"state"})
    states = [o for o in log if o >= seen[0]]
    assert seen == states  # every state once, in order, none missing around the kill
    sse_seen = [e["offset"] for e in sse_received]
    assert sse_seen == [o for o in log if o >= sse_seen[0]]  # the same for SSE, resumed with Last-Event-ID
    seqs = [(e["device_id"], e["data"]["seq"]) for e in received]
    assert len(seqs) == len(set(seqs))  # no report twice although the broker redelivered after the kill


def _settled(client: WsClient, sub: int) -> Any:
    last = {"count": -1, "at": time.monotonic()}

    def check() -> bool:
        count = len(client.of(sub))
        if count != last["count"]:
            last["count"], last["at"] = count, time.monotonic()
            return False
        return time.monotonic() - last["at"] > 1.5

    return check


# --------------------------------------------------------------------------- two replicas


async def test_two_replicas_on_one_postgresql_stream_the_same_contiguous_log(
    pg_dsn: str, broker: Mosquitto, tmp_path: Path
) -> None:
    """Ingest split by an MQTT v5 shared subscription; a client on each replica sees every event in order."""
    jwks = JwksServer()
    await jwks.start()
    runners: list[web.AppRunner] = []
    urls: list[str] = []
    sim: Simulator | None = None
    clients: list[WsClient] = []
    try:
        for name in ("a", "b"):
            config = make_config(
                broker,
                tmp_path / f"unused_{name}.db",
                jwks,
                store_url=pg_dsn,
                shared_group="replicas",
                mqtt_client_id=f"tb_replica_{name}",
                ws_allow_no_origin="true",
            )
            app = await create_app(config)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            urls.append(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}")  # type: ignore[union-attr]
        token = jwks.make_token("auth0|admin", ADMIN)
        for url in urls:
            client = WsClient(url)
            await client.connect(token)
            clients.append(client)
        subs = [(await c.subscribe(events=["state"], snapshot=False))[0] for c in clients]
        sim = Simulator(broker.host, broker.port, thermostats=3, sensors=0, id_prefix="rep", seed=5, rate=80.0)
        await asyncio.to_thread(sim.start)
        await wait_for(lambda: all(len(c.of(s)) >= 150 for c, s in zip(clients, subs, strict=True)), timeout=30)
        await asyncio.to_thread(sim.stop)
        for client, sub in zip(clients, subs, strict=True):
            await wait_for(_settled(client, sub), timeout=20, what="the stream to settle")
        ingested = [runner.app[COMPONENTS].ingest.messages_in for runner in runners]
        assert all(count > 0 for count in ingested), ingested  # both replicas took part of the ingest
        first, second = (offsets(c.of(s)) for c, s in zip(clients, subs, strict=True))
        assert first == second
        assert first == sorted(set(first))
        log = await log_offsets(pg_dsn, set(sim.devices), {"state"})
        assert first == [o for o in log if o >= first[0]]
    finally:
        for client in clients:
            await client.close()
        if sim is not None and sim.devices:
            await asyncio.to_thread(sim.stop)
        for runner in runners:
            await runner.cleanup()
        await jwks.stop()
