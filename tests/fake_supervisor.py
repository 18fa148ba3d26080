"""A stand-in for the Home Assistant Supervisor's HTTP API, as an add-on sees it.

What the server calls, answered the way ``supervisor/api`` does (``{"result": "ok", "data": ...}``
or ``{"result": "error", "message": ...}``, the add-on's token checked on every call):
``GET /services/mqtt`` (the Mosquitto add-on's broker, once ``provide_mqtt`` was called),
``GET /addons/self/info`` and ``POST /discovery`` (recorded; only the services the add-on's
config.yaml lists are accepted).
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

TOKEN = "supervisor-token-for-the-add-on"
HOSTNAME = "a0d7b954-thermo-bridge"


class FakeSupervisor:
    """Start with ``start()`` (free loopback port), read ``url``, ``discoveries``; ``stop()`` afterwards."""

    def __init__(self, *, discovery_services: tuple[str, ...] = ("thermo_bridge",), unready: int = 0) -> None:
        self.discovery_services = discovery_services
        self.unready = unready
        """The first ``unready`` calls of each kind answer 502, as while the Supervisor starts."""
        self.mqtt: dict[str, Any] | None = None
        self.discoveries: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def provide_mqtt(self, host: str, port: int) -> None:
        """The Mosquitto add-on registered its service."""
        self.mqtt = {"host": host, "port": port, "ssl": False, "protocol": "3.1.1"}
        self.mqtt |= {"username": "addons", "password": "made-by-mosquitto", "addon": "core_mosquitto"}

    async def start(self) -> None:
        app = web.Application(middlewares=[self._check])
        app.router.add_get("/services/mqtt", self._services_mqtt)
        app.router.add_get("/addons/self/info", self._addon_info)
        app.router.add_post("/discovery", self._discovery)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _ok(data: dict[str, Any]) -> web.Response:
        return web.json_response({"result": "ok", "data": data})

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"result": "error", "message": message}, status=status)

    @web.middleware
    async def _check(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._error(401, "Unauthorized")
        if sum(1 for call in self.calls if call == (request.method, request.path)) <= self.unready:
            return web.Response(status=502, text="Bad Gateway")
        response: web.StreamResponse = await handler(request)
        return response

    async def _services_mqtt(self, request: web.Request) -> web.Response:
        if self.mqtt is None:
            return self._error(400, "Service not enabled")
        return self._ok(self.mqtt)

    async def _addon_info(self, request: web.Request) -> web.Response:
        return self._ok({"name": "Thermo Bridge", "slug": "a0d7b954_thermo_bridge", "hostname": HOSTNAME})

    async def _discovery(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("service") not in self.discovery_services:
            return self._error(403, "Add-ons must list services they provide via discovery in their config!")
        self.discoveries.append(body)
        return self._ok({"uuid": uuid.uuid4().hex})
