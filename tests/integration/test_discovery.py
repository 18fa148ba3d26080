"""Discovery: new devices without a reload, changes in place, removal, foreign duplicates."""

from __future__ import annotations

import copy

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er

from .conftest import (
    SENSOR_CONFIG,
    SENSOR_ID,
    THERMOSTAT_CONFIG,
    THERMOSTAT_ID,
    SetupEntry,
    get_device,
    send,
    thermostat_config,
)


def entity_ids(entity_registry: er.EntityRegistry, entry_id: str) -> set[str]:
    return {e.entity_id for e in er.async_entries_for_config_entry(entity_registry, entry_id)}


async def test_new_devices_appear_without_reload(
    hass: HomeAssistant, setup_entry: SetupEntry, entity_registry: er.EntityRegistry
) -> None:
    entry = await setup_entry()
    assert entity_ids(entity_registry, entry.entry_id) == set()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    await send(hass, SENSOR_ID, "config", SENSOR_CONFIG)
    ids = entity_ids(entity_registry, entry.entry_id)
    assert "climate.living_room" in ids
    assert "event.living_room_event" in ids
    assert "sensor.hall_sensor_co2" in ids or "sensor.hall_sensor_carbon_dioxide" in ids
    assert "binary_sensor.hall_sensor_window" in ids
    # thermostat: climate + 4 sensors + event; sensor: 9 sensors + 3 binary sensors + event
    assert len(ids) == 6 + 13


async def test_unique_ids_are_device_id_and_capability(
    hass: HomeAssistant, setup_entry: SetupEntry, entity_registry: er.EntityRegistry
) -> None:
    entry = await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    unique_ids = {e.unique_id for e in er.async_entries_for_config_entry(entity_registry, entry.entry_id)}
    assert unique_ids == {
        "living_climate",
        "living_event",
        "living_temperature",
        "living_humidity",
        "living_battery",
        "living_signal",
    }


async def test_changed_config_updates_in_place(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
) -> None:
    entry = await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    before = entity_ids(entity_registry, entry.entry_id)
    climate_entry = entity_registry.async_get("climate.living_room")
    assert climate_entry is not None

    changed = thermostat_config(max_temp=28, sw_version="1.5.0", presets=["eco", "away"])
    del changed["measurements"]["signal"]
    changed["measurements"]["battery_voltage"] = {"unit": "V"}
    await send(hass, THERMOSTAT_ID, "config", changed)

    state = hass.states.get("climate.living_room")
    assert state.attributes["max_temp"] == 28
    assert state.attributes["preset_modes"] == ["eco", "away"]
    device = get_device(device_registry, THERMOSTAT_ID)
    assert device is not None
    assert device.sw_version == "1.5.0"
    after = entity_ids(entity_registry, entry.entry_id)
    # The climate entity is the same registry entry (updated, not recreated).
    assert entity_registry.async_get("climate.living_room").id == climate_entry.id
    removed = before - after
    added = after - before
    assert len(removed) == 1
    assert next(iter(removed)).startswith("sensor.living_room_signal")
    assert len(added) == 1
    assert next(iter(added)).startswith("sensor.living_room_battery_voltage")


async def test_dropped_capability_comes_back_without_a_duplicate(
    hass: HomeAssistant, setup_entry: SetupEntry, entity_registry: er.EntityRegistry
) -> None:
    entry = await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    before = entity_ids(entity_registry, entry.entry_id)
    reduced = copy.deepcopy(THERMOSTAT_CONFIG)
    del reduced["events"]
    await send(hass, THERMOSTAT_ID, "config", reduced)
    assert "event.living_room_event" not in entity_ids(entity_registry, entry.entry_id)
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    assert entity_ids(entity_registry, entry.entry_id) == before


async def test_unchanged_config_changes_nothing(
    hass: HomeAssistant, setup_entry: SetupEntry, entity_registry: er.EntityRegistry
) -> None:
    await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    await send(hass, THERMOSTAT_ID, "state", {"target_temperature": 21})
    state = hass.states.get("climate.living_room")
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    assert hass.states.get("climate.living_room").last_updated == state.last_updated


async def test_empty_config_removes_device_and_entities(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entry = await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    await send(hass, SENSOR_ID, "config", SENSOR_CONFIG)
    await send(hass, THERMOSTAT_ID, "config", "")
    assert get_device(device_registry, THERMOSTAT_ID) is None
    assert hass.states.get("climate.living_room") is None
    assert not [e for e in entity_ids(entity_registry, entry.entry_id) if "living_room" in e]
    assert get_device(device_registry, SENSOR_ID) is not None
    assert "retained config was cleared" in caplog.text
    # An empty config for a device never seen is ignored.
    await send(hass, "ghost", "config", "")
    # And the device can be discovered again, with the same entity ids.
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    assert hass.states.get("climate.living_room") is not None


async def test_same_device_id_on_two_base_topics(
    hass: HomeAssistant, setup_entry: SetupEntry, entity_registry: er.EntityRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    first = await setup_entry()
    second = await setup_entry(base="other/base")
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG, base="other/base")
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG, base="other/base")
    assert entity_ids(entity_registry, second.entry_id) == set()
    assert len(entity_ids(entity_registry, first.entry_id)) == 6
    assert caplog.text.count("already belongs to another thermo_bridge entry") == 1
    # The ownership check does not use HA 2026's deprecated DeviceEntry.config_entries.
    assert "DeviceEntry.config_entries`, which is deprecated" not in caplog.text


async def test_messages_for_unknown_devices_change_nothing(hass: HomeAssistant, setup_entry: SetupEntry) -> None:
    """Valid-looking traffic for a device whose config the router knows but we skipped is harmless."""
    await setup_entry()
    await send(hass, "nobody", "availability", "online")
    await send(hass, "nobody", "ack", {"id": "abc", "status": "ok"})
    assert hass.states.async_entity_ids() == []
