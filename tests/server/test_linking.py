"""What links the server to Home Assistant: the internal token, /internal/v1/status, liveness,
and the Supervisor's discovery (in-process against a fake Supervisor, and the real process)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from paho.mqtt import publish

from tests.broker import Mosquitto, free_port
from tests.fake_supervisor import HOSTNAME, TOKEN, FakeSupervisor
from tests.server.api_stack import ServerStack
from tests.server.realtime_client import WsClient
from tests.waiting import wait_for
from thermo_bridge_server.app import server_version
from thermo_bridge_server.auth.internal import InternalTokenError, load_or_create_internal_token, token_matches
from thermo_bridge_server.config import ServerConfig, load_config
from thermo_bridge_server.discovery import Advertiser
from thermo_bridge_server.metrics import Throughput
from thermo_bridge_server.store import create_store
from thermo_bridge_server.store.rows import StoreClosedError
from thermo_bridge_server.supervisor import SupervisorError, announce, announce_once

# --------------------------------------------------------------------------- the token file


def test_token_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "internal_token"
    token, created = load_or_create_internal_token(path)
    assert created
    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_internal_token(path) == (token, False)
    path.chmod(0o644)
    assert load_or_create_internal_token(path) == (token, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("content", ["", "short", "not a token at all, with spaces and more than 32 characters"])
def test_a_file_without_a_token_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "internal_token"
    path.write_text(content)
    with pytest.raises(InternalTokenError, match="holds no internal token"):
        load_or_create_internal_token(path)


def test_an_unusable_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InternalTokenError, match="cannot read"):
        load_or_create_internal_token(tmp_path)  # a directory
    with pytest.raises(InternalTokenError, match="cannot create"):  # no file can be created in /proc, even by root
        load_or_create_internal_token("/proc/self/thermo_bridge_internal_token")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InternalTokenError, match="Not a directory"):
        load_or_create_internal_token(tmp_path / "file" / "token")


def test_token_matches_only_the_token() -> None:
    assert token_matches("abc", "abc")
    for token in (None, "", "ab", "abd", "abcd", "ABC"):
        assert not token_matches("abc", token), token


def test_throughput_is_per_minute_over_the_window() -> None:
    now = [100.0]
    total = [0]
    rate = Throughput(lambda: total[0], window=60.0, clock=lambda: now[0])
    assert rate.per_minute() == 0.0
    for _ in range(12):  # 10 messages every 5 s: 120 per minute
        now[0] += 5
        total[0] += 10
        rate.sample()
    assert rate.per_minute() == pytest.approx(120.0)
    now[0] += 120  # silence for two minutes: the window forgets the burst
    rate.sample()
    now[0] += 5
    assert rate.per_minute() == pytest.approx(0.0)


# --------------------------------------------------------------------------- the endpoints


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ServerStack]:
    stack = ServerStack(tmp_path, thermostats=1, sensors=1, prefix="ln", env={"ws_allow_no_origin": "true"})
    await stack.start()
    yield stack
    await stack.stop()


async def test_status_needs_the_internal_token(stack: ServerStack) -> None:
    api = stack.api
    token = stack.components.internal_token
    assert stack.config is not None
    stored = await asyncio.to_thread(Path(stack.config.internal_token_path).read_text)
    assert token == stored.strip()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
        response = await api.call("GET", "/internal/v1/status", headers=headers)
        assert response.status == 401
        assert response.error["code"] == "invalid_token"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="thermo_bridge internal"'
    malformed = await api.call("GET", "/internal/v1/status", headers={"Authorization": f"Bearer {token} extra"})
    assert malformed.status == 400  # RFC 6750 as on the API: a malformed header is not a wrong token
    assert malformed.error["code"] == "invalid_request"
    # An Auth0 token of an admin is not the internal token either.
    admin = api.token("auth0|admin", ("read:devices", "write:devices", "admin"))
    assert (await api.call("GET", "/internal/v1/status", token=admin)).status == 401


async def test_status_reports_the_servers_figures(stack: ServerStack) -> None:
    api = stack.api
    headers = {"Authorization": f"Bearer {stack.components.internal_token}"}
    first = (await api.call("GET", "/internal/v1/status", headers=headers)).json()
    assert first["version"] == server_version()
    assert first["base_topic"] == "thermo_bridge"
    assert first["broker_connected"] is True
    assert first["store_ok"] is True
    assert first["devices"] == 2
    assert first["rejected_total"] == 0
    assert first["web_clients"] == 0
    assert first["database_bytes"] > 4096
    assert first["messages_per_minute"] > 0  # the simulator's announcements and first reports
    # A rejected message, and a web client on the real-time API.
    await asyncio.to_thread(
        publish.single,
        "thermo_bridge/ln_thermostat_1/state",
        b"not json",
        hostname=stack.broker.host,
        port=stack.broker.port,
    )
    await wait_for(lambda: sum(stack.components.ingest.rejected_by_reason.values()) == 1, what="the rejection")
    client = WsClient(api.base_url)
    try:
        auth = await client.connect(api.token("auth0|viewer", ("read:devices",), homes=["default"]))
        assert auth["type"] == "auth_ok"
        second = (await api.call("GET", "/internal/v1/status", headers=headers)).json()
    finally:
        await client.close()
    assert second["rejected_total"] == 1
    assert second["web_clients"] == 1


async def test_liveness_stays_while_the_broker_is_away(stack: ServerStack) -> None:
    api = stack.api
    await asyncio.to_thread(stack.broker.stop)
    await wait_for(lambda: not stack.components.transport.connected, what="the broker connection to drop")
    assert (await api.call("GET", "/health")).status == 503
    live = await api.call("GET", "/health/live")
    assert live.status == 200
    assert live.json() == {"status": "alive", "version": server_version()}
    headers = {"Authorization": f"Bearer {stack.components.internal_token}"}
    status = (await api.call("GET", "/internal/v1/status", headers=headers)).json()
    assert status["broker_connected"] is False
    await asyncio.to_thread(stack.broker.start)


async def test_index_page_is_the_dashboard(stack: ServerStack) -> None:
    """Home Assistant's device page links here (the server device's configuration_url): the dashboard."""
    page = await stack.api.call("GET", "/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<tb-app></tb-app>" in page.text
    assert 'src="assets/main-' in page.text  # relative: the same page works under ingress's prefix
    config = (await stack.api.call("GET", "/api/v1/client-config")).json()
    assert config["version"] == server_version()
    assert (await stack.api.call("GET", "/?x=1")).status == 400


# --------------------------------------------------------------------------- the Supervisor's discovery


@pytest.fixture
async def supervisor() -> AsyncIterator[FakeSupervisor]:
    fake = FakeSupervisor(unready=2)
    await fake.start()
    yield fake
    await fake.stop()


def supervised_config(supervisor: FakeSupervisor, tmp_path: Path, **options: object) -> ServerConfig:
    options_file = tmp_path / "options.json"
    options_file.write_text(json.dumps({"dev_auth": True, "dev_key_path": str(tmp_path / "key.pem"), **options}))
    env = {
        "SUPERVISOR_TOKEN": TOKEN,
        "THERMO_BRIDGE_SUPERVISOR_URL": supervisor.url,
        "THERMO_BRIDGE_OPTIONS_FILE": str(options_file),
    }
    return load_config([], env=env)


async def test_announce_retries_until_the_supervisor_takes_it(supervisor: FakeSupervisor, tmp_path: Path) -> None:
    config = supervised_config(supervisor, tmp_path, base_topic="site/a")
    async with aiohttp.ClientSession() as session:
        uuid = await announce(session, config, port=8099, api_path="/api/v1", token="t" * 43, initial_delay=0.01)
    assert len(uuid) == 32
    assert supervisor.discoveries == [
        {
            "service": "thermo_bridge",
            "config": {
                "host": HOSTNAME,
                "port": 8099,
                "api_path": "/api/v1",
                "base_topic": "site/a",
                "token": "t" * 43,
            },
        }
    ]
    # Each call answered 502 twice: three tries for the info, then two more for the discovery.
    assert supervisor.calls.count(("GET", "/addons/self/info")) == 5
    assert supervisor.calls.count(("POST", "/discovery")) == 3


async def test_announce_gives_up_when_refused(tmp_path: Path) -> None:
    fake = FakeSupervisor(discovery_services=())  # config.yaml without discovery: [thermo_bridge]
    await fake.start()
    try:
        config = supervised_config(fake, tmp_path)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(SupervisorError, match=r"does config\.yaml list thermo_bridge under discovery"):
                await announce(session, config, port=8099, api_path="/api/v1", token="t" * 43)
            bad = dataclasses.replace(supervised_config(fake, tmp_path), supervisor_token="wrong")
            with pytest.raises(SupervisorError, match="refused the add-on's token"):
                await announce_once(session, bad, port=8099, api_path="/api/v1", token="t" * 43)
    finally:
        await fake.stop()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as response:
        return response.status, await response.json()


async def status_of(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        return (await get(session, url))[0]
    except (aiohttp.ClientError, TimeoutError):
        return None


async def test_the_add_on_process_waits_alive_then_announces_itself(
    supervisor: FakeSupervisor, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Under the Supervisor, before the broker exists: alive, not ready, not restarted; then linked."""
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    (data / "options.json").write_text(
        json.dumps(
            {
                "dev_auth": True,
                "dev_key_path": str(data / "dev_key.pem"),
                "store_url": f"sqlite:///{data / 'thermo_bridge.db'}",
                "internal_token_path": str(data / "internal_token"),
                "http_port": port,
                "zeroconf": False,
            }
        )
    )
    env = {
        **os.environ,
        "SUPERVISOR_TOKEN": TOKEN,
        "THERMO_BRIDGE_SUPERVISOR_URL": supervisor.url,
        "THERMO_BRIDGE_OPTIONS_FILE": str(data / "options.json"),
    }
    log = await asyncio.to_thread((tmp_path / "server.log").open, "wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "thermo_bridge_server", env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    session = aiohttp.ClientSession()
    try:

        async def live() -> bool:
            return await status_of(session, f"{base}/health/live") == 200

        async def ready() -> bool:
            return await status_of(session, f"{base}/health") == 200

        await wait_for(live, what="liveness while waiting for the broker", timeout=30)
        status, health = await get(session, f"{base}/health")
        assert status == 503
        assert health["status"] == "degraded"
        status, body = await get(session, f"{base}/api/v1/devices")
        assert (status, body["error"]["code"]) == (503, "starting")
        assert supervisor.discoveries == []
        supervisor.provide_mqtt(mosquitto.host, mosquitto.port)
        await wait_for(ready, what="readiness once the broker is provided", timeout=60)
        await wait_for(lambda: supervisor.discoveries, what="the discovery", timeout=30)
        token = (await asyncio.to_thread((data / "internal_token").read_text)).strip()
        assert supervisor.discoveries[0]["config"] == {
            "host": HOSTNAME,
            "port": port,
            "api_path": "/api/v1",
            "base_topic": "thermo_bridge",
            "token": token,
        }
        text = await asyncio.to_thread((tmp_path / "server.log").read_text)
        assert token not in text
        assert str(data / "internal_token") in text
    finally:
        await session.close()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        log.close()
    assert code == 0


async def check_store_size(url: str, *, grows: bool) -> None:
    store = create_store(url, retention_days=1, dead_letter_limit=10)
    with pytest.raises(StoreClosedError):
        await store.size_bytes()
    await store.open()
    try:
        empty = await store.size_bytes()
        assert empty > 0  # the migrated tables
        await store.add_dead_letter("t/x/state", "not_json", "payload is not JSON", b"x" * 20_000, 1767225600.0)
        await wait_for(lambda: store.dead_letters(limit=1), what="the dead letter")
        if grows:
            assert await store.size_bytes() > empty
    finally:
        await store.close()


async def test_sqlite_store_tells_its_files_size(tmp_path: Path) -> None:
    await check_store_size(f"sqlite:///{tmp_path / 'size.db'}", grows=True)


async def test_postgres_store_tells_its_tables_size(pg_dsn: str) -> None:
    # PostgreSQL fills pages it already allocated: the size need not grow with one row.
    await check_store_size(pg_dsn, grows=False)


async def test_advertise_host_is_the_address_the_advertisement_gives(tmp_path: Path) -> None:
    """In a container the machine's own address is the container's: the option names the reachable one."""
    env = {"zeroconf": "true", "advertise_host": "192.0.2.10"}
    stack = ServerStack(tmp_path, thermostats=0, sensors=0, env=env, simulate=False)
    await stack.start()
    try:
        advertiser = await wait_for(lambda: stack.components.advertiser, what="the advertisement")
        assert advertiser.info.parsed_addresses() == ["192.0.2.10"]
    finally:
        await stack.stop()


def test_bound_to_all_the_advertisement_gives_every_interface_but_loopback() -> None:
    advertiser = Advertiser(port=8099, version="1", api_path="/api/v1", base_topic="t", host="0.0.0.0")  # noqa: S104
    addresses = advertiser.info.parsed_addresses()
    assert addresses
    assert addresses == ["127.0.0.1"] or not [a for a in addresses if a.startswith("127.")]
