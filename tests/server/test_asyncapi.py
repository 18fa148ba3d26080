"""docs/asyncapi.yaml is valid for AsyncAPI's own parser, and real messages match its schemas.

The parser runs in Node (``scripts/asyncapi.mjs``, ``@asyncapi/parser`` from npm). A scenario
against a real server then produces every WebSocket and SSE message type, and each message
the client sent and received is validated against the document's schema for its type.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft7Validator  # type: ignore[import-untyped]  # no stubs installed
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.server.api_stack import ADMIN, RW, ServerStack
from tests.server.realtime_client import WsClient

ROOT = Path(__file__).resolve().parents[2]
SERVER_MESSAGES = {
    "auth_required": "AuthRequired",
    "auth_ok": "AuthOk",
    "auth_invalid": "AuthInvalid",
    "token_expired": "TokenExpired",
    "status": "Status",
    "result": "Result",
    "pong": "Pong",
    "event": "EventMessage",
}
SSE_MESSAGES = {"ready": "Position", "snapshot": "Snapshot", "status": "ServerStatus"}


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node is needed (scripts/setup installs the npm side)"
    result = subprocess.run(
        [node, "scripts/asyncapi.mjs", "docs/asyncapi.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # the report explains a failure better than the exit status
    )
    report: dict[str, Any] = json.loads(result.stdout)
    errors = [d for d in report["diagnostics"] if d["severity"] == 0]
    assert result.returncode == 0, errors or result.stderr
    return report


def test_the_document_parses_without_errors_or_warnings(asyncapi: dict[str, Any]) -> None:
    # Severity 2 is the parser's hint to move to 3.1; the document is written against 3.0.
    assert [d for d in asyncapi["diagnostics"] if d["severity"] < 2] == []
    assert set(asyncapi["messages"]) >= {"websocket", "sse", "deviceState", "deviceConfig", "commandReport"}
    for channel, messages in asyncapi["messages"].items():
        for name, payload in messages.items():
            assert payload, f"{channel}.{name} has no payload schema after resolution"


class Schemas:
    """The document's schemas as one JSON Schema (draft 7: AsyncAPI's schema dialect) registry."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.schemas = report["schemas"]
        root = {"components": {"schemas": self.schemas}}
        self.registry = Registry().with_resource("urn:asyncapi", Resource.from_contents(root, DRAFT7))

    def errors(self, name: str, instance: Any) -> list[str]:
        schema = {"$ref": f"urn:asyncapi#/components/schemas/{name}"}
        validator = Draft7Validator(schema, registry=self.registry)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ServerStack]:
    server = ServerStack(tmp_path, prefix="aa", env={"ws_allow_no_origin": "true", "rate_limit_per_minute": "100000"})
    await server.start()
    yield server
    await server.stop()


def _check(schemas: Schemas, name: str, message: Any, seen: set[str]) -> None:
    errors = schemas.errors(name, message)
    assert not errors, f"{name} {json.dumps(message)[:300]}: {errors}"
    seen.add(name)


async def test_every_websocket_and_sse_message_matches_the_document(
    asyncapi: dict[str, Any], stack: ServerStack
) -> None:
    schemas = Schemas(asyncapi)
    device, sensor = "aa_thermostat_1", "aa_sensor_1"
    realtime = stack.components.realtime
    original = realtime.settings
    realtime.settings = dataclasses.replace(original, expiry_grace=0.3)
    sent: list[dict[str, Any]] = []
    clients: list[WsClient] = []
    try:
        admin = WsClient(stack.api.base_url)
        clients.append(admin)
        auth = {"type": "auth", "access_token": stack.api.token("auth0|admin", ADMIN)}
        sent.append(auth)
        await admin.connect(auth["access_token"])
        commands: list[dict[str, Any]] = [
            {"type": "ping"},
            {"type": "get_devices", "kinds": ["thermostat"]},
            {"type": "get_state", "device_id": device},
            {"type": "get_state", "device_id": "ghost"},
            {"type": "subscribe"},
            {"type": "subscribe", "devices": [device], "since": {"epoch": stack.components.store.epoch, "offset": 0}},
            {
                "type": "send_command",
                "device_id": device,
                "values": {"target_temperature": 21.5},
                "idempotency_key": "a",
            },
            {"type": "auth", "access_token": stack.api.token("auth0|admin", ADMIN)},
            {"type": "subscribe", "events": ["availability"], "snapshot": False},
        ]
        for command in commands:
            msg_id = await admin.send(command)
            sent.append({"id": msg_id, **command})
        unsubscribe = {"type": "unsubscribe", "subscription": 9}
        await admin.until(lambda: 9 in admin.results, "the results")
        sent.append({"id": await admin.send(unsubscribe), **unsubscribe})
        realtime.broker_changed(False)  # what the MQTT transport reports when its connection drops
        realtime.broker_changed(True)
        store = stack.components.store
        stack.sim.emit_event(device, "button_press", {"n": 1})
        await store.set_device_home(sensor, "elsewhere")
        await store.apply_availability(sensor, False, time.time())
        await admin.until(
            lambda: (
                {e["type"] for events in admin.events.values() for e in events}
                >= {
                    "state",
                    "device_event",
                    "command",
                    "device_removed",
                    "device_updated",
                    "availability",
                    "device_added",
                }
            ),
            f"every event type (so far {sorted({e['type'] for ev in admin.events.values() for e in ev})})",
        )
        expiring = WsClient(stack.api.base_url)
        clients.append(expiring)
        await expiring.connect(stack.jwks.make_token("auth0|carol", RW, exp=time.time() + 1))
        await asyncio.wait_for(expiring.closed.wait(), 10)
        refused = WsClient(stack.api.base_url)
        clients.append(refused)
        await refused.connect("not.a.token", read=False)
        received = [m for client in clients for m in client.messages] + [
            m for client in clients for m in (client.auth,) if m is not None
        ]
        seen: set[str] = set()
        for message in received:
            _check(schemas, SERVER_MESSAGES[message["type"]], message, seen)
        _check(schemas, "AuthRequired", {"type": "auth_required", "version": realtime.settings.version}, seen)
        assert seen >= set(SERVER_MESSAGES.values()), set(SERVER_MESSAGES.values()) - seen
        for message in sent:
            _check(schemas, "Auth" if "id" not in message else "ClientCommand", message, seen)
        await _check_sse(stack, schemas)
    finally:
        realtime.settings = original
        for client in clients:
            await client.close()


async def _check_sse(stack: ServerStack, schemas: Schemas) -> None:
    headers = {"Authorization": f"Bearer {stack.api.token('auth0|admin', ADMIN)}"}
    seen: set[str] = set()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.api.base_url}/api/v1/events", headers=headers) as resp,
    ):
        stack.sim.publish_state("aa_thermostat_1", temperature=19.25)
        record: dict[str, str] = {}
        async with asyncio.timeout(15):
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    continue
                if line:
                    field, _, value = line.partition(": ")
                    record[field] = value
                    continue
                name = SSE_MESSAGES.get(record.get("event", ""), "Event")
                _check(schemas, name, json.loads(record["data"]), seen)
                record = {}
                if "Event" in seen:
                    break
    assert seen == {"ServerStatus", "Position", "Snapshot", "Event"}
