"""The shared protocol fixtures (tests/fixtures/protocol) pushed through Home Assistant.

Every invalid message of every kind arrives over HA's MQTT: nothing raises, no entity
changes, and each is counted under the reason the contract names. Valid ones are applied;
commands are validated before anything is published.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.thermo_bridge.const import EVENT_THERMO_BRIDGE_COMMAND
from custom_components.thermo_bridge.protocol.topics import DEVICE_ID_RE

from .conftest import SetupEntry, send

FIXTURES = Path(__file__).parents[1] / "fixtures" / "protocol"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


DEVICES = {role: config for role, config in load("devices").items() if not role.startswith("_")}


def payload_of(case: dict[str, Any]) -> bytes:
    if "payload_hex" in case:
        return bytes.fromhex(case["payload_hex"])
    if "payload_text" in case:
        return case["payload_text"].encode()
    return json.dumps(case["payload"], ensure_ascii=False, separators=(",", ":")).encode()


def config_topic_id(raw: bytes) -> str:
    """The topic a device would announce this config on: its own id when that is a valid one."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return "contract_device"
    if isinstance(payload, dict) and isinstance(payload.get("id"), str) and DEVICE_ID_RE.fullmatch(payload["id"]):
        return payload["id"]
    return "contract_device"


def states(hass: HomeAssistant) -> dict[str, tuple[str, dict[str, Any]]]:
    return {s.entity_id: (s.state, dict(s.attributes)) for s in hass.states.async_all()}


@pytest.fixture
async def contract_entry(hass: HomeAssistant, setup_entry: SetupEntry) -> MockConfigEntry:
    entry = await setup_entry(options={"optimistic": True})
    for config in DEVICES.values():
        await send(hass, config["id"], "config", config)
        await send(hass, config["id"], "availability", "online")
    assert set(entry.runtime_data.devices) == {config["id"] for config in DEVICES.values()}
    return entry


@pytest.mark.parametrize("kind", ["state", "event", "ack", "availability", "config", "command"])
async def test_invalid_messages_are_counted_and_change_nothing(
    hass: HomeAssistant, contract_entry: MockConfigEntry, kind: str
) -> None:
    # An empty retained message means "cleared" to the router (removal / nothing to report).
    cases = [case for case in load(f"{kind}_cases")["invalid"] if payload_of(case)]
    before = states(hass)
    bridge = contract_entry.runtime_data
    for case in cases:
        if kind == "config":
            device_id = case.get("topic_id") or config_topic_id(payload_of(case))
        else:
            device_id = DEVICES[case.get("device", "thermostat")]["id"]
        await send(hass, device_id, kind, payload_of(case))
    assert states(hass) == before
    assert bridge.rejected_total == len(cases)
    expected = Counter(case["error"]["reason"] for case in cases)
    assert dict(bridge.rejected_by_reason) == dict(expected)


async def test_valid_state_reports_are_applied(hass: HomeAssistant, contract_entry: MockConfigEntry) -> None:
    bridge = contract_entry.runtime_data
    for case in load("state_cases")["valid"]:
        device_id = DEVICES[case["device"]]["id"]
        await send(hass, device_id, "state", payload_of(case))
        values = bridge.devices[device_id].values
        for key, value in case["expect"]["values"].items():
            assert values[key] == value, (case["name"], key)
    assert bridge.rejected_total == 0


async def test_valid_command_reports_fire_bus_events(hass: HomeAssistant, contract_entry: MockConfigEntry) -> None:
    events = async_capture_events(hass, EVENT_THERMO_BRIDGE_COMMAND)
    cases = load("command_cases")["valid"]
    for case in cases:
        await send(hass, DEVICES["thermostat"]["id"], "command", payload_of(case))
    assert [
        {"id": e.data["command_id"], "values": e.data["values"], "user": e.data["user"], "status": e.data["status"]}
        for e in events
    ] == [{key: case["expect"][key] for key in ("id", "values", "user", "status")} for case in cases]
    assert contract_entry.runtime_data.rejected_total == 0


async def test_valid_configs_create_devices(hass: HomeAssistant, contract_entry: MockConfigEntry) -> None:
    bridge = contract_entry.runtime_data
    for case in load("config_cases")["valid"]:
        device_id = case.get("topic_id") or case["payload"]["id"]
        await send(hass, device_id, "config", payload_of(case))
        assert bridge.devices[device_id].config.as_dict() == case["expect"], case["name"]
    assert bridge.rejected_total == 0


async def test_commands_are_validated_before_sending(
    hass: HomeAssistant, contract_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    bridge = contract_entry.runtime_data
    set_cases = load("set_cases")
    for case in set_cases["valid"]:
        device = bridge.devices[DEVICES[case["device"]]["id"]]
        mqtt_mock.async_publish.reset_mock()
        values = {k: v for k, v in case["payload"].items() if k != "id"}
        await bridge.async_send_command(device, values)
        (call,) = mqtt_mock.async_publish.call_args_list
        topic, payload, qos, retain = call.args[:4]
        assert (topic, qos, retain) == (f"thermo_bridge/{device.device_id}/set", 1, False)
        sent = json.loads(payload)
        assert {k: v for k, v in sent.items() if k != "id"} == case["expect"]["values"], case["name"]
    for case in set_cases["invalid"]:
        payload = case.get("payload")
        if not isinstance(payload, dict) or "id" in case["name"].split():
            continue  # malformed wire payloads and bad command ids are the device's side of the contract
        device = bridge.devices[DEVICES[case["device"]]["id"]]
        mqtt_mock.async_publish.reset_mock()
        with pytest.raises(ServiceValidationError):
            await bridge.async_send_command(device, {k: v for k, v in payload.items() if k != "id"})
        assert mqtt_mock.async_publish.call_args_list == [], case["name"]
