"""End to end: HA's real MQTT client on a private mosquitto, the simulator as the device.

discovery → entities → ``climate.set_temperature`` → the simulator receives the command,
applies it, reports back and acks → the entity follows; plus validation before sending,
device events on the bus, and the device's last will making it unavailable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from homeassistant.components import mqtt
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import Event, HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.thermo_bridge.const import CONF_BASE_TOPIC, DOMAIN, EVENT_THERMO_BRIDGE
from tests.broker import Mosquitto
from thermo_bridge_sim.simulator import Simulator

THERMOSTAT = "e2e_thermostat_1"
SENSOR = "e2e_sensor_1"
WAIT = 15.0
"""Upper bound for conditions that normally hold within milliseconds (a loaded CI box is slow)."""


async def wait_for(condition: Callable[[], object], what: str) -> None:
    """Poll ``condition`` until it is truthy; fail with ``what`` after WAIT seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def broker_hass(
    hass: HomeAssistant, socket_enabled: None, mock_hass_config: None, mosquitto: Mosquitto
) -> AsyncIterator[HomeAssistant]:
    """HA with its MQTT integration connected to the private broker, and a thermo_bridge entry."""
    mqtt_entry = MockConfigEntry(
        domain=mqtt.DOMAIN, data={"broker": mosquitto.host, "port": mosquitto.port, "discovery": False}
    )
    mqtt_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mqtt_entry.entry_id)
    await wait_for(lambda: mqtt.is_connected(hass), "HA's MQTT client to connect")
    entry = MockConfigEntry(domain=DOMAIN, unique_id="thermo_bridge", data={CONF_BASE_TOPIC: "thermo_bridge"})
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    # HA's MQTT batches SUBSCRIBEs after a short cooldown: a probe proves ours reached the
    # broker before the simulator announces (its first full state report is not retained).
    bridge = entry.runtime_data
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not bridge.rejected_total:
        assert loop.time() < deadline, "our subscriptions never became active"
        await mqtt.async_publish(hass, "thermo_bridge/probe/state", "probe")
        await asyncio.sleep(0.1)
    yield hass
    # Unload while the broker is still up (ours first, then HA's MQTT, which disconnects cleanly).
    for config_entry in (entry, mqtt_entry):
        assert await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()


@pytest.fixture
async def simulator(broker_hass: HomeAssistant, mosquitto: Mosquitto) -> AsyncIterator[Simulator]:
    sim = Simulator(mosquitto.host, mosquitto.port, thermostats=1, sensors=1, id_prefix="e2e", seed=7)
    await broker_hass.async_add_executor_job(sim.start)
    try:
        yield sim
    finally:
        await broker_hass.async_add_executor_job(sim.stop)
        await broker_hass.async_add_executor_job(sim.clear)


async def test_thermostat_round_trip(
    broker_hass: HomeAssistant, simulator: Simulator, entity_registry: er.EntityRegistry
) -> None:
    hass = broker_hass

    def climate_id() -> str | None:
        return entity_registry.async_get_entity_id("climate", DOMAIN, f"{THERMOSTAT}_climate")

    # Discovery: the retained config makes the entities, the first state report fills them.
    await wait_for(climate_id, "the simulated thermostat's climate entity")
    entity_id = climate_id()
    assert entity_id is not None
    await wait_for(
        lambda: (state := hass.states.get(entity_id)) is not None and state.attributes.get("temperature") is not None,
        "the first state report",
    )
    assert entity_registry.async_get_entity_id("sensor", DOMAIN, f"{SENSOR}_co2") is not None

    # A command: validated, published, applied by the device, which reports and acks.
    current = hass.states.get(entity_id).attributes["temperature"]
    target = 23.5 if current != 23.5 else 22.0
    await hass.services.async_call(
        "climate", "set_temperature", {"entity_id": entity_id, "temperature": target}, blocking=True
    )
    received = [command for device_id, command in simulator.commands if device_id == THERMOSTAT]
    assert len(received) == 1
    assert received[0].values == {"target_temperature": target}
    await wait_for(lambda: simulator.devices[THERMOSTAT].state.get("target_temperature") == target, "the device")
    await wait_for(lambda: hass.states.get(entity_id).attributes["temperature"] == target, "the entity to follow")
    assert not hass.config_entries.async_entries(DOMAIN)[0].runtime_data.devices[THERMOSTAT].pending

    # Out of the device's range: refused before anything is sent.
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            "climate", "set_temperature", {"entity_id": entity_id, "temperature": 60}, blocking=True
        )
    await asyncio.sleep(0.2)
    assert len([c for d, c in simulator.commands if d == THERMOSTAT]) == 1

    # A device event reaches the bus and the event entity.
    events: list[Event] = async_capture_events(hass, EVENT_THERMO_BRIDGE)
    await hass.async_add_executor_job(simulator.emit_event, THERMOSTAT, "button_press", {"button": "up"})
    await wait_for(lambda: events, "thermo_bridge_event")
    assert events[0].data["bridge_device_id"] == THERMOSTAT
    assert events[0].data["event_type"] == "button_press"
    assert events[0].data["data"] == {"button": "up"}
    event_entity = entity_registry.async_get_entity_id("event", DOMAIN, f"{THERMOSTAT}_event")
    assert event_entity is not None
    await wait_for(
        lambda: hass.states.get(event_entity).attributes.get("event_type") == "button_press", "the event entity"
    )

    # The device goes away: its availability says offline, the entity is unavailable.
    await hass.async_add_executor_job(simulator.stop)
    await wait_for(lambda: hass.states.get(entity_id).state == STATE_UNAVAILABLE, "the entity to become unavailable")
