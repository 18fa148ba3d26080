"""End to end: HA's real MQTT client on a private mosquitto, the simulator as the device.

discovery → entities → ``climate.set_temperature`` → the simulator receives the command,
applies it, reports back and acks → the entity follows; plus validation before sending,
device events on the bus, and the device going offline making it unavailable.

The simulator runs in its own process (``python -m thermo_bridge_sim``, the
``thermo-bridge-sim`` command), so this process holds the protocol only as
``custom_components.thermo_bridge.protocol``. What the device receives and answers is read
off the broker through HA's own MQTT client, on the device's ``set``, ``state`` and ``ack``
topics; the device event is published on its ``event`` topic the same way.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from homeassistant.components import mqtt
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.thermo_bridge.const import CONF_BASE_TOPIC, DOMAIN, EVENT_THERMO_BRIDGE
from tests.broker import Mosquitto
from tests.waiting import wait_for

from .live import SENSOR, THERMOSTAT, WAIT, start_simulator


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
    await wait_for(lambda: mqtt.is_connected(hass), timeout=WAIT, what="HA's MQTT client to connect")
    entry = MockConfigEntry(domain=DOMAIN, unique_id="thermo_bridge", data={CONF_BASE_TOPIC: "thermo_bridge"})
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    # HA's MQTT batches SUBSCRIBEs after a short cooldown: a probe proves ours reached the
    # broker before the simulator announces (its first full state report is not retained).
    bridge = entry.runtime_data

    async def subscribed() -> bool:
        if not bridge.rejected_total:
            await mqtt.async_publish(hass, "thermo_bridge/probe/state", "probe")
        return bridge.rejected_total > 0

    await wait_for(subscribed, timeout=WAIT, interval=0.1, what="our subscriptions to become active")
    yield hass
    # Unload while the broker is still up (ours first, then HA's MQTT, which disconnects cleanly).
    for config_entry in (entry, mqtt_entry):
        assert await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()


@dataclass
class Simulator:
    """The simulator's process, and what the broker carried to and from its thermostat."""

    process: subprocess.Popen[bytes] | None = None
    commands: list[dict[str, Any]] = field(default_factory=list)
    """Every ``set`` payload sent to the thermostat, in order."""
    states: list[dict[str, Any]] = field(default_factory=list)
    """Every state report of the thermostat."""
    acks: list[dict[str, Any]] = field(default_factory=list)
    probes: int = 0

    @callback
    def received(self, message: mqtt.ReceiveMessage) -> None:
        kind = message.topic.rsplit("/", 1)[-1]
        if kind == "probe":
            self.probes += 1
            return
        target = {"set": self.commands, "state": self.states, "ack": self.acks}.get(kind)
        if target is not None:
            target.append(json.loads(message.payload))

    def stop(self) -> None:
        """SIGTERM: the simulator publishes its devices' retained ``offline`` and disconnects."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
async def simulator(broker_hass: HomeAssistant, mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Simulator]:
    """``thermo-bridge-sim`` with one thermostat and one sensor, its devices announced."""
    hass = broker_hass
    sim = Simulator()
    unsubscribe = await mqtt.async_subscribe(hass, f"thermo_bridge/{THERMOSTAT}/+", sim.received)

    async def subscribed() -> bool:  # HA's MQTT sends SUBSCRIBEs after a short cooldown
        if not sim.probes:
            await mqtt.async_publish(hass, f"thermo_bridge/{THERMOSTAT}/probe", "probe")
        return sim.probes > 0

    try:
        await wait_for(subscribed, timeout=WAIT, interval=0.1, what="the test's subscription to the thermostat")
        log = tmp_path / "simulator.log"
        sim.process = await hass.async_add_executor_job(start_simulator, mosquitto, log)
        process = sim.process

        def announced() -> bool:  # the CLI prints its first line once the broker acked every announcement
            assert process.poll() is None, f"the simulator exited: {log.read_text()}"
            return "devices on" in log.read_text()

        await wait_for(announced, timeout=WAIT, what="the simulator to announce its devices")
        yield sim
    finally:
        await hass.async_add_executor_job(sim.stop)
        unsubscribe()


async def test_thermostat_round_trip(
    broker_hass: HomeAssistant, simulator: Simulator, entity_registry: er.EntityRegistry
) -> None:
    hass = broker_hass

    def climate_id() -> str | None:
        return entity_registry.async_get_entity_id("climate", DOMAIN, f"{THERMOSTAT}_climate")

    # Discovery: the retained config makes the entities, the first state report fills them.
    await wait_for(climate_id, timeout=WAIT, what="the simulated thermostat's climate entity")
    entity_id = climate_id()
    assert entity_id is not None
    await wait_for(
        lambda: (state := hass.states.get(entity_id)) is not None and state.attributes.get("temperature") is not None,
        timeout=WAIT,
        what="the first state report",
    )
    assert entity_registry.async_get_entity_id("sensor", DOMAIN, f"{SENSOR}_co2") is not None

    # A command: validated, published, applied by the device, which reports and acks.
    current = hass.states.get(entity_id).attributes["temperature"]
    target = 23.5 if current != 23.5 else 22.0
    await hass.services.async_call(
        "climate", "set_temperature", {"entity_id": entity_id, "temperature": target}, blocking=True
    )
    received = simulator.commands
    assert len(received) == 1
    assert {key: value for key, value in received[0].items() if key != "id"} == {"target_temperature": target}
    await wait_for(
        lambda: any(ack["id"] == received[0]["id"] and ack["status"] == "ok" for ack in simulator.acks),
        timeout=WAIT,
        what="the device's ok ack",
    )
    await wait_for(
        lambda: any(state.get("target_temperature") == target for state in simulator.states),
        timeout=WAIT,
        what="the device to report the new setpoint",
    )
    await wait_for(
        lambda: hass.states.get(entity_id).attributes["temperature"] == target,
        timeout=WAIT,
        what="the entity to follow",
    )
    assert not hass.config_entries.async_entries(DOMAIN)[0].runtime_data.devices[THERMOSTAT].pending

    # Out of the device's range: refused before anything is sent.
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            "climate", "set_temperature", {"entity_id": entity_id, "temperature": 60}, blocking=True
        )
    await asyncio.sleep(0.2)
    assert len(simulator.commands) == 1

    # A device event reaches the bus and the event entity.
    events: list[Event] = async_capture_events(hass, EVENT_THERMO_BRIDGE)
    event = {"event": "button_press", "data": {"button": "up"}, "ts": round(time.time(), 3)}
    await mqtt.async_publish(hass, f"thermo_bridge/{THERMOSTAT}/event", json.dumps(event))
    await wait_for(lambda: events, timeout=WAIT, what="thermo_bridge_event")
    assert events[0].data["bridge_device_id"] == THERMOSTAT
    assert events[0].data["event_type"] == "button_press"
    assert events[0].data["data"] == {"button": "up"}
    event_entity = entity_registry.async_get_entity_id("event", DOMAIN, f"{THERMOSTAT}_event")
    assert event_entity is not None
    await wait_for(
        lambda: hass.states.get(event_entity).attributes.get("event_type") == "button_press",
        timeout=WAIT,
        what="the event entity",
    )

    # The device goes away: its availability says offline, the entity is unavailable.
    await hass.async_add_executor_job(simulator.stop)
    await wait_for(
        lambda: hass.states.get(entity_id).state == STATE_UNAVAILABLE,
        timeout=WAIT,
        what="the entity to become unavailable",
    )


def test_home_assistant_tests_hold_one_identity_of_the_protocol() -> None:
    """The protocol is loaded only as custom_components.thermo_bridge.protocol: nothing here imports its server name."""
    assert "thermo_bridge_protocol" not in sys.modules
    assert "thermo_bridge_sim.simulator" not in sys.modules
