"""Sensor entities: one per numeric measurement a device declares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory, Platform, UnitOfInformation
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .bridge import Bridge, ThermoBridgeConfigEntry
from .device import DeviceData
from .entity import ThermoBridgeEntity, async_setup_platform_entities
from .protocol import DeviceConfig
from .server import ServerCoordinator, ServerEntity, ServerStatus

PARALLEL_UPDATES = 0

SENSORS: dict[str, SensorEntityDescription] = {
    description.key: description
    for description in (
        SensorEntityDescription(
            key="temperature", device_class=SensorDeviceClass.TEMPERATURE, state_class=SensorStateClass.MEASUREMENT
        ),
        SensorEntityDescription(
            key="humidity", device_class=SensorDeviceClass.HUMIDITY, state_class=SensorStateClass.MEASUREMENT
        ),
        SensorEntityDescription(
            key="battery",
            device_class=SensorDeviceClass.BATTERY,
            state_class=SensorStateClass.MEASUREMENT,
            entity_category=EntityCategory.DIAGNOSTIC,
        ),
        SensorEntityDescription(
            key="battery_voltage",
            translation_key="battery_voltage",
            device_class=SensorDeviceClass.VOLTAGE,
            state_class=SensorStateClass.MEASUREMENT,
            entity_category=EntityCategory.DIAGNOSTIC,
            entity_registry_enabled_default=False,
        ),
        SensorEntityDescription(
            key="co2", device_class=SensorDeviceClass.CO2, state_class=SensorStateClass.MEASUREMENT
        ),
        SensorEntityDescription(
            key="pressure", device_class=SensorDeviceClass.PRESSURE, state_class=SensorStateClass.MEASUREMENT
        ),
        SensorEntityDescription(
            key="illuminance", device_class=SensorDeviceClass.ILLUMINANCE, state_class=SensorStateClass.MEASUREMENT
        ),
        SensorEntityDescription(
            key="pm25", device_class=SensorDeviceClass.PM25, state_class=SensorStateClass.MEASUREMENT
        ),
        SensorEntityDescription(
            key="signal",
            device_class=SensorDeviceClass.SIGNAL_STRENGTH,
            state_class=SensorStateClass.MEASUREMENT,
            entity_category=EntityCategory.DIAGNOSTIC,
            entity_registry_enabled_default=False,
        ),
    )
}


@dataclass(frozen=True, kw_only=True)
class ServerSensorDescription(SensorEntityDescription):
    """A figure of the linked server's status."""

    value: Callable[[ServerStatus], float | None]


SERVER_SENSORS: tuple[ServerSensorDescription, ...] = (
    ServerSensorDescription(
        key="web_clients",
        translation_key="web_clients",
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value=lambda status: status.web_clients,
    ),
    ServerSensorDescription(
        key="messages_per_minute",
        translation_key="messages_per_minute",
        native_unit_of_measurement="messages/min",
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value=lambda status: status.messages_per_minute,
    ),
    ServerSensorDescription(
        key="rejected_total",
        translation_key="rejected_total",
        state_class=SensorStateClass.TOTAL_INCREASING,
        entity_category=EntityCategory.DIAGNOSTIC,
        value=lambda status: status.rejected_total,
    ),
    ServerSensorDescription(
        key="database_bytes",
        translation_key="database_size",
        device_class=SensorDeviceClass.DATA_SIZE,
        native_unit_of_measurement=UnitOfInformation.BYTES,
        suggested_unit_of_measurement=UnitOfInformation.MEGABYTES,
        suggested_display_precision=1,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value=lambda status: status.database_bytes,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant, entry: ThermoBridgeConfigEntry, async_add_entities: AddEntitiesCallback
) -> None:
    """Add a sensor for every numeric measurement, now and as devices are discovered."""
    if (server := entry.runtime_data.server) is not None:
        async_add_entities(ServerSensor(server, description) for description in SERVER_SENSORS)
    await async_setup_platform_entities(hass, entry, async_add_entities, Platform.SENSOR, ThermoBridgeSensor)


class ThermoBridgeSensor(ThermoBridgeEntity, SensorEntity):
    """A numeric measurement; ``unknown`` until the device reports it."""

    _platform_key = Platform.SENSOR

    def __init__(self, bridge: Bridge, device: DeviceData, key: str) -> None:
        self.entity_description = SENSORS[key]
        self._listen_keys = frozenset({key})
        super().__init__(bridge, device, key)

    def _update_from_config(self, config: DeviceConfig) -> None:
        measurement = config.measurement(self._key)
        if measurement is None:  # pragma: no cover - the entity is removed before this runs
            return
        self._attr_native_unit_of_measurement = measurement.unit
        self._attr_suggested_display_precision = measurement.precision

    @property
    def native_value(self) -> float | None:
        """The last reported value."""
        value = self._device.values.get(self._key)
        return value if isinstance(value, float) else None


class ServerSensor(ServerEntity, SensorEntity):
    """A figure of the linked server; unavailable while the server does not answer."""

    entity_description: ServerSensorDescription

    def __init__(self, coordinator: ServerCoordinator, description: ServerSensorDescription) -> None:
        self.entity_description = description
        super().__init__(coordinator, description.key)

    @property
    def native_value(self) -> float | None:
        """The figure from the last status (None: the server could not tell)."""
        return self.entity_description.value(self.coordinator.data)
