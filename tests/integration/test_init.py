"""Setup, unload, reload, restart and device removal."""

from __future__ import annotations

import asyncio
from typing import Any

from homeassistant.components.mqtt.const import DOMAIN as MQTT_DOMAIN
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.thermo_bridge.const import CONF_BASE_TOPIC, DOMAIN

from .conftest import (
    SENSOR_CONFIG,
    SENSOR_ID,
    THERMOSTAT_CONFIG,
    THERMOSTAT_ID,
    SetupEntry,
    get_device,
    mqtt_subscription_count,
    send,
)


def our_timers(hass: HomeAssistant) -> list[Any]:
    """Pending loop timers (HA's async_call_later jobs) whose target is bridge code."""
    out = []
    for handle in hass.loop._scheduled:
        if handle.cancelled():
            continue
        for arg in getattr(handle, "_args", None) or ():
            target = getattr(arg, "target", None)
            if "Bridge" in getattr(target, "__qualname__", ""):
                out.append(handle)
    return out


async def test_setup_waits_for_mqtt_and_retries_without_it(hass: HomeAssistant) -> None:
    """No MQTT config entry: setup is retried later rather than failing for good."""
    assert await async_setup_component(hass, MQTT_DOMAIN, {})
    entry = MockConfigEntry(domain=DOMAIN, unique_id="thermo_bridge", data={CONF_BASE_TOPIC: "thermo_bridge"})
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_RETRY


async def test_unload_and_reload_leave_nothing_behind(
    hass: HomeAssistant, setup_entry: SetupEntry, entity_registry: er.EntityRegistry
) -> None:
    baseline_subs = mqtt_subscription_count(hass)
    entry = await setup_entry(options={"command_timeout": 60})
    config = dict(THERMOSTAT_CONFIG, expire_after=300)
    await send(hass, THERMOSTAT_ID, "config", config)
    await send(hass, SENSOR_ID, "config", SENSOR_CONFIG)
    # The first cycle loads HA's entity platforms, which keep their own listeners: measure after it.
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    baseline_listeners = sum(hass.bus.async_listeners().values())
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await send(hass, THERMOSTAT_ID, "config", config)
    await send(hass, SENSOR_ID, "config", SENSOR_CONFIG)
    await send(hass, THERMOSTAT_ID, "availability", "online")
    # A command still waiting for its ack holds two timers.
    task = asyncio.create_task(
        hass.services.async_call(
            "climate", "set_temperature", {"entity_id": "climate.living_room", "temperature": 22}, blocking=True
        )
    )
    for _ in range(20):
        await asyncio.sleep(0)
    assert mqtt_subscription_count(hass) == baseline_subs + 6  # config, availability, state, ack, event, command
    assert our_timers(hass)
    entity_ids = sorted(e.entity_id for e in er.async_entries_for_config_entry(entity_registry, entry.entry_id))

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    await task  # the waiting service call is released, not left hanging
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert mqtt_subscription_count(hass) == baseline_subs
    assert sum(hass.bus.async_listeners().values()) == baseline_listeners
    assert our_timers(hass) == []

    # Reload: the retained configs come back, the same entities (no duplicates, no _2).
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await send(hass, THERMOSTAT_ID, "config", config)
    await send(hass, SENSOR_ID, "config", SENSOR_CONFIG)
    again = sorted(e.entity_id for e in er.async_entries_for_config_entry(entity_registry, entry.entry_id))
    assert again == entity_ids
    assert not [entity_id for entity_id in again if entity_id.endswith("_2")]
    assert mqtt_subscription_count(hass) == baseline_subs + 6


async def test_rediscovery_and_restart_create_no_duplicates(
    hass: HomeAssistant, setup_entry: SetupEntry, entity_registry: er.EntityRegistry, device_registry: dr.DeviceRegistry
) -> None:
    entry = await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    first = sorted(e.entity_id for e in er.async_entries_for_config_entry(entity_registry, entry.entry_id))
    assert "climate.living_room" in first
    # The same retained config again (e.g. a broker restart re-delivers it): nothing changes.
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    assert sorted(e.entity_id for e in er.async_entries_for_config_entry(entity_registry, entry.entry_id)) == first
    # "Restart": reload the entry twice; entities and the device are the same objects in the registries.
    for _ in range(2):
        assert await hass.config_entries.async_reload(entry.entry_id)
        await hass.async_block_till_done()
        await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    assert sorted(e.entity_id for e in er.async_entries_for_config_entry(entity_registry, entry.entry_id)) == first
    assert len(dr.async_entries_for_config_entry(device_registry, entry.entry_id)) == 1
    assert len(hass.states.async_entity_ids("climate")) == 1


async def test_device_registry_entry(
    hass: HomeAssistant, setup_entry: SetupEntry, device_registry: dr.DeviceRegistry
) -> None:
    await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", dict(THERMOSTAT_CONFIG, suggested_area="Lounge"))
    device = get_device(device_registry, THERMOSTAT_ID)
    assert device is not None
    assert (device.name, device.manufacturer, device.model, device.sw_version) == (
        "Living room",
        "Acme",
        "T-1000",
        "1.4.2",
    )
    assert device.area_id == "lounge"


async def test_remove_device_clears_retained_config(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    mqtt_mock: Any,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
    hass_ws_client: WebSocketGenerator,
) -> None:
    assert await async_setup_component(hass, "config", {})
    entry = await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    device = get_device(device_registry, THERMOSTAT_ID)
    assert device is not None
    client = await hass_ws_client(hass)
    await client.send_json(
        {
            "id": 1,
            "type": "config/device_registry/remove_config_entry",
            "config_entry_id": entry.entry_id,
            "device_id": device.id,
        }
    )
    response = await client.receive_json()
    assert response["success"], response
    published = [call.args[:4] for call in mqtt_mock.async_publish.call_args_list]
    assert (f"thermo_bridge/{THERMOSTAT_ID}/config", b"", 1, True) in published
    # The broker echoes the cleared retained config: the device stays gone.
    await send(hass, THERMOSTAT_ID, "config", "")
    assert get_device(device_registry, THERMOSTAT_ID) is None
    assert not er.async_entries_for_config_entry(entity_registry, entry.entry_id)
    assert THERMOSTAT_ID not in entry.runtime_data.devices
