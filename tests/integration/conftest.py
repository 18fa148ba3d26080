"""Fixtures for the Home Assistant integration tests (run with the phcc plugin)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import PropertyMock, patch

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import __version__ as HA_VERSION
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_mqtt_message,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension
from syrupy.assertion import SnapshotAssertion

import custom_components
from custom_components.thermo_bridge.const import CONF_BASE_TOPIC, DOMAIN
from tests.broker import Mosquitto
from thermo_bridge_sim import devices

from .server_process import ServerProcess

PROJECT_INTEGRATION = Path(__file__).parents[2] / "custom_components"
# HA resolves custom integrations through the `custom_components` package: make sure it is the
# project's (phcc ships a testing_config with its own custom_components).
assert [str(PROJECT_INTEGRATION)] == [str(Path(p)) for p in custom_components.__path__], custom_components.__path__

BASE = "thermo_bridge"

THERMOSTAT_ID = "living"
SENSOR_ID = "hall"

THERMOSTAT_FIELDS: dict[str, Any] = {
    "name": "Living room",
    "manufacturer": "Acme",
    "model": "T-1000",
    "sw_version": "1.4.2",
    "measurements": devices.measurements(
        "temperature", "humidity", "battery", "signal", precision={"temperature": 1, "humidity": 0}
    ),
    "events": ["button_press", "window_open_detected", "fault"],
    "hvac_modes": ["off", "heat", "cool", "heat_cool", "auto"],
    "temperature_unit": "°C",
    "setpoint": "both",
    "min_temp": 5,
    "max_temp": 30,
    "temp_step": 0.5,
    "presets": ["eco", "comfort", "away", "boost"],
    "fan_modes": ["auto", "low", "high"],
    "swing_modes": ["on", "off"],
    "humidity": devices.humidity_range(30, 60, 1),
}
THERMOSTAT_CONFIG: dict[str, Any] = devices.thermostat(THERMOSTAT_ID, **THERMOSTAT_FIELDS)

SENSOR_CONFIG: dict[str, Any] = devices.sensor(
    SENSOR_ID,
    name="Hall sensor",
    manufacturer="Acme",
    model="S-2",
    measurements=devices.measurements(
        *("temperature", "humidity", "battery", "battery_voltage", "co2", "pressure", "illuminance", "pm25"),
        *("signal", "window_open", "low_battery", "fault"),
        precision={"temperature": 1, "battery_voltage": 2},
    ),
    events=["button_press"],
)


def ha_version() -> tuple[int, int]:
    """The running Home Assistant's (year, month)."""
    major, minor = HA_VERSION.split(".")[:2]
    return int(major), int(minor)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Load custom_components/thermo_bridge from the project."""


@pytest.fixture(autouse=True)
async def unload_entries_after_test(hass: HomeAssistant) -> AsyncIterator[None]:
    """Unload every entry after each test: proves unloading works and leaves no timer behind.

    phcc fails a test on lingering timers; HA's own MQTT keeps a periodic timer until its
    entry is unloaded, and ours must have cancelled all of theirs by then.
    """
    yield
    # Ours first: HA's MQTT cancels its (unsubscribe cooldown) timers when it unloads.
    entries = sorted(hass.config_entries.async_entries(), key=lambda entry: entry.domain != DOMAIN)
    for entry in entries:
        if entry.state is ConfigEntryState.LOADED:
            assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    # With the mocked paho client, HA's MQTT misc-loop timer (1 s) is only cancelled on a
    # socket close that never comes: let it fire (it does not re-arm on the mock).
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=2))
    await hass.async_block_till_done()


@pytest.fixture
async def server(
    hass: HomeAssistant, socket_enabled: None, mosquitto: Mosquitto, tmp_path: Path
) -> AsyncIterator[ServerProcess]:
    """The real Thermo Bridge server (a process, dev auth, on loopback) on the test's broker."""
    process = ServerProcess(tmp_path / "server", mosquitto)
    await hass.async_add_executor_job(process.start)
    yield process
    await hass.async_add_executor_job(process.stop)


@pytest.fixture
def entity_registry_enabled_by_default() -> Iterator[None]:
    """Create entities that are disabled by default as enabled (as HA core's fixture does)."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        new_callable=PropertyMock,
        return_value=True,
    ):
        yield


class VersionedSnapshotExtension(HomeAssistantSnapshotExtension):
    """HA's snapshot serializer, one snapshot folder per HA release.

    Entity and registry dumps gain fields between HA releases, so each supported release
    keeps its own snapshots (both committed) instead of one release's run failing on the
    other's.
    """

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        year, month = ha_version()
        return str(Path(test_location.filepath).parent / "snapshots" / f"ha-{year}.{month}")


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Snapshots with HA's serializer, kept per HA release."""
    return snapshot.use_extension(VersionedSnapshotExtension)


def get_device(registry: dr.DeviceRegistry, device_id: str) -> dr.DeviceEntry | None:
    """The registry device of a thermo_bridge device id (the lookup API changed in HA 2026)."""
    identifier = (DOMAIN, device_id)
    if hasattr(registry, "async_get_devices"):
        devices = registry.async_get_devices(identifiers={identifier})
        return devices[0] if devices else None
    return registry.async_get_device(identifiers={identifier})


def mqtt_subscription_count(hass: HomeAssistant) -> int:
    """Subscriptions of HA's MQTT client (mqtt_mock wraps the real client in a MagicMock)."""
    client = hass.data["mqtt"].client
    return len(getattr(client, "_mock_wraps", client).subscriptions)


def thermostat_config(**changes: Any) -> dict[str, Any]:
    """A fresh thermostat config with top-level or ``thermostat.*`` changes."""
    return devices.thermostat(THERMOSTAT_ID, **{**THERMOSTAT_FIELDS, **changes})


def fire(hass: HomeAssistant, device_id: str, kind: str, payload: Any, base: str = BASE) -> None:
    """Publish (as the broker would deliver it) a message of ``kind`` from ``device_id``."""
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    async_fire_mqtt_message(hass, f"{base}/{device_id}/{kind}", payload)


async def send(hass: HomeAssistant, device_id: str, kind: str, payload: Any, base: str = BASE) -> None:
    """``fire`` and wait until Home Assistant has processed it."""
    fire(hass, device_id, kind, payload, base)
    await hass.async_block_till_done()


SetupEntry = Callable[..., Awaitable[MockConfigEntry]]


@pytest.fixture
def setup_entry(hass: HomeAssistant, mqtt_mock: Any) -> SetupEntry:
    """Set up a thermo_bridge entry on the mocked MQTT (HA's own mqtt_mock)."""

    async def _setup(base: str = BASE, options: dict[str, Any] | None = None) -> MockConfigEntry:
        entry = MockConfigEntry(
            domain=DOMAIN,
            title="Thermo Bridge",
            unique_id=base,
            data={CONF_BASE_TOPIC: base},
            options=options or {},
        )
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        return entry

    return _setup


@pytest.fixture
async def thermostat(hass: HomeAssistant, setup_entry: SetupEntry) -> MockConfigEntry:
    """An entry with the thermostat discovered, online and reporting."""
    entry = await setup_entry()
    await send(hass, THERMOSTAT_ID, "config", THERMOSTAT_CONFIG)
    await send(hass, THERMOSTAT_ID, "availability", "online")
    await send(
        hass,
        THERMOSTAT_ID,
        "state",
        {
            "temperature": 20.5,
            "humidity": 45,
            "battery": 90,
            "signal": -60,
            "hvac_mode": "heat",
            "hvac_action": "heating",
            "target_temperature": 21,
            "target_temperature_low": 19,
            "target_temperature_high": 24,
            "target_humidity": 40,
            "preset": "comfort",
            "fan_mode": "auto",
            "swing_mode": "off",
        },
    )
    return entry
