"""Base entity: device info, availability and push updates from the bridge."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .bridge import Bridge, DeviceData, ThermoBridgeConfigEntry
from .const import DOMAIN, signal_new_device
from .protocol import DeviceConfig


def device_info(config: DeviceConfig) -> DeviceInfo:
    """The device registry entry of a device."""
    return DeviceInfo(
        identifiers={(DOMAIN, config.device_id)},
        name=config.name,
        manufacturer=config.manufacturer,
        model=config.model,
        sw_version=config.sw_version,
        suggested_area=config.suggested_area,
    )


class ThermoBridgeEntity(Entity):
    """An entity of one device capability (``key``); pushed, never polled."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    _listen_keys: frozenset[str] | None = None
    """State keys this entity shows; None means every key."""

    def __init__(self, bridge: Bridge, device: DeviceData, key: str) -> None:
        self._bridge = bridge
        self._device = device
        self._key = key
        self._attr_unique_id = f"{device.device_id}_{key}"
        self._attr_device_info = device_info(device.config)
        self._update_from_config(device.config)

    @property
    def available(self) -> bool:
        """Unavailable when the device is offline or expired, or the MQTT link is down."""
        return self._bridge.is_available(self._device)

    async def async_added_to_hass(self) -> None:
        """Follow the device's updates."""
        await super().async_added_to_hass()
        self.async_on_remove(self._device.async_add_listener(self._handle_update, self._listen_keys))

    async def async_will_remove_from_hass(self) -> None:
        """Let the platform create this entity again if the capability comes back."""
        await super().async_will_remove_from_hass()
        self._bridge.entity_unique_ids.discard(self._attr_unique_id or "")

    @callback
    def _handle_update(self, changed: frozenset[str] | None) -> None:
        if changed is None:
            if not self.supported(self._device.config, self._key):
                self._remove_from_registry()
                return
            self._update_from_config(self._device.config)
        self.async_write_ha_state()

    @callback
    def _remove_from_registry(self) -> None:
        """The device's new config dropped this capability: remove the entity for good."""
        registry = er.async_get(self.hass)
        if self.registry_entry is not None and registry.async_get(self.entity_id) is not None:
            registry.async_remove(self.entity_id)
        else:  # pragma: no cover - entities of this integration always have a unique id
            self.hass.async_create_task(self.async_remove())

    def _update_from_config(self, config: DeviceConfig) -> None:
        """Refresh what the entity derives from the device's config."""

    @staticmethod
    def supported(config: DeviceConfig, key: str) -> bool:
        """Whether ``config`` still has the capability ``key``."""
        raise NotImplementedError


EntityFactory = Callable[[Bridge, DeviceData], Iterable[ThermoBridgeEntity]]


async def async_setup_platform_entities(
    hass: HomeAssistant,
    entry: ThermoBridgeConfigEntry,
    async_add_entities: AddEntitiesCallback,
    factory: EntityFactory,
) -> None:
    """Add entities for known devices now and for every discovered or changed device later."""
    bridge = entry.runtime_data

    @callback
    def add(device: DeviceData) -> None:
        new = [
            entity
            for entity in factory(bridge, device)
            if entity.unique_id is not None and entity.unique_id not in bridge.entity_unique_ids
        ]
        if new:
            bridge.entity_unique_ids.update(entity.unique_id for entity in new if entity.unique_id)
            async_add_entities(new)

    for device in list(bridge.devices.values()):
        add(device)
    entry.async_on_unload(async_dispatcher_connect(hass, signal_new_device(entry.entry_id), add))
