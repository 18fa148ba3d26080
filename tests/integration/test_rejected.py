"""Bad input from the broker: logged once, counted, never raises, changes nothing; repairs; diagnostics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
    get_diagnostics_for_device,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.thermo_bridge.bridge import MAX_UNKNOWN_SOURCES, OTHER_SOURCES
from custom_components.thermo_bridge.const import DOMAIN
from thermo_bridge_sim import devices

from .conftest import THERMOSTAT_CONFIG, THERMOSTAT_ID, SetupEntry, fire, get_device, send

BAD_STATES = [
    b"not json",
    b"\xff\xfe",
    b"[1, 2]",
    json.dumps({"target_temperature": "warm"}).encode(),
    json.dumps({"hvac_mode": "turbo"}).encode(),
    json.dumps({"temperature": 1e308 * 10}).encode().replace(b"Infinity", b"1e999"),
    json.dumps({"unknown_key": 1}).encode(),
    b"{}",
    b"x" * 70_000,
]


async def test_bad_state_payloads_change_nothing_and_log_once(
    hass: HomeAssistant, thermostat: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    before = hass.states.get("climate.living_room")
    for payload in BAD_STATES:
        await send(hass, THERMOSTAT_ID, "state", payload)
    after = hass.states.get("climate.living_room")
    assert after.state == before.state
    assert after.attributes == before.attributes
    assert after.last_updated == before.last_updated
    assert caplog.text.count("Ignoring a state message from living") == 1
    bridge = thermostat.runtime_data
    assert bridge.rejected_total == len(BAD_STATES)
    assert sum(bridge.devices[THERMOSTAT_ID].rejected.values()) == len(BAD_STATES)


async def test_bad_messages_of_every_kind(
    hass: HomeAssistant, thermostat: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    await send(hass, THERMOSTAT_ID, "availability", "maybe")
    await send(hass, THERMOSTAT_ID, "ack", {"id": "x", "status": "perhaps"})
    await send(hass, THERMOSTAT_ID, "event", {"event": "explosion"})
    await send(hass, THERMOSTAT_ID, "config", devices.sensor("someone_else", name="x"))
    await send(hass, "bad id!", "state", {"temperature": 1})
    await send(hass, "stranger", "state", {"temperature": 1})
    fire(hass, "a/b", "state", "{}")  # two levels: not under any of our subscriptions
    await hass.async_block_till_done()
    assert hass.states.get("climate.living_room").state == "heat"
    for kind in ("availability", "ack", "event", "config"):
        assert caplog.text.count(f"Ignoring a {kind} message from living") == 1
    assert "an unknown device" in caplog.text
    bridge = thermostat.runtime_data
    assert bridge.rejected_total == 6
    assert bridge.rejected_unknown


async def test_unknown_senders_are_counted_in_bounded_memory(
    hass: HomeAssistant, thermostat: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever publishes picks the device ids: a flood of them must not grow memory or the log."""
    senders = MAX_UNKNOWN_SOURCES + 20
    for i in range(senders):
        fire(hass, f"stranger{i}", "state", {"temperature": 1})
    fire(hass, "stranger0", "event", {"event": "x"})
    await hass.async_block_till_done()
    bridge = thermostat.runtime_data
    assert bridge.rejected_total == senders + 1
    assert sum(bridge.rejected_unknown.values()) == senders + 1
    assert len(bridge.rejected_unknown) == MAX_UNKNOWN_SOURCES + 1
    assert bridge.rejected_unknown["stranger0"] == 2
    assert bridge.rejected_unknown[OTHER_SOURCES] == senders - MAX_UNKNOWN_SOURCES
    assert caplog.text.count("Ignoring a state message from stranger") == MAX_UNKNOWN_SOURCES
    assert caplog.text.count("further ones are only counted") == 1
    # The known device's rejections are still logged and attributed to it.
    await send(hass, THERMOSTAT_ID, "state", b"not json")
    assert caplog.text.count("Ignoring a state message from living") == 1
    assert bridge.devices[THERMOSTAT_ID].rejected == {"not_json": 1}


async def test_unsupported_schema_raises_and_clears_a_repair_issue(
    hass: HomeAssistant, setup_entry: SetupEntry, issue_registry: ir.IssueRegistry
) -> None:
    entry = await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", dict(THERMOSTAT_CONFIG, schema=2, future_key=True))
    issue = issue_registry.async_get_issue(DOMAIN, f"unsupported_schema_{THERMOSTAT_ID}")
    assert issue is not None
    assert issue.translation_key == "unsupported_schema"
    assert issue.translation_placeholders["schema"] == "2"
    assert hass.states.async_entity_ids() == []
    assert entry.runtime_data.rejected_by_reason["unsupported_schema"] == 1
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    assert issue_registry.async_get_issue(DOMAIN, f"unsupported_schema_{THERMOSTAT_ID}") is None
    assert hass.states.get("climate.living_room") is not None


async def test_repair_issues_for_unknown_senders_are_bounded(
    hass: HomeAssistant, setup_entry: SetupEntry, issue_registry: ir.IssueRegistry
) -> None:
    """Repair issues are persisted: a flood of newer-schema device ids must not grow them without end."""
    await setup_entry()
    for i in range(MAX_UNKNOWN_SOURCES + 20):
        fire(hass, f"future{i}", "config", dict(THERMOSTAT_CONFIG, id=f"future{i}", schema=2))
    await hass.async_block_till_done()
    ours = [key for (domain, key) in issue_registry.issues if domain == DOMAIN]
    assert len(ours) == MAX_UNKNOWN_SOURCES
    assert f"unsupported_schema_future{MAX_UNKNOWN_SOURCES - 1}" in ours
    assert f"unsupported_schema_future{MAX_UNKNOWN_SOURCES}" not in ours


async def test_removed_device_clears_its_repair_issue(
    hass: HomeAssistant, thermostat: MockConfigEntry, issue_registry: ir.IssueRegistry
) -> None:
    await send(hass, THERMOSTAT_ID, "config", dict(THERMOSTAT_CONFIG, schema=3))
    assert issue_registry.async_get_issue(DOMAIN, f"unsupported_schema_{THERMOSTAT_ID}") is not None
    # The old config stays in force: the entity is still there.
    assert hass.states.get("climate.living_room").state == "heat"
    await send(hass, THERMOSTAT_ID, "config", "")
    assert issue_registry.async_get_issue(DOMAIN, f"unsupported_schema_{THERMOSTAT_ID}") is None


async def test_diagnostics(
    hass: HomeAssistant,
    thermostat: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    device_registry: dr.DeviceRegistry,
) -> None:
    await send(hass, THERMOSTAT_ID, "state", b"not json")
    await send(hass, THERMOSTAT_ID, "event", {"event": "fault", "data": {"code": 7, "password": "hunter2"}})
    result: dict[str, Any] = await get_diagnostics_for_config_entry(hass, hass_client, thermostat)
    assert result["entry"]["data"] == {"base_topic": "thermo_bridge"}
    assert result["mqtt_connected"] is True
    assert result["rejected"]["total"] == 1
    assert result["rejected"]["by_reason"] == {"not_json": 1}
    (device,) = result["devices"]
    assert device["device_id"] == THERMOSTAT_ID
    assert device["config"]["thermostat"]["max_temp"] == 30
    assert device["values"]["target_temperature"] == 21
    assert device["rejected"] == {"not_json": 1}
    assert device["last_messages"]["rejected_state"] == "not json"
    assert device["last_messages"]["event"]["data"] == {"code": 7, "password": "**REDACTED**"}
    assert "hunter2" not in json.dumps(result)

    ha_device = get_device(device_registry, THERMOSTAT_ID)
    assert ha_device is not None
    one = await get_diagnostics_for_device(hass, hass_client, thermostat, ha_device)
    assert one["device_id"] == THERMOSTAT_ID
    assert one["available"] is True

    # A device in the registry that has not been discovered in this run.
    ghost = device_registry.async_get_or_create(config_entry_id=thermostat.entry_id, identifiers={(DOMAIN, "ghost")})
    assert await get_diagnostics_for_device(hass, hass_client, thermostat, ghost) == {
        "device_id": "ghost",
        "discovered": False,
    }
