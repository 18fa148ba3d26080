"""The climate entity: attributes from capabilities, commands, pending values and acks."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any
from unittest.mock import patch

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.climate import DOMAIN as CLIMATE_DOMAIN
from homeassistant.components.climate.const import (
    ATTR_CURRENT_HUMIDITY,
    ATTR_CURRENT_TEMPERATURE,
    ATTR_FAN_MODE,
    ATTR_HUMIDITY,
    ATTR_HVAC_ACTION,
    ATTR_HVAC_MODE,
    ATTR_PRESET_MODE,
    ATTR_SWING_MODE,
    ATTR_TARGET_TEMP_HIGH,
    ATTR_TARGET_TEMP_LOW,
    ClimateEntityFeature,
    HVACMode,
)
from homeassistant.const import ATTR_ENTITY_ID, ATTR_SUPPORTED_FEATURES, ATTR_TEMPERATURE, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from thermo_bridge_sim import devices

from .conftest import THERMOSTAT_ID, SetupEntry, fire, send, thermostat_config

ENTITY = "climate.living_room"
SET_TOPIC = f"thermo_bridge/{THERMOSTAT_ID}/set"


def sent_commands(mqtt_mock: Any) -> list[dict[str, Any]]:
    """Every command published to the thermostat's set topic (checking QoS 1, not retained)."""
    out = []
    for call in mqtt_mock.async_publish.call_args_list:
        topic, payload, qos, retain = call.args[:4]
        if topic == SET_TOPIC:
            assert (qos, retain) == (1, False)
            out.append(json.loads(payload))
    return out


async def settle() -> None:
    """Let the loop run callbacks without waiting for a service call that is still pending."""
    for _ in range(20):
        await asyncio.sleep(0)


async def call(hass: HomeAssistant, service: str, **data: Any) -> None:
    await hass.services.async_call(CLIMATE_DOMAIN, service, {ATTR_ENTITY_ID: ENTITY, **data}, blocking=True)


async def call_and_ack(
    hass: HomeAssistant, mqtt_mock: Any, service: str, status: str = "ok", reason: str | None = None, **data: Any
) -> None:
    """Call a service and answer the command it publishes with an ack, as a device would."""
    before = len(sent_commands(mqtt_mock))
    task = asyncio.create_task(call(hass, service, **data))
    await settle()
    assert len(sent_commands(mqtt_mock)) > before
    command = sent_commands(mqtt_mock)[-1]
    ack = {"id": command["id"], "status": status} | ({"reason": reason} if reason else {})
    fire(hass, THERMOSTAT_ID, "ack", ack)
    await task


async def test_attributes_follow_capabilities_and_state(hass: HomeAssistant, thermostat: MockConfigEntry) -> None:
    state = hass.states.get(ENTITY)
    assert state is not None
    assert state.state == HVACMode.HEAT
    attrs = state.attributes
    assert attrs[ATTR_CURRENT_TEMPERATURE] == 20.5
    assert attrs[ATTR_CURRENT_HUMIDITY] == 45
    assert attrs[ATTR_TEMPERATURE] == 21
    assert attrs[ATTR_TARGET_TEMP_LOW] == 19
    assert attrs[ATTR_TARGET_TEMP_HIGH] == 24
    assert attrs[ATTR_HUMIDITY] == 40
    assert attrs[ATTR_HVAC_ACTION] == "heating"
    assert attrs[ATTR_PRESET_MODE] == "comfort"
    assert attrs["preset_modes"] == ["eco", "comfort", "away", "boost"]
    assert attrs["hvac_modes"] == ["off", "heat", "cool", "heat_cool", "auto"]
    assert attrs["min_temp"] == 5
    assert attrs["max_temp"] == 30
    assert attrs["target_temp_step"] == 0.5
    assert attrs["min_humidity"] == 30
    assert attrs["max_humidity"] == 60
    features = ClimateEntityFeature(attrs[ATTR_SUPPORTED_FEATURES])
    for feature in (
        ClimateEntityFeature.TARGET_TEMPERATURE,
        ClimateEntityFeature.TARGET_TEMPERATURE_RANGE,
        ClimateEntityFeature.TARGET_HUMIDITY,
        ClimateEntityFeature.PRESET_MODE,
        ClimateEntityFeature.FAN_MODE,
        ClimateEntityFeature.SWING_MODE,
        ClimateEntityFeature.TURN_ON,
        ClimateEntityFeature.TURN_OFF,
    ):
        assert feature in features


async def test_unknown_until_reported(hass: HomeAssistant, setup_entry: SetupEntry) -> None:
    await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG_MIN)
    state = hass.states.get(ENTITY)
    assert state is not None
    assert state.state == "unknown"
    assert state.attributes[ATTR_CURRENT_TEMPERATURE] is None
    assert state.attributes[ATTR_TEMPERATURE] is None
    features = ClimateEntityFeature(state.attributes[ATTR_SUPPORTED_FEATURES])
    assert ClimateEntityFeature.TURN_ON not in features
    assert ClimateEntityFeature.PRESET_MODE not in features
    assert ClimateEntityFeature.TARGET_TEMPERATURE_RANGE not in features


THERMOSTAT_CONFIG_MIN = devices.thermostat(THERMOSTAT_ID, name="Living room", hvac_modes=["heat"])


async def test_fahrenheit_device_is_converted_for_a_metric_user(hass: HomeAssistant, setup_entry: SetupEntry) -> None:
    await setup_entry()
    config = thermostat_config(temperature_unit="°F", min_temp=45, max_temp=90, temp_step=1)
    config["measurements"]["temperature"] = {"unit": "°F"}
    await send(hass, THERMOSTAT_ID, "config", config)
    await send(hass, THERMOSTAT_ID, "state", {"temperature": 68, "target_temperature": 70})
    attrs = hass.states.get(ENTITY).attributes
    assert attrs[ATTR_CURRENT_TEMPERATURE] == 20
    assert attrs[ATTR_TEMPERATURE] == pytest.approx(21, abs=0.2)
    assert attrs["min_temp"] == 7  # 45 °F, shown with the device's whole-degree precision


async def test_current_temperature_in_another_unit_is_converted(hass: HomeAssistant, setup_entry: SetupEntry) -> None:
    await setup_entry()
    config = thermostat_config()
    config["measurements"]["temperature"] = {"unit": "K"}
    await send(hass, THERMOSTAT_ID, "config", config)
    await send(hass, THERMOSTAT_ID, "state", {"temperature": 293.15})
    assert hass.states.get(ENTITY).attributes[ATTR_CURRENT_TEMPERATURE] == 20


async def test_set_temperature_publishes_and_shows_pending_until_ack(
    hass: HomeAssistant, thermostat: MockConfigEntry, mqtt_mock: Any
) -> None:
    await call_and_ack(hass, mqtt_mock, "set_temperature", temperature=22.5)
    commands = sent_commands(mqtt_mock)
    assert len(commands) == 1
    assert commands[0]["target_temperature"] == 22.5
    assert isinstance(commands[0]["id"], str)
    assert commands[0]["id"]
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 22.5
    # A periodic report still carrying the old setpoint after the ok ack cannot come before
    # the ack; a later report is the device's truth.
    await send(hass, THERMOSTAT_ID, "state", {"target_temperature": 22.5})
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 22.5


async def test_no_bounce_while_pending(hass: HomeAssistant, thermostat: MockConfigEntry, mqtt_mock: Any) -> None:
    """A stale report arriving before the device applied the command does not flip the UI back."""
    task = asyncio.create_task(call(hass, "set_temperature", temperature=23))
    await settle()
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 23
    fire(hass, THERMOSTAT_ID, "state", {"target_temperature": 21, "temperature": 20.6})
    await settle()
    state = hass.states.get(ENTITY)
    assert state.attributes[ATTR_TEMPERATURE] == 23  # still what the user asked
    assert state.attributes[ATTR_CURRENT_TEMPERATURE] == 20.6  # other values keep flowing
    assert not task.done()
    # The device confirms by reporting the requested value: the service call returns.
    fire(hass, THERMOSTAT_ID, "state", {"target_temperature": 23})
    await task
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 23
    assert not thermostat.runtime_data.devices[THERMOSTAT_ID].pending


async def test_error_ack_reverts_and_raises(hass: HomeAssistant, thermostat: MockConfigEntry, mqtt_mock: Any) -> None:
    with pytest.raises(HomeAssistantError) as err:
        await call_and_ack(
            hass, mqtt_mock, "set_temperature", status="error", reason="locked by child lock", temperature=25
        )
    assert err.value.translation_key == "command_rejected"
    assert "locked by child lock" in str(err.value)
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 21


async def test_timeout_reverts_to_reported_state(
    hass: HomeAssistant, setup_entry: SetupEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    await setup_entry(options={"command_timeout": 2, "optimistic": False})
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG_MIN)
    await send(hass, THERMOSTAT_ID, "state", {"target_temperature": 20, "hvac_mode": "heat"})
    task = asyncio.create_task(call(hass, "set_temperature", temperature=22))
    await settle()
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 22
    freezer.tick(timedelta(seconds=3))
    async_fire_time_changed(hass)
    await task  # the service call stopped waiting; the command was sent
    await hass.async_block_till_done()
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 20
    assert len(sent_commands(mqtt_mock)) == 1


async def test_optimistic_mode_keeps_the_requested_value(
    hass: HomeAssistant, setup_entry: SetupEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    await setup_entry(options={"command_timeout": 2, "optimistic": True})
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG_MIN)
    await send(hass, THERMOSTAT_ID, "state", {"target_temperature": 20, "hvac_mode": "heat"})
    await call(hass, "set_temperature", temperature=22)  # returns without waiting for an ack
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 22
    freezer.tick(timedelta(seconds=3))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 22


async def test_late_error_ack_reverts_after_the_call_returned(
    hass: HomeAssistant, setup_entry: SetupEntry, mqtt_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await setup_entry(options={"command_timeout": 30, "optimistic": True})
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG_MIN)
    await send(hass, THERMOSTAT_ID, "state", {"target_temperature": 20, "hvac_mode": "heat"})
    await call(hass, "set_temperature", temperature=22)
    command = sent_commands(mqtt_mock)[-1]
    await send(hass, THERMOSTAT_ID, "ack", {"id": command["id"], "status": "error", "reason": "busy"})
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 20
    assert "refused a command after the service call returned" in caplog.text


@pytest.mark.parametrize(
    ("service", "data", "expected"),
    [
        ("set_hvac_mode", {ATTR_HVAC_MODE: "cool"}, {"hvac_mode": "cool"}),
        ("set_preset_mode", {ATTR_PRESET_MODE: "eco"}, {"preset": "eco"}),
        ("set_fan_mode", {ATTR_FAN_MODE: "high"}, {"fan_mode": "high"}),
        ("set_swing_mode", {ATTR_SWING_MODE: "on"}, {"swing_mode": "on"}),
        ("set_humidity", {ATTR_HUMIDITY: 50}, {"target_humidity": 50}),
        ("turn_off", {}, {"hvac_mode": "off"}),
        ("turn_on", {}, {"hvac_mode": "heat"}),
        (
            "set_temperature",
            {ATTR_TARGET_TEMP_LOW: 18, ATTR_TARGET_TEMP_HIGH: 25, ATTR_HVAC_MODE: "heat_cool"},
            {"target_temperature_low": 18, "target_temperature_high": 25, "hvac_mode": "heat_cool"},
        ),
    ],
)
async def test_commands(
    hass: HomeAssistant,
    thermostat: MockConfigEntry,
    mqtt_mock: Any,
    service: str,
    data: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    await call_and_ack(hass, mqtt_mock, service, **data)
    command = sent_commands(mqtt_mock)[-1]
    assert {k: v for k, v in command.items() if k != "id"} == expected
    state = hass.states.get(ENTITY)
    shown = {
        "hvac_mode": state.state,
        "preset": state.attributes.get(ATTR_PRESET_MODE),
        "fan_mode": state.attributes.get(ATTR_FAN_MODE),
        "swing_mode": state.attributes.get(ATTR_SWING_MODE),
        "target_humidity": state.attributes.get(ATTR_HUMIDITY),
        "target_temperature_low": state.attributes.get(ATTR_TARGET_TEMP_LOW),
        "target_temperature_high": state.attributes.get(ATTR_TARGET_TEMP_HIGH),
    }
    for key, value in expected.items():
        assert shown[key] == value


async def test_turn_on_from_off_picks_a_mode(hass: HomeAssistant, thermostat: MockConfigEntry, mqtt_mock: Any) -> None:
    await send(hass, THERMOSTAT_ID, "state", {"hvac_mode": "off"})
    await call_and_ack(hass, mqtt_mock, "turn_on")
    assert sent_commands(mqtt_mock)[-1]["hvac_mode"] == "heat"


async def test_out_of_range_is_refused_before_sending(
    hass: HomeAssistant, thermostat: MockConfigEntry, mqtt_mock: Any
) -> None:
    bridge = thermostat.runtime_data
    device = bridge.devices[THERMOSTAT_ID]
    with pytest.raises(ServiceValidationError) as err:
        await bridge.async_send_command(device, {"target_temperature": 31})
    assert err.value.translation_key == "value_out_of_range"
    with pytest.raises(ServiceValidationError) as err:
        await bridge.async_send_command(device, {"preset": "party"})
    assert err.value.translation_key == "invalid_value"
    with pytest.raises(ServiceValidationError) as err:
        await bridge.async_send_command(device, {"target_temperature_low": 25, "target_temperature_high": 20})
    assert err.value.translation_key == "invalid_value"
    # Through the service too (HA or the integration refuses it, either way before sending).
    with pytest.raises(ServiceValidationError):
        await call(hass, "set_temperature", temperature=35)
    assert sent_commands(mqtt_mock) == []
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 21


async def test_unsupported_setpoint_is_refused(hass: HomeAssistant, setup_entry: SetupEntry, mqtt_mock: Any) -> None:
    entry = await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG_MIN)
    bridge = entry.runtime_data
    with pytest.raises(ServiceValidationError) as err:
        await bridge.async_send_command(bridge.devices[THERMOSTAT_ID], {"target_humidity": 40})
    assert err.value.translation_key == "not_supported"
    with pytest.raises(ServiceValidationError) as err:
        await bridge.async_send_command(bridge.devices[THERMOSTAT_ID], {"bogus": 1})
    assert err.value.translation_key == "invalid_command"
    assert sent_commands(mqtt_mock) == []


async def test_command_to_offline_device_is_refused(
    hass: HomeAssistant, thermostat: MockConfigEntry, mqtt_mock: Any
) -> None:
    await send(hass, THERMOSTAT_ID, "availability", "offline")
    assert hass.states.get(ENTITY).state == STATE_UNAVAILABLE
    bridge = thermostat.runtime_data
    with pytest.raises(HomeAssistantError) as err:
        await bridge.async_send_command(bridge.devices[THERMOSTAT_ID], {"target_temperature": 22})
    assert err.value.translation_key == "device_unavailable"
    assert sent_commands(mqtt_mock) == []


async def test_publish_failure_reverts_and_raises(
    hass: HomeAssistant, thermostat: MockConfigEntry, mqtt_mock: Any
) -> None:
    with (
        patch(
            "custom_components.thermo_bridge.bridge.mqtt.async_publish",
            side_effect=HomeAssistantError("MQTT is not connected"),
        ),
        pytest.raises(HomeAssistantError) as err,
    ):
        await call(hass, "set_temperature", temperature=22)
    assert err.value.translation_key == "publish_failed"
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 21
    assert not thermostat.runtime_data.devices[THERMOSTAT_ID].pending


async def test_ack_for_someone_elses_command_is_ignored(hass: HomeAssistant, thermostat: MockConfigEntry) -> None:
    await send(hass, THERMOSTAT_ID, "ack", {"id": "fromtheserver1", "status": "ok"})
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 21


async def test_service_call_returns_before_the_timeout_and_the_value_stays_until_it(
    hass: HomeAssistant, setup_entry: SetupEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    """The call waits for an ack at most SERVICE_ACK_WAIT; the requested value stays until the timeout."""
    await setup_entry(options={"command_timeout": 20, "optimistic": False})
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG_MIN)
    await send(hass, THERMOSTAT_ID, "state", {"target_temperature": 20, "hvac_mode": "heat"})
    task = asyncio.create_task(call(hass, "set_temperature", temperature=22))
    await settle()
    assert not task.done()
    freezer.tick(timedelta(seconds=6))
    async_fire_time_changed(hass)
    await task
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 22
    freezer.tick(timedelta(seconds=15))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert hass.states.get(ENTITY).attributes[ATTR_TEMPERATURE] == 20


async def test_mode_change_confirmed_by_state_report(
    hass: HomeAssistant, thermostat: MockConfigEntry, mqtt_mock: Any
) -> None:
    task = asyncio.create_task(call(hass, "set_hvac_mode", hvac_mode="cool"))
    await settle()
    assert hass.states.get(ENTITY).state == "cool"
    fire(hass, THERMOSTAT_ID, "state", {"hvac_mode": "heat"})  # stale report: no bounce
    await settle()
    assert hass.states.get(ENTITY).state == "cool"
    fire(hass, THERMOSTAT_ID, "state", {"hvac_mode": "cool", "hvac_action": "cooling"})
    await task
    assert hass.states.get(ENTITY).state == "cool"
    assert hass.states.get(ENTITY).attributes[ATTR_HVAC_ACTION] == "cooling"
    assert not thermostat.runtime_data.devices[THERMOSTAT_ID].pending
