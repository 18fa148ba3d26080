"""Snapshots of every platform's entities (registry entries and states), per HA release."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import snapshot_platform
from syrupy.assertion import SnapshotAssertion

from .conftest import SENSOR_CONFIG, SENSOR_ID, THERMOSTAT_CONFIG, THERMOSTAT_ID, SetupEntry, send


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
@pytest.mark.parametrize("platform", [Platform.CLIMATE, Platform.SENSOR, Platform.BINARY_SENSOR, Platform.EVENT])
async def test_platform_snapshot(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    freezer: FrozenDateTimeFactory,
    platform: Platform,
) -> None:
    freezer.move_to("2026-01-15 12:00:00+00:00")
    with patch("custom_components.thermo_bridge.PLATFORMS", [platform]):
        entry = await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    await send(hass, SENSOR_ID, "config", SENSOR_CONFIG)
    state: dict[str, Any] = {
        "temperature": 20.5,
        "humidity": 45,
        "battery": 90,
        "signal": -60,
        "hvac_mode": "heat_cool",
        "hvac_action": "preheating",
        "target_temperature": 21,
        "target_temperature_low": 19,
        "target_temperature_high": 24,
        "target_humidity": 40,
        "preset": "eco",
        "fan_mode": "low",
        "swing_mode": "on",
    }
    await send(hass, THERMOSTAT_ID, "state", state)
    await send(
        hass,
        SENSOR_ID,
        "state",
        {
            "temperature": 18.25,
            "humidity": 51,
            "battery": 12,
            "battery_voltage": 2.61,
            "co2": 830,
            "pressure": 1013.2,
            "illuminance": 250,
            "pm25": 8,
            "signal": -71,
            "window_open": True,
            "low_battery": True,
            "fault": False,
        },
    )
    await send(hass, THERMOSTAT_ID, "event", {"event": "window_open_detected", "data": {"source": "sensor"}})
    await snapshot_platform(hass, entity_registry, snapshot, entry.entry_id)
