"""Binary sensor entities: one per boolean measurement (window open, low battery, fault)."""

from __future__ import annotations

from homeassistant.components.binary_sensor import (  # type: ignore[attr-defined]  # re-exported from .const in HA >= 2025.x
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .bridge import Bridge, ThermoBridgeConfigEntry
from .device import DeviceData
from .entity import ThermoBridgeEntity, async_setup_platform_entities
from .server import ServerEntity

PARALLEL_UPDATES = 0

BINARY_SENSORS: dict[str, BinarySensorEntityDescription] = {
    description.key: description
    for description in (
        BinarySensorEntityDescription(key="window_open", device_class=BinarySensorDeviceClass.WINDOW),
        BinarySensorEntityDescription(
            key="low_battery",
            translation_key="low_battery",
            device_class=BinarySensorDeviceClass.BATTERY,
            entity_category=EntityCategory.DIAGNOSTIC,
        ),
        BinarySensorEntityDescription(
            key="fault",
            translation_key="fault",
            device_class=BinarySensorDeviceClass.PROBLEM,
            entity_category=EntityCategory.DIAGNOSTIC,
        ),
    )
}

SERVER_ONLINE = BinarySensorEntityDescription(
    key="online",
    translation_key="server_online",
    device_class=BinarySensorDeviceClass.CONNECTIVITY,
    entity_category=EntityCategory.DIAGNOSTIC,
)


async def async_setup_entry(
    hass: HomeAssistant, entry: ThermoBridgeConfigEntry, async_add_entities: AddEntitiesCallback
) -> None:
    """Add a binary sensor for every boolean measurement, now and as devices are discovered."""
    if (server := entry.runtime_data.server) is not None:
        async_add_entities([ServerOnlineBinarySensor(server, SERVER_ONLINE.key)])
    await async_setup_platform_entities(
        hass, entry, async_add_entities, Platform.BINARY_SENSOR, ThermoBridgeBinarySensor
    )


class ThermoBridgeBinarySensor(ThermoBridgeEntity, BinarySensorEntity):
    """A boolean measurement; ``unknown`` until the device reports it."""

    _platform_key = Platform.BINARY_SENSOR

    def __init__(self, bridge: Bridge, device: DeviceData, key: str) -> None:
        self.entity_description = BINARY_SENSORS[key]
        self._listen_keys = frozenset({key})
        super().__init__(bridge, device, key)

    @property
    def is_on(self) -> bool | None:
        """The last reported value."""
        value = self._device.values.get(self._key)
        return value if isinstance(value, bool) else None


class ServerOnlineBinarySensor(ServerEntity, BinarySensorEntity):
    """Whether the linked server answered its last status poll; available even when it did not."""

    entity_description = SERVER_ONLINE

    @property
    def available(self) -> bool:
        """Always: a server that does not answer is off, not unknown."""
        return True

    @property
    def is_on(self) -> bool:
        """The last poll got a status."""
        return self.coordinator.data is not None and self.coordinator.last_update_success
