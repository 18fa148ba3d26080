"""The server as users run it: ``python -m thermo_bridge_server`` with dev auth, SIGTERM, bad configs, zeroconf."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from tests.broker import Mosquitto, free_port
from tests.server.api_stack import ADMIN, RW, ServerStack, make_config
from tests.server.jwks import JwksServer
from tests.waiting import wait_for
from thermo_bridge_server.app import COMPONENTS, create_app, server_version
from thermo_bridge_server.config import OPTIONS
from thermo_bridge_server.discovery import SERVICE_TYPE, Advertiser
from thermo_bridge_server.store import create_store
from thermo_bridge_sim.simulator import Simulator


def server_env(broker: Mosquitto, tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THERMO_BRIDGE_", "SUPERVISOR_"))}
    env.update(
        {
            "THERMO_BRIDGE_DEV_AUTH": "true",
            "THERMO_BRIDGE_DEV_KEY_PATH": str(tmp_path / "dev_key.pem"),
            "THERMO_BRIDGE_MQTT_HOST": broker.host,
            "THERMO_BRIDGE_MQTT_PORT": str(broker.port),
            "THERMO_BRIDGE_STORE_URL": f"sqlite:///{tmp_path / 'server.db'}",
            "THERMO_BRIDGE_HTTP_PORT": str(port),
            "THERMO_BRIDGE_ZEROCONF": "false",
            "THERMO_BRIDGE_COMMAND_TIMEOUT": "5",
            "THERMO_BRIDGE_RATE_LIMIT_PER_MINUTE": "100000",
            "THERMO_BRIDGE_OPTIONS_FILE": "",
        }
    )
    env.update(extra)
    return env


@pytest.fixture
def server_process(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "thermo_bridge_server"],
            env=server_env(mosquitto, tmp_path, port, THERMO_BRIDGE_ZEROCONF="true"),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _get(session: aiohttp.ClientSession, url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def mint(key: Path, port: int, *permissions: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "thermo_bridge_server.auth.devauth",
            "--key",
            str(key),
            "--issuer",
            f"http://localhost:{port}/",
            "--sub",
            "dev|tester",
            "--homes",
            "default",
            "--permissions",
            *permissions,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


async def test_server_process_dev_auth_command_and_graceful_sigterm(
    server_process: tuple[subprocess.Popen[str], int, Path], mosquitto: Mosquitto, tmp_path: Path
) -> None:
    proc, port, log = server_process
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:

        async def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                status, _ = await _get(session, f"{base}/health")
            except aiohttp.ClientError:
                return False
            return status == 200

        await wait_for(healthy, timeout=30, what="the server process to be healthy")
        assert "DEV AUTH IS ENABLED" in log.read_text()
        # Bound to loopback, the server advertises itself there with its real port.
        found = await browse_for_port(port)
        assert found == {"version": server_version(), "api_path": "/api/v1", "base_topic": "thermo_bridge"}

        sim = Simulator(mosquitto.host, mosquitto.port, thermostats=1, id_prefix="proc", seed=1)
        await asyncio.to_thread(sim.start)
        try:
            token = await asyncio.to_thread(mint, tmp_path / "dev_key.pem", port, "read:devices", "write:devices")
            status, jwks = await _get(session, f"{base}/.well-known/jwks.json")
            assert status == 200
            assert [k["kty"] for k in jwks["keys"]] == ["RSA"]

            async def listed() -> bool:
                status, body = await _get(session, f"{base}/api/v1/devices", token)
                assert status == 200, body
                return [d["id"] for d in body["devices"]] == ["proc_thermostat_1"]

            await wait_for(listed, what="the simulated device in the API")
            async with session.post(
                f"{base}/api/v1/devices/proc_thermostat_1/commands",
                json={"values": {"hvac_mode": "heat", "target_temperature": 22}},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 202
                location = resp.headers["Location"]

            async def acked() -> bool:
                _, body = await _get(session, base + location, token)
                return bool(body["status"] == "acked")

            await wait_for(acked, what="the command to be acked")
            # Without write permission the same token shape is refused.
            reader = await asyncio.to_thread(mint, tmp_path / "dev_key.pem", port, "read:devices")
            async with session.post(
                f"{base}/api/v1/devices/proc_thermostat_1/commands",
                json={"values": {"hvac_mode": "off"}},
                headers={"Authorization": f"Bearer {reader}"},
            ) as resp:
                assert resp.status == 403
            # A token over the auth limit (8 KiB) gets our error shape, not aiohttp's header-size 400.
            async with session.get(f"{base}/api/v1/devices", headers={"Authorization": "Bearer " + "a" * 9000}) as resp:
                assert resp.status == 401
                body = await resp.json()
                assert body["error"]["code"] == "invalid_token"
                assert "larger than" in resp.headers["WWW-Authenticate"]
        finally:
            await asyncio.to_thread(sim.stop)

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    text = log.read_text()
    assert "Stop signal received" in text
    assert "Stopped" in text
    assert "Traceback" not in text

    # Everything ingested before the stop was flushed to the database file.
    store = create_store(f"sqlite:///{tmp_path / 'server.db'}", retention_days=30, dead_letter_limit=10)
    await store.open()
    try:
        devices = await store.list_devices()
        assert [d.device_id for d in devices] == ["proc_thermostat_1"]
        state = await store.get_state("proc_thermostat_1")
        assert state is not None
        assert state.values["target_temperature"] == 22
    finally:
        await store.close()


async def browse_for_port(port: int) -> dict[str, str | None]:
    """Browse _thermo-bridge._tcp on loopback for an instance on ``port``; return its TXT properties."""
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    names: set[str] = set()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            names.add(name)

    browser = AsyncServiceBrowser(zc.zeroconf, [SERVICE_TYPE], handlers=[on_change])

    async def ours() -> dict[str, str | None] | None:
        for name in list(names):
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(zc.zeroconf, 1000) and info.port == port:
                return dict(info.decoded_properties)
        return None

    try:
        return await wait_for(
            ours, timeout=15, interval=0.1, what=lambda: f"a zeroconf instance on port {port} (saw {sorted(names)})"
        )
    finally:
        await browser.async_cancel()
        await zc.async_close()


def _run_server(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermo_bridge_server"], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_invalid_option_exits_2_naming_it(mosquitto: Mosquitto, tmp_path: Path) -> None:
    env = server_env(mosquitto, tmp_path, 8099, THERMO_BRIDGE_HTTP_PORT="99999", THERMO_BRIDGE_MQTT_PASSWORD="s3cret!")
    result = _run_server(env)
    assert result.returncode == 2
    assert "http_port" in result.stderr
    assert "s3cret!" not in result.stderr + result.stdout


def test_refuses_to_start_without_auth0_unless_dev_auth(mosquitto: Mosquitto, tmp_path: Path) -> None:
    env = server_env(mosquitto, tmp_path, free_port(), THERMO_BRIDGE_DEV_AUTH="false")
    result = _run_server(env)
    assert result.returncode == 2
    assert "auth0_domain" in result.stderr
    assert "dev_auth" in result.stderr


def test_port_in_use_exits_1(mosquitto: Mosquitto, tmp_path: Path) -> None:
    import socket  # noqa: PLC0415

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_server(server_env(mosquitto, tmp_path, port))
    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"THERMO_BRIDGE_STORE_URL": "sqlite:///{tmp}/server.db?synchronous=fast"}, "sqlite synchronous must be"),
        ({"THERMO_BRIDGE_DEV_KEY_PATH": "{tmp}/not_a_key.pem"}, "is not an unencrypted PEM private key"),
    ],
    ids=["store_url_option", "dev_key_file"],
)
def test_unusable_store_url_or_dev_key_exits_1_with_one_clear_line(
    mosquitto: Mosquitto, tmp_path: Path, extra: dict[str, str], expected: str
) -> None:
    """Settings that only fail when the server builds its parts: an error line, no traceback, nothing left open."""
    (tmp_path / "not_a_key.pem").write_text("not a key\n")
    (tmp_path / "not_a_key.pem").chmod(0o600)
    env = server_env(mosquitto, tmp_path, free_port(), **{k: v.format(tmp=tmp_path) for k, v in extra.items()})
    result = _run_server(env)
    assert result.returncode == 1
    assert "Cannot start: " in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert "Unclosed" not in result.stderr


async def test_serves_while_the_broker_is_down_and_recovers(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "late", websockets=False)  # ports chosen, not started yet
    jwks = JwksServer()
    await jwks.start()
    config = make_config(broker, tmp_path / "late.db", jwks)
    config = dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, connect_timeout=0.3))
    app = await create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await _get(session, f"http://127.0.0.1:{port}/health")
            assert status == 503
            assert body["broker"] == {"connected": False}
            await asyncio.to_thread(broker.start)

            async def healthy() -> bool:
                return (await _get(session, f"http://127.0.0.1:{port}/health"))[0] == 200

            await wait_for(healthy, timeout=40, what="the transport to connect once the broker is up")
            assert app[COMPONENTS].transport.connected
    finally:
        await runner.cleanup()
        await jwks.stop()
        await asyncio.to_thread(broker.stop)


async def test_zeroconf_advertisement_on_loopback() -> None:
    advertiser = Advertiser(
        port=18123,
        version="9.9.9",
        api_path="/api/v1",
        base_topic="tb/test",
        host="127.0.0.1",
        name="thermo_bridge test",
        interfaces=["127.0.0.1"],
    )
    await advertiser.start()
    browser_zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    changes: list[tuple[str, ServiceStateChange]] = []

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        changes.append((name, state_change))

    browser = AsyncServiceBrowser(browser_zc.zeroconf, [SERVICE_TYPE], handlers=[on_change])
    try:
        name = advertiser.info.name
        await wait_for(lambda: (name, ServiceStateChange.Added) in changes, timeout=10, what="the browser to find us")
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        assert await info.async_request(browser_zc.zeroconf, 3000)
        assert info.port == 18123
        assert info.parsed_addresses() == ["127.0.0.1"]
        assert info.decoded_properties == {"version": "9.9.9", "api_path": "/api/v1", "base_topic": "tb/test"}
        await advertiser.stop()
        await wait_for(lambda: (name, ServiceStateChange.Removed) in changes, timeout=10, what="the goodbye packet")
        await advertiser.stop()  # idempotent
    finally:
        await browser.async_cancel()
        await browser_zc.async_close()
        await advertiser.stop()


def test_openapi_module_prints_the_document() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "thermo_bridge_server.http.openapi"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert json.loads(result.stdout)["openapi"] == "3.1.0"


def test_help_lists_the_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "thermo_bridge_server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    for flag in ("--rate-limit-per-minute", "--cors-origins", "--dev-auth", "--zeroconf", "--store-url"):
        assert flag in result.stdout


def test_readme_documents_every_option() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("<!-- server-start -->") : readme.index("<!-- server-end -->")]
    for option in OPTIONS:
        row = f"| `{option.name}` | `{option.env}` | `{option.cli}` |"
        assert row in section, f"README's configuration table lacks {option.name}"


async def test_api_end_to_end_on_postgresql(pg_dsn: str, tmp_path: Path) -> None:
    """The same API over the PostgreSQL store: devices, state, history, a command acked, isolation."""
    stack = ServerStack(tmp_path, thermostats=1, sensors=1, prefix="pg", env={"store_url": pg_dsn})
    await stack.start()
    try:
        api = stack.api
        admin = api.token("auth0|admin", ADMIN)
        assert (
            await api.call("PUT", "/api/v1/admin/devices/pg_sensor_1/home", token=admin, json_body={"home": "other"})
        ).status == 200
        user = api.token("auth0|pg-user", RW, homes=[stack.components.config.default_home])
        listed = await api.call("GET", "/api/v1/devices", token=user)
        assert [d["id"] for d in listed.json()["devices"]] == ["pg_thermostat_1"]
        assert (await api.call("GET", "/api/v1/devices/pg_sensor_1/state", token=user)).status == 403
        state = await api.call("GET", "/api/v1/devices/pg_thermostat_1/state", token=user)
        assert "temperature" in state.json()["values"]
        history = await api.call(
            "GET", "/api/v1/devices/pg_thermostat_1/history", token=user, params={"resolution": "1m"}
        )
        assert history.json()["points"]
        sent = await api.call(
            "POST",
            "/api/v1/devices/pg_thermostat_1/commands",
            token=user,
            json_body={"values": {"target_temperature": 19.5}},
        )
        assert sent.status == 202

        async def acked() -> bool:
            return bool((await api.call("GET", sent.headers["Location"], token=user)).json()["status"] == "acked")

        await wait_for(acked, what="the command acked through PostgreSQL")
    finally:
        await stack.stop()


def test_demo_script_check_mode() -> None:
    """The README's one-minute demo works: scripts/demo --check runs its own curl examples."""
    root = Path(__file__).parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THERMO_BRIDGE_", "SUPERVISOR_"))}
    proc = subprocess.Popen(
        [str(root / "scripts" / "demo"), "--check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # on a timeout the whole group (broker, server, simulator) is stopped
    )
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"scripts/demo --check hung:\n{stdout[-2000:]}{stderr[-2000:]}")
    assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "--check: OK (4 devices" in stdout
    assert "export TOKEN=" in stdout
    assert "Stopped." in stdout
