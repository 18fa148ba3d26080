"""Sensors, binary sensors, the event entity and the bus event; availability."""

from __future__ import annotations

from datetime import timedelta

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.mqtt.const import MQTT_CONNECTION_STATE
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE, STATE_UNKNOWN, EntityCategory
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.dispatcher import async_dispatcher_send
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events, async_fire_time_changed

from custom_components.thermo_bridge.const import EVENT_THERMO_BRIDGE

from .conftest import SENSOR_CONFIG, SENSOR_ID, THERMOSTAT_ID, SetupEntry, get_device, send


def entity_id_of(entity_registry: er.EntityRegistry, platform: str, unique_id: str) -> str:
    entity_id = entity_registry.async_get_entity_id(platform, "thermo_bridge", unique_id)
    assert entity_id is not None, unique_id
    return entity_id


@pytest.fixture
async def sensor(hass: HomeAssistant, setup_entry: SetupEntry) -> MockConfigEntry:
    entry = await setup_entry()
    await send(hass, SENSOR_ID, "config", SENSOR_CONFIG)
    return entry


async def test_sensors_unknown_until_reported_then_follow(
    hass: HomeAssistant, sensor: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    temperature = entity_id_of(entity_registry, "sensor", "hall_temperature")
    window = entity_id_of(entity_registry, "binary_sensor", "hall_window_open")
    assert hass.states.get(temperature).state == STATE_UNKNOWN
    assert hass.states.get(window).state == STATE_UNKNOWN
    await send(hass, SENSOR_ID, "state", {"temperature": 19.25, "window_open": True, "co2": 612})
    assert float(hass.states.get(temperature).state) == 19.25
    assert hass.states.get(temperature).attributes["unit_of_measurement"] == "°C"
    assert hass.states.get(temperature).attributes["state_class"] == "measurement"
    assert hass.states.get(window).state == STATE_ON
    co2 = entity_id_of(entity_registry, "sensor", "hall_co2")
    assert float(hass.states.get(co2).state) == 612
    await send(hass, SENSOR_ID, "state", {"window_open": False, "temperature": None})
    assert hass.states.get(window).state == STATE_OFF
    assert hass.states.get(temperature).state == STATE_UNKNOWN


async def test_entity_metadata(
    hass: HomeAssistant, sensor: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    signal = entity_registry.async_get(entity_id_of(entity_registry, "sensor", "hall_signal"))
    assert signal.entity_category is EntityCategory.DIAGNOSTIC
    assert signal.disabled_by is er.RegistryEntryDisabler.INTEGRATION
    voltage = entity_registry.async_get(entity_id_of(entity_registry, "sensor", "hall_battery_voltage"))
    assert voltage.disabled_by is er.RegistryEntryDisabler.INTEGRATION
    assert voltage.translation_key == "battery_voltage"
    battery = entity_registry.async_get(entity_id_of(entity_registry, "sensor", "hall_battery"))
    assert battery.entity_category is EntityCategory.DIAGNOSTIC
    assert battery.disabled_by is None
    fault = entity_registry.async_get(entity_id_of(entity_registry, "binary_sensor", "hall_fault"))
    assert fault.translation_key == "fault"
    assert fault.original_device_class == "problem"
    temperature = entity_registry.async_get(entity_id_of(entity_registry, "sensor", "hall_temperature"))
    assert temperature.options["sensor"]["suggested_display_precision"] == 1
    pressure = entity_registry.async_get(entity_id_of(entity_registry, "sensor", "hall_pressure"))
    assert pressure.original_device_class == "pressure"
    assert pressure.unit_of_measurement == "hPa"


async def test_device_event_fires_bus_event_and_updates_event_entity(
    hass: HomeAssistant,
    thermostat: MockConfigEntry,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
) -> None:
    events: list[Event] = async_capture_events(hass, EVENT_THERMO_BRIDGE)
    event_entity = entity_id_of(entity_registry, "event", "living_event")
    assert hass.states.get(event_entity).state == STATE_UNKNOWN
    assert hass.states.get(event_entity).attributes["event_types"] == ["button_press", "window_open_detected", "fault"]
    await send(hass, THERMOSTAT_ID, "event", {"event": "button_press", "data": {"button": "up", "count": 2}})
    device = get_device(device_registry, THERMOSTAT_ID)
    assert device is not None
    assert len(events) == 1
    assert events[0].data == {
        "device_id": device.id,
        "bridge_device_id": THERMOSTAT_ID,
        "name": "Living room",
        "event_type": "button_press",
        "data": {"button": "up", "count": 2.0},
    }
    state = hass.states.get(event_entity)
    assert state.state != STATE_UNKNOWN  # the timestamp of the event
    assert state.attributes["event_type"] == "button_press"
    assert state.attributes["button"] == "up"


async def test_availability_follows_device_and_logs_once(
    hass: HomeAssistant, thermostat: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    assert hass.states.get("climate.living_room").state == "heat"
    await send(hass, THERMOSTAT_ID, "availability", "offline")
    await send(hass, THERMOSTAT_ID, "availability", "offline")
    assert hass.states.get("climate.living_room").state == STATE_UNAVAILABLE
    assert hass.states.get("event.living_room_event").state == STATE_UNAVAILABLE
    assert caplog.text.count("is unavailable: it reported offline") == 1
    await send(hass, THERMOSTAT_ID, "availability", "online")
    await send(hass, THERMOSTAT_ID, "availability", "online")
    assert hass.states.get("climate.living_room").state == "heat"
    assert caplog.text.count("is available again") == 1


async def test_repeated_availability_writes_no_state(
    hass: HomeAssistant, thermostat: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    """A retained "online" after the config (every HA start) changes nothing: no state writes."""
    reported = hass.states.get("climate.living_room").last_reported  # the State is updated in place
    freezer.tick(timedelta(seconds=5))
    await send(hass, THERMOSTAT_ID, "availability", "online")
    after = hass.states.get("climate.living_room")
    assert after.state == "heat"
    assert after.last_reported == reported


async def test_mqtt_connection_loss_makes_entities_unavailable(
    hass: HomeAssistant, thermostat: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, False)
    await hass.async_block_till_done()
    assert hass.states.get("climate.living_room").state == STATE_UNAVAILABLE
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, False)
    await hass.async_block_till_done()
    assert caplog.text.count("MQTT connection lost") == 1
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, True)
    await hass.async_block_till_done()
    assert hass.states.get("climate.living_room").state == "heat"
    assert caplog.text.count("MQTT connection is back") == 1


async def test_expire_after(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    entity_registry: er.EntityRegistry,
    freezer: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await setup_entry()
    await send(hass, SENSOR_ID, "config", dict(SENSOR_CONFIG, expire_after=60))
    temperature = entity_id_of(entity_registry, "sensor", "hall_temperature")
    await send(hass, SENSOR_ID, "state", {"temperature": 20})
    # Data within the window keeps it available (the check re-arms for the remainder).
    freezer.tick(timedelta(seconds=40))
    await send(hass, SENSOR_ID, "state", {"temperature": 20.5})
    freezer.tick(timedelta(seconds=30))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(temperature).state == "20.5"
    # Nothing for longer than expire_after: unavailable, logged once.
    freezer.tick(timedelta(seconds=61))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(temperature).state == STATE_UNAVAILABLE
    assert caplog.text.count("no data within expire_after") == 1
    # The next report brings it back.
    await send(hass, SENSOR_ID, "state", {"temperature": 21})
    assert hass.states.get(temperature).state == "21.0"
    assert caplog.text.count("is available again") == 1
    # And silence after that expires it again: the check keeps running once the device is back.
    freezer.tick(timedelta(seconds=61))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(temperature).state == STATE_UNAVAILABLE
    assert caplog.text.count("no data within expire_after") == 2
    # A retained "online" counts as data too, with the same re-armed check.
    await send(hass, SENSOR_ID, "availability", "online")
    assert hass.states.get(temperature).state == "21.0"
    freezer.tick(timedelta(seconds=61))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(temperature).state == STATE_UNAVAILABLE
    assert caplog.text.count("no data within expire_after") == 3


async def test_expire_after_shortened_by_a_changed_config(
    hass: HomeAssistant, setup_entry: SetupEntry, entity_registry: er.EntityRegistry, freezer: FrozenDateTimeFactory
) -> None:
    """The running check is replaced, not kept: the new, shorter window applies at once."""
    await setup_entry()
    await send(hass, SENSOR_ID, "config", dict(SENSOR_CONFIG, expire_after=600))
    temperature = entity_id_of(entity_registry, "sensor", "hall_temperature")
    await send(hass, SENSOR_ID, "state", {"temperature": 20})
    await send(hass, SENSOR_ID, "config", dict(SENSOR_CONFIG, expire_after=10))
    freezer.tick(timedelta(seconds=11))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(temperature).state == STATE_UNAVAILABLE


async def test_expire_after_dropped_from_config(
    hass: HomeAssistant, setup_entry: SetupEntry, entity_registry: er.EntityRegistry, freezer: FrozenDateTimeFactory
) -> None:
    await setup_entry()
    await send(hass, SENSOR_ID, "config", dict(SENSOR_CONFIG, expire_after=10))
    temperature = entity_id_of(entity_registry, "sensor", "hall_temperature")
    freezer.tick(timedelta(seconds=11))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(temperature).state == STATE_UNAVAILABLE
    await send(hass, SENSOR_ID, "config", SENSOR_CONFIG)
    assert hass.states.get(temperature).state == STATE_UNKNOWN
