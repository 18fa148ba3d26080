"""The server status the integration accepts: what ``/internal/v1/status`` must look like.

The real server's answers are covered by test_server_link.py; these are the answers it never
gives but something else at that address might (another HTTP server, the server still starting).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from homeassistant.core import HomeAssistant

from custom_components.thermo_bridge.server import (
    ServerStatus,
    ServerUnreachableError,
    async_fetch_status,
    parse_status,
)
from tests.broker import free_port

STATUS: dict[str, Any] = {
    "version": "0.1.0",
    "base_topic": "thermo_bridge",
    "broker_connected": True,
    "store_ok": True,
    "web_clients": 2,
    "messages_per_minute": 12,
    "rejected_total": 0,
    "database_bytes": 65536,
    "devices": 3,
}


def test_a_status_is_parsed() -> None:
    assert parse_status(STATUS) == ServerStatus(
        version="0.1.0",
        base_topic="thermo_bridge",
        broker_connected=True,
        store_ok=True,
        web_clients=2,
        messages_per_minute=12.0,
        rejected_total=0,
        database_bytes=65536,
        devices=3,
    )
    assert parse_status({**STATUS, "database_bytes": None}).database_bytes is None  # the store could not tell


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([STATUS], "not a JSON object"),
        ({**STATUS, "version": ""}, "no version"),
        ({**STATUS, "base_topic": None}, "no base_topic"),
        ({**STATUS, "store_ok": "yes"}, "store_ok is not true or false"),
        ({**STATUS, "messages_per_minute": -1}, "messages_per_minute is not a rate"),
        ({**STATUS, "messages_per_minute": True}, "messages_per_minute is not a rate"),
        ({**STATUS, "messages_per_minute": float("nan")}, "messages_per_minute is not a rate"),
        ({**STATUS, "web_clients": 1.5}, "web_clients is not a count"),
        ({**STATUS, "rejected_total": -1}, "rejected_total is not a count"),
        ({**STATUS, "devices": False}, "devices is not a count"),
        ({**STATUS, "database_bytes": 2**60}, "database_bytes is not a count"),
        ({key: value for key, value in STATUS.items() if key != "devices"}, "devices is not a count"),
    ],
)
def test_what_is_not_a_status_is_refused(body: object, message: str) -> None:
    with pytest.raises(ServerUnreachableError, match=message):
        parse_status(body)


@pytest.fixture
async def other_server(socket_enabled: None) -> AsyncIterator[int]:
    """An HTTP server that is not (yet) a Thermo Bridge server: 503 while starting, then HTML."""
    calls = 0

    async def answer(_request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:  # what the add-on's stand-in answers before the server is assembled
            return web.json_response({"error": {"code": "starting"}}, status=503)
        return web.Response(text="<html>a router's login page</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/internal/v1/status", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield port
    await runner.cleanup()


async def test_other_answers_are_not_a_status(hass: HomeAssistant, other_server: int) -> None:
    with pytest.raises(ServerUnreachableError, match="HTTP 503"):
        await async_fetch_status(hass, "127.0.0.1", other_server, "token")
    with pytest.raises(ServerUnreachableError):
        await async_fetch_status(hass, "127.0.0.1", other_server, "token")
