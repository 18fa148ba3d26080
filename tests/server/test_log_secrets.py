"""No credential ever reaches the log: a full run of the real command at DEBUG, its whole output scanned.

``python -m thermo_bridge_server`` runs as the add-on does: under a Supervisor (a local one
answering like it, with the add-on's ``SUPERVISOR_TOKEN``) whose MQTT service hands out a
password-protected broker and which takes the server's discovery (carrying its internal
token). Then everything a user does, with real tokens: REST with good, expired, forged and
malformed tokens and an oversized header, SSE tickets (minted, used, reused), WebSocket
sessions with refreshes good and bad and a refused auth, a command to a device, an admin
grant, the internal status with the right and a wrong token. Once per auth mode: Auth0 (a
JWKS server) and dev auth (the server's own key file). Afterwards the output must not hold
16 characters in a row of any token signature, ticket, password, the Supervisor token, the
internal token or the dev key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.broker import Mosquitto, free_port
from tests.server.api_stack import ADMIN, RW
from tests.server.jwks import JwksServer
from tests.server.realtime_client import WsClient
from tests.waiting import wait_for
from thermo_bridge_server.auth.devauth import DevIssuer
from thermo_bridge_sim.simulator import Simulator

MQTT_USER = "thermo-bridge-addon"
MQTT_PASSWORD = "mqtt-pw-3f1b9c7e5d"  # the secrets the test looks for
SUPERVISOR_TOKEN = "supervisor-token-8a2d4c6e0b"
DOMAIN = "thermo-bridge-test.eu.auth0.com"


class Supervisor:
    """Answers as the Supervisor does, for the add-on's token only: its MQTT service, its info, discovery."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.discovered: list[dict[str, object]] = []

    async def start(self) -> None:
        def refused(request: web.Request) -> web.Response | None:
            if request.headers.get("Authorization") != f"Bearer {SUPERVISOR_TOKEN}":
                return web.json_response({"result": "error", "message": "Unauthorized"}, status=401)
            return None

        async def info(request: web.Request) -> web.Response:
            return refused(request) or web.json_response({"result": "ok", "data": {"hostname": "local-tb"}})

        async def discovery(request: web.Request) -> web.Response:
            if (answer := refused(request)) is not None:
                return answer
            self.discovered.append(await request.json())
            return web.json_response({"result": "ok", "data": {"uuid": "0f1e2d3c"}})

        async def mqtt(request: web.Request) -> web.Response:
            if (answer := refused(request)) is not None:
                return answer
            data = {
                "addon": "core_mosquitto",
                "host": self.broker.host,
                "port": self.broker.port,
                "ssl": False,
                "protocol": "3.1.1",
                "username": MQTT_USER,
                "password": MQTT_PASSWORD,
            }
            return web.json_response({"result": "ok", "data": data})

        app = web.Application()
        app.router.add_get("/services/mqtt", mqtt)
        app.router.add_get("/addons/self/info", info)
        app.router.add_post("/discovery", discovery)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@contextlib.asynccontextmanager
async def running_server(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "thermo_bridge_server", env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class Tokens:
    """Mints real RS256 tokens for the mode under test and remembers every one, for the scan."""

    def __init__(self, mode: str, jwks: JwksServer | None, dev: DevIssuer | None) -> None:
        self.mode, self.jwks, self.dev = mode, jwks, dev
        self.minted: list[str] = []

    def __call__(self, sub: str, permissions: tuple[str, ...], **claims: Any) -> str:
        if self.dev is not None:
            token = self.dev.mint(sub, permissions, homes=["default"], **claims)
        else:
            assert self.jwks is not None
            token = self.jwks.make_token(sub, permissions, homes=["default"], iss=f"https://{DOMAIN}/", **claims)
        self.minted.append(token)
        return token


async def _user_session(base: str, tokens: Tokens, tickets: list[str]) -> None:
    """What users and attackers do, against every entry point that takes a credential."""
    admin = tokens("auth0|admin", ADMIN)
    user = tokens("auth0|alice", RW)
    expired = tokens("auth0|alice", RW, exp=1_000_000_000)
    header, payload, signature = user.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    tokens.minted.append(forged)
    api = base + "/api/v1"
    async with aiohttp.ClientSession() as session:

        async def call(method: str, path: str, token: str | None = None, **kwargs: object) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with session.request(method, api + path, headers=headers, **kwargs) as resp:  # type: ignore[arg-type]
                await resp.read()
                return resp.status

        devices_seen = await wait_for(
            lambda: _devices(session, api, admin), what="the simulated devices through the API", timeout=30
        )
        assert await call("GET", "/devices", user) == 200
        assert await call("GET", "/devices", expired) == 401
        assert await call("GET", "/devices", forged) == 401
        assert await call("GET", "/devices", user + " extra") == 400
        assert await call("GET", "/devices", "x" * 20_000) == 400  # past the HTTP parser's header limit
        assert await call("PUT", "/admin/grants/auth0|alice", admin, json={"homes": ["default"]}) == 200
        thermostat = next(d for d in devices_seen if d.startswith("log_thermostat"))
        assert (
            await call("POST", f"/devices/{thermostat}/commands", user, json={"values": {"hvac_mode": "heat"}}) == 202
        )
        async with session.post(api + "/events/tickets", headers={"Authorization": f"Bearer {user}"}) as resp:
            ticket = (await resp.json())["ticket"]
        tickets.append(ticket)
        async with session.get(api + "/events", params={"ticket": ticket}) as resp:
            assert resp.status == 200
            await resp.content.readuntil(b"\n\n")
        assert await call("GET", f"/events?ticket={ticket}") == 401  # used up
        assert await call("GET", "/events", forged) == 401
    client = WsClient(base)
    try:
        assert (await client.connect(user))["type"] == "auth_ok"
        await client.subscribe(snapshot=True)
        refreshed = tokens("auth0|alice", RW)
        assert (await client.request({"type": "auth", "access_token": refreshed}))["success"] is True
        assert (await client.request({"type": "auth", "access_token": forged}))["success"] is False
    finally:
        await client.close()
    refused = WsClient(base)
    try:
        assert (await refused.connect(expired))["type"] == "auth_invalid"
    finally:
        await refused.close()


async def _devices(session: aiohttp.ClientSession, api: str, token: str) -> list[str] | None:
    async with session.get(api + "/devices", headers={"Authorization": f"Bearer {token}"}) as resp:
        if resp.status != 200:
            return None
        ids = [d["id"] for d in (await resp.json())["devices"]]
        return ids if len(ids) >= 2 else None


@pytest.mark.parametrize("mode", ["auth0", "dev"])
async def test_a_full_debug_run_logs_no_secret(mode: str, tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", websockets=False, users={MQTT_USER: MQTT_PASSWORD})
    await asyncio.to_thread(broker.start)
    supervisor = Supervisor(broker)
    await supervisor.start()
    jwks = JwksServer() if mode == "auth0" else None
    if jwks is not None:
        await jwks.start()
    port = free_port()
    options = tmp_path / "options.json"
    settings: dict[str, object] = {
        "http_host": "127.0.0.1",
        "http_port": port,
        "store_url": f"sqlite:///{tmp_path / 'server.db'}",
        "log_level": "debug",
        "zeroconf": False,
        "ws_allow_no_origin": True,
        "dev_key_path": str(tmp_path / "dev_key.pem"),
        "internal_token_path": str(tmp_path / "internal_token"),
    }
    if jwks is not None:
        settings |= {"auth0_domain": DOMAIN, "auth0_audience": jwks.audience, "auth0_jwks_url": jwks.jwks_url}
    else:
        settings |= {"dev_auth": True}
    options.write_text(json.dumps(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THERMO_BRIDGE_", "SUPERVISOR_"))}
    env |= {
        "SUPERVISOR_TOKEN": SUPERVISOR_TOKEN,
        "THERMO_BRIDGE_SUPERVISOR_URL": supervisor.url,
        "THERMO_BRIDGE_OPTIONS_FILE": str(options),
    }
    simulator = Simulator(
        broker.host, broker.port, thermostats=1, sensors=1, id_prefix="log", username=MQTT_USER, password=MQTT_PASSWORD
    )
    log = tmp_path / "server.log"
    tickets: list[str] = []
    internal = ""
    try:
        await asyncio.to_thread(simulator.start)
        async with running_server(env, log) as proc:
            base = f"http://127.0.0.1:{port}"
            await wait_for(lambda: _healthy(base), what="the server healthy (broker from the Supervisor)", timeout=60)
            dev = None
            if mode == "dev":
                dev = DevIssuer(tmp_path / "dev_key.pem", issuer=f"http://localhost:{port}/", warn=False)
            tokens = Tokens(mode, jwks, dev)
            await _user_session(base, tokens, tickets)
            internal = (tmp_path / "internal_token").read_text().strip()
            await wait_for(lambda: supervisor.discovered, what="the discovery posted to the Supervisor")
            assert supervisor.discovered[0]["config"]["token"] == internal  # type: ignore[index]
            async with aiohttp.ClientSession() as session:
                for token, status in ((internal, 200), (internal[::-1], 401)):
                    headers = {"Authorization": f"Bearer {token}"}
                    async with session.get(base + "/internal/v1/status", headers=headers) as resp:
                        assert resp.status == status
        assert proc.returncode == 0, log.read_text()[-3000:]
    finally:
        await asyncio.to_thread(simulator.stop)
        if jwks is not None:
            await jwks.stop()
        await supervisor.stop()
        await asyncio.to_thread(broker.stop)

    text = log.read_text(errors="replace")
    # The run really logged at DEBUG, including the refusals and the admin's audit line.
    assert " DEBUG " in text
    assert "Rejected GET /api/v1/devices: 401" in text
    assert "Refused a malformed HTTP request" in text
    assert "Admin 'auth0|admin' set the grants of 'auth0|alice'" in text
    assert "Traceback" not in text
    secrets: dict[str, str] = {
        "the MQTT password": MQTT_PASSWORD,
        "the Supervisor token": SUPERVISOR_TOKEN,
        "the internal token": internal,
    }
    for index, token in enumerate(tokens.minted):
        secrets[f"the signature of token {index}"] = token.rsplit(".", 1)[1]
    for index, ticket in enumerate(tickets):
        secrets[f"SSE ticket {index}"] = ticket
    if mode == "dev":
        pem = (tmp_path / "dev_key.pem").read_text().splitlines()
        secrets["the dev key"] = "".join(line for line in pem if not line.startswith("-----"))
    assert len(secrets) >= 9  # 5 tokens, a ticket, the password, the Supervisor and internal tokens (the key)
    # Any 16 characters in a row of a secret count: a log line quoting part of one leaks it too.
    leaked = sorted({name for name, value in secrets.items() for part in _windows(value) if part in text})
    assert leaked == [], f"found in the log: {leaked}"


def _windows(secret: str, size: int = 16) -> set[str]:
    return {secret[i : i + size] for i in range(max(1, len(secret) - size + 1))}


async def _healthy(base: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        async with aiohttp.ClientSession() as session, session.get(base + "/health") as resp:
            return resp.status == 200
    return False
