"""A whole server on loopback for the API tests: private mosquitto, SQLite file, JWKS server, simulator.

Everything is real: the app is built by ``create_app`` from a ``ServerConfig`` that
``load_config`` validated, served by aiohttp on a free port, and called over HTTP with
RSA-signed tokens from ``tests/server/jwks.py``. Every JSON answer of a documented route
is checked against the OpenAPI document's schema for that status (``ApiClient.call``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs installed
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tests.broker import Mosquitto
from tests.server.jwks import JwksServer
from tests.waiting import wait_for
from thermo_bridge_server.app import COMPONENTS, Components, create_app
from thermo_bridge_server.config import ServerConfig, load_config
from thermo_bridge_server.http.openapi import build_document
from thermo_bridge_sim.simulator import Simulator

ADMIN = ("read:devices", "write:devices", "admin")
RW = ("read:devices", "write:devices")


def make_config(broker: Mosquitto, db: Path, jwks: JwksServer, **env: str) -> ServerConfig:
    """A validated config for this broker, database and token issuer (zeroconf off)."""
    values = {
        "THERMO_BRIDGE_MQTT_HOST": broker.host,
        "THERMO_BRIDGE_MQTT_PORT": str(broker.port),
        "THERMO_BRIDGE_MQTT_CLIENT_ID": f"tb_test_{broker.port}",
        "THERMO_BRIDGE_STORE_URL": f"sqlite:///{db}",
        "THERMO_BRIDGE_AUTH0_DOMAIN": "thermo-bridge-test.eu.auth0.com",
        "THERMO_BRIDGE_AUTH0_AUDIENCE": jwks.audience,
        "THERMO_BRIDGE_ZEROCONF": "false",
        "THERMO_BRIDGE_HTTP_PORT": "8099",
        "THERMO_BRIDGE_OPTIONS_FILE": "",
        # Beside the test's database even when store_url points at PostgreSQL.
        "THERMO_BRIDGE_INTERNAL_TOKEN_PATH": str(db.with_name(f"{db.stem}_internal_token")),
    }
    values.update({f"THERMO_BRIDGE_{key.upper()}": value for key, value in env.items()})
    config = load_config([], values)
    # The test issuer is http://127.0.0.1:<port>/ (a real tenant is https://<domain>/).
    return dataclasses.replace(config, auth=jwks.settings(homes_claim=config.homes_claim))


class ApiClient:
    """HTTP calls to the running server, with OpenAPI response validation."""

    def __init__(self, base_url: str, jwks: JwksServer) -> None:
        self.base_url = base_url
        self.jwks = jwks
        self.session = aiohttp.ClientSession()
        self.document = build_document()
        self.schemas = DocumentSchemas(self.document)
        self._routes = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path) for path in self.document["paths"]
        ]

    def token(self, sub: str, permissions: Iterable[str] = RW, homes: Iterable[str] | None = None) -> str:
        """A real RS256 access token for ``sub``."""
        return self.jwks.make_token(sub, tuple(permissions), homes=homes)

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        validate: bool = True,
    ) -> Response:
        """One request; the JSON body is checked against the documented schema of its status."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.base_url + path, json=json_body, data=data, headers=all_headers, params=params
        ) as resp:
            raw = await resp.read()
            response = Response(resp.status, resp.headers.copy(), raw)
        if validate:
            self.check_documented(method, path, response)
        return response

    def check_documented(self, method: str, path: str, response: Response) -> None:
        """Validate a JSON response against the OpenAPI operation's schema for its status."""
        template = next((tpl for regex, tpl in self._routes if regex.match(path)), None)
        if template is None:
            return
        operation = self.document["paths"][template].get(method.lower())
        if operation is None:
            return
        ctype = response.headers.get("Content-Type", "")
        if not ctype.startswith("application/json"):
            return
        spec = operation["responses"].get(str(response.status))
        assert spec is not None, f"{method} {template} answered {response.status}, which is not documented"
        at = pointer_to("paths", template, method.lower(), "responses", str(response.status))
        if "$ref" in spec:  # a shared response: its schema is where the reference points
            at = spec["$ref"].removeprefix("#")
        schema_at = at + pointer_to("content", "application/json", "schema")
        errors = self.schemas.errors(response.json(), schema_at)
        assert not errors, f"{method} {path} {response.status} does not match its documented schema: {errors}"

    async def close(self) -> None:
        await self.session.close()


@dataclasses.dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def error(self) -> dict[str, Any]:
        """The error object, asserting the one documented shape."""
        body = self.json()
        assert set(body) == {"error"}, body
        err = body["error"]
        assert err["status"] == self.status
        assert isinstance(err["code"], str)
        assert err["code"]
        assert isinstance(err["message"], str)
        assert err["message"]
        return dict(err)


class ServerStack:
    """Broker + JWKS + server + simulator; ``start``/``stop`` from async fixtures."""

    def __init__(
        self,
        workdir: Path,
        *,
        thermostats: int = 2,
        sensors: int = 1,
        prefix: str = "t",
        env: Mapping[str, str] | None = None,
        extra_routes: Iterable[web.RouteDef] = (),
        simulate: bool = True,
    ) -> None:
        self.workdir = workdir
        self.broker = Mosquitto(workdir / "mosquitto", websockets=False)
        self.jwks = JwksServer()
        self.sim_args = {"thermostats": thermostats, "sensors": sensors, "id_prefix": prefix}
        self.env = dict(env or {})
        self.extra_routes = list(extra_routes)
        self.simulate = simulate
        self.simulator: Simulator | None = None
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.client: ApiClient | None = None
        self.config: ServerConfig | None = None
        self.port = 0

    @property
    def components(self) -> Components:
        assert self.app is not None
        return self.app[COMPONENTS]

    @property
    def sim(self) -> Simulator:
        assert self.simulator is not None
        return self.simulator

    @property
    def api(self) -> ApiClient:
        assert self.client is not None
        return self.client

    async def start(self) -> None:
        await asyncio.to_thread(self.broker.start)
        await self.jwks.start()
        self.config = make_config(self.broker, self.workdir / "store.db", self.jwks, **self.env)
        await self._serve(0)
        if self.simulate:
            self.simulator = Simulator(self.broker.host, self.broker.port, seed=7, **self.sim_args)  # type: ignore[arg-type]
            await asyncio.to_thread(self.simulator.start)
            wanted = set(self.simulator.devices)
            await wait_for(lambda: self._known(wanted), what=f"devices {sorted(wanted)} in the store")

    async def _serve(self, port: int) -> None:
        assert self.config is not None
        self.app = await create_app(self.config)
        self.app.router.add_routes(self.extra_routes)
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        runner = self.runner
        self.components.metrics.open_connections = lambda: len(runner.server.connections) if runner.server else 0
        if self.client is not None:
            await self.client.close()
        self.client = ApiClient(f"http://127.0.0.1:{self.port}", self.jwks)

    async def restart(self) -> None:
        """A graceful stop of the server (SIGTERM's path) and a new one on the same port and database."""
        assert self.runner is not None
        await self.runner.cleanup()
        await self._serve(self.port)

    async def _known(self, wanted: set[str]) -> bool:
        devices = await self.components.store.list_devices()
        states = [await self.components.store.get_state(d) for d in wanted]
        return wanted <= {d.device_id for d in devices} and all(s is not None for s in states)

    async def stop(self) -> None:
        if self.simulator is not None:
            await asyncio.to_thread(self.simulator.stop)
        if self.client is not None:
            await self.client.close()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.jwks.stop()
        await asyncio.to_thread(self.broker.stop)


# --------------------------------------------------------------------------- schema checks


def resolve(document: Mapping[str, Any], node: Any) -> Any:
    """Follow a local ``$ref``."""
    while isinstance(node, Mapping) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


OPENAPI_URI = "urn:thermo-bridge:openapi"
"""Where the registry keeps the OpenAPI document, so its ``#/components/...`` references resolve."""


class DocumentSchemas:
    """Draft 2020-12 validation against the schemas of an OpenAPI 3.1 document (``jsonschema``)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._registry = Registry().with_resource(OPENAPI_URI, DRAFT202012.create_resource(dict(document)))
        self._validators: dict[str, Any] = {}

    def errors(self, instance: object, pointer: str) -> list[str]:
        """Every violation of the schema at JSON ``pointer`` in the document, as 'location: problem'."""
        validator = self._validators.get(pointer)
        if validator is None:
            ref = {"$ref": f"{OPENAPI_URI}#{pointer}"}
            validator = self._validators[pointer] = Draft202012Validator(ref, registry=self._registry)
        return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


def pointer_to(*parts: str) -> str:
    """A JSON pointer (RFC 6901) from its unescaped parts."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)
