"""The server announces each command's outcome on ``<base>/<id>/command`` (real broker, simulator)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.server.api_stack import ADMIN, RW, ServerStack
from tests.waiting import wait_for
from thermo_bridge_protocol import CommandStatus, parse_command_report

THERMOSTAT = "cr_thermostat_1"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ServerStack]:
    stack = ServerStack(tmp_path, thermostats=1, sensors=0, prefix="cr", env={"command_timeout": "1"})
    await stack.start()
    yield stack
    await stack.stop()


@pytest.fixture
def reports(stack: ServerStack) -> Iterator[list[tuple[str, bytes, int, bool]]]:
    """Every message on thermo_bridge/+/command: (topic, payload, qos, retain)."""
    seen: list[tuple[str, bytes, int, bool]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="report-listener", protocol=mqtt.MQTTv5)

    def on_message(_client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        seen.append((message.topic, message.payload, message.qos, message.retain))

    client.on_message = on_message
    client.connect(stack.broker.host, stack.broker.port)
    client.subscribe("thermo_bridge/+/command", qos=1)
    client.loop_start()
    yield seen
    client.loop_stop()
    client.disconnect()


async def send(stack: ServerStack, sub: str, values: dict[str, Any]) -> dict[str, Any]:
    token = stack.api.token(sub, RW, homes=["default"])
    resp = await stack.api.call(
        "POST", f"/api/v1/devices/{THERMOSTAT}/commands", token=token, json_body={"values": values}
    )
    assert resp.status == 202, resp.text
    command: dict[str, Any] = resp.json()
    return command


async def test_an_acked_command_is_announced_once_with_its_sender(
    stack: ServerStack, reports: list[tuple[str, bytes, int, bool]]
) -> None:
    await asyncio.sleep(0.3)  # the listener's subscription is in place
    command = await send(stack, "auth0|alice", {"target_temperature": 22.5, "hvac_mode": "heat"})
    await wait_for(lambda: reports, what="the command report")
    await asyncio.sleep(0.5)  # no second report follows
    assert len(reports) == 1
    topic, payload, qos, retain = reports[0]
    assert (topic, qos, retain) == (f"thermo_bridge/{THERMOSTAT}/command", 1, False)
    report = parse_command_report(payload)
    assert report.command_id == command["id"]
    assert report.values == {"target_temperature": 22.5, "hvac_mode": "heat"}
    assert report.user == "auth0|alice"
    assert report.status is CommandStatus.ACKED
    assert report.reason is None
    stored = await stack.components.store.get_command(command["id"])
    assert stored is not None
    assert report.ts == stored.updated_at
    assert stack.components.ingest.stats()["command_reports_sent"] == 1


def publish(stack: ServerStack, topic: str, payload: dict[str, Any]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="stand-in-device")
    client.connect(stack.broker.host, stack.broker.port)
    client.loop_start()
    client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


async def test_refused_and_timed_out_commands_are_announced_with_the_reason(
    stack: ServerStack, reports: list[tuple[str, bytes, int, bool]]
) -> None:
    await asyncio.to_thread(stack.sim.stop)  # the test answers for the device now
    await asyncio.sleep(0.3)
    refused = await send(stack, "auth0|bob", {"target_temperature": 21.0})
    ack = {"id": refused["id"], "status": "error", "reason": "fault: valve stuck"}
    await asyncio.to_thread(publish, stack, f"thermo_bridge/{THERMOSTAT}/ack", ack)
    await wait_for(lambda: reports, what="the refusal's report")
    report = parse_command_report(reports[0][1])
    assert (report.command_id, report.status, report.user) == (refused["id"], CommandStatus.FAILED, "auth0|bob")
    assert report.reason == "fault: valve stuck"

    unanswered = await send(stack, "auth0|carol", {"target_temperature": 20.0})
    await wait_for(lambda: len(reports) == 2, what="the time-out's report", timeout=15)
    report = parse_command_report(reports[1][1])
    assert (report.command_id, report.status, report.user) == (unanswered["id"], CommandStatus.TIMED_OUT, "auth0|carol")
    assert report.reason == "no acknowledgement from the device within 1 s"


async def test_the_server_does_not_listen_to_its_own_reports(stack: ServerStack) -> None:
    filters = list(stack.components.transport._subs)
    assert filters
    assert not [f for f in filters if f.endswith("/command")]
    # And a report someone else publishes changes nothing here.
    admin = stack.api.token("auth0|admin", ADMIN)
    before = (await stack.api.call("GET", "/api/v1/admin/dead-letters", token=admin)).json()
    payload = {"id": "c1", "values": {"hvac_mode": "heat"}, "user": "x", "status": "acked", "ts": 1767225600.0}
    await asyncio.to_thread(publish, stack, f"thermo_bridge/{THERMOSTAT}/command", payload)
    await asyncio.sleep(0.5)
    after = (await stack.api.call("GET", "/api/v1/admin/dead-letters", token=admin)).json()
    assert after == before
    assert sum(stack.components.ingest.rejected_by_reason.values()) == 0
