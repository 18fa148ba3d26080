"""Which device and entities a device config calls for: shared by the platforms and the bridge."""

from __future__ import annotations

from homeassistant.const import Platform
from homeassistant.helpers.device_registry import DeviceInfo

from .const import DOMAIN
from .protocol import DeviceConfig, ValueType

CLIMATE_KEY = "climate"
EVENT_KEY = "event"


def entity_keys(config: DeviceConfig) -> set[tuple[Platform, str]]:
    """(platform, capability key) of every entity the device should have."""
    keys: set[tuple[Platform, str]] = set()
    if config.thermostat is not None:
        keys.add((Platform.CLIMATE, CLIMATE_KEY))
    if config.events:
        keys.add((Platform.EVENT, EVENT_KEY))
    for measurement in config.measurements:
        platform = Platform.SENSOR if measurement.type.value_type is ValueType.NUMBER else Platform.BINARY_SENSOR
        keys.add((platform, measurement.key))
    return keys


def unique_id(device_id: str, key: str) -> str:
    """An entity's unique id: stable across restarts, from device id and capability."""
    return f"{device_id}_{key}"


def device_info(config: DeviceConfig) -> DeviceInfo:
    """The device registry entry of a device (the bridge registers it, entities link to it)."""
    return DeviceInfo(
        identifiers={(DOMAIN, config.device_id)},
        name=config.name,
        manufacturer=config.manufacturer,
        model=config.model,
        sw_version=config.sw_version,
        suggested_area=config.suggested_area,
    )
