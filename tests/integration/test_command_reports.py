"""``thermo_bridge_command``: commands sent through the add-on server, announced on MQTT, on HA's bus."""

from __future__ import annotations

from typing import Any

from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers import device_registry as dr
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.thermo_bridge.const import EVENT_THERMO_BRIDGE_COMMAND
from custom_components.thermo_bridge.diagnostics import async_get_config_entry_diagnostics

from .conftest import THERMOSTAT_CONFIG, THERMOSTAT_ID, SetupEntry, get_device, send

REPORT: dict[str, Any] = {
    "id": "9f2c4e1ab3d05e77",
    "values": {"target_temperature": 21.5, "hvac_mode": "heat"},
    "user": "auth0|64f1c2",
    "status": "acked",
    "reason": None,
    "ts": 1767225600.5,
}


async def test_a_report_fires_the_bus_event(
    hass: HomeAssistant, thermostat: MockConfigEntry, device_registry: dr.DeviceRegistry
) -> None:
    events: list[Event] = async_capture_events(hass, EVENT_THERMO_BRIDGE_COMMAND)
    before = {state.entity_id: state.state for state in hass.states.async_all()}
    await send(hass, THERMOSTAT_ID, "command", REPORT)
    await send(hass, THERMOSTAT_ID, "command", {**REPORT, "id": "c2", "status": "failed", "reason": "out_of_range"})
    device = get_device(device_registry, THERMOSTAT_ID)
    assert device is not None
    assert [event.data for event in events] == [
        {
            "device_id": device.id,
            "bridge_device_id": THERMOSTAT_ID,
            "command_id": "9f2c4e1ab3d05e77",
            "values": {"target_temperature": 21.5, "hvac_mode": "heat"},
            "user": "auth0|64f1c2",
            "status": "acked",
            "reason": None,
        },
        {
            "device_id": device.id,
            "bridge_device_id": THERMOSTAT_ID,
            "command_id": "c2",
            "values": {"target_temperature": 21.5, "hvac_mode": "heat"},
            "user": "auth0|64f1c2",
            "status": "failed",
            "reason": "out_of_range",
        },
    ]
    # A report tells what happened; the device's own state report changes the entities.
    assert {state.entity_id: state.state for state in hass.states.async_all()} == before
    diagnostics = await async_get_config_entry_diagnostics(hass, thermostat)
    (living,) = [d for d in diagnostics["devices"] if d["device_id"] == THERMOSTAT_ID]
    assert living["last_messages"]["command"]["command_id"] == "c2"
    assert living["last_messages"]["command"]["user"] == "**REDACTED**"


async def test_invalid_or_unknown_reports_fire_nothing(hass: HomeAssistant, thermostat: MockConfigEntry) -> None:
    events: list[Event] = async_capture_events(hass, EVENT_THERMO_BRIDGE_COMMAND)
    bridge = thermostat.runtime_data
    await send(hass, THERMOSTAT_ID, "command", {**REPORT, "status": "pending"})
    await send(hass, THERMOSTAT_ID, "command", {**REPORT, "values": {}})
    await send(hass, "not_announced", "command", REPORT)
    assert events == []
    assert dict(bridge.rejected_by_reason) == {"invalid_value": 1, "missing_key": 1, "unknown_device": 1}


async def test_reports_for_a_device_of_another_entry_fire_nothing(hass: HomeAssistant, setup_entry: SetupEntry) -> None:
    """The same device id under a second base topic belongs to the first entry: its reports there are ignored."""
    await setup_entry()
    await setup_entry(base="other/base")
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG, base="other/base")
    events: list[Event] = async_capture_events(hass, EVENT_THERMO_BRIDGE_COMMAND)
    await send(hass, THERMOSTAT_ID, "command", REPORT, base="other/base")
    assert events == []
    await send(hass, THERMOSTAT_ID, "command", REPORT)
    assert len(events) == 1
