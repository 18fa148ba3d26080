"""Base entity: device info, availability and push updates from the bridge."""

from __future__ import annotations

from collections.abc import Callable

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .bridge import Bridge, ThermoBridgeConfigEntry
from .capabilities import device_info, entity_keys, unique_id
from .const import signal_new_device
from .device import DeviceData
from .protocol import DeviceConfig


class ThermoBridgeEntity(Entity):
    """An entity of one device capability (``key``); pushed, never polled."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    _platform_key: Platform
    _listen_keys: frozenset[str] | None = None
    """State keys this entity shows; None means every key."""

    def __init__(self, bridge: Bridge, device: DeviceData, key: str) -> None:
        self._bridge = bridge
        self._device = device
        self._key = key
        self._attr_unique_id = unique_id(device.device_id, key)
        self._attr_device_info = device_info(device.config)
        self._config = device.config
        """The config the attributes were derived from."""
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
        config = self._device.config
        if changed is None and config is not self._config and (self._platform_key, self._key) in entity_keys(config):
            # A changed config (not just availability): refresh; a dropped capability is removed by the bridge.
            self._config = config
            self._update_from_config(config)
        self.async_write_ha_state()

    def _update_from_config(self, config: DeviceConfig) -> None:
        """Refresh what the entity derives from the device's config."""


EntityFactory = Callable[[Bridge, DeviceData, str], ThermoBridgeEntity]


async def async_setup_platform_entities(
    hass: HomeAssistant,
    entry: ThermoBridgeConfigEntry,
    async_add_entities: AddEntitiesCallback,
    platform: Platform,
    factory: EntityFactory,
) -> None:
    """Add the entities of every discovered device, and the new ones of a changed config."""
    bridge = entry.runtime_data

    @callback
    def add(device: DeviceData) -> None:
        new = []
        for entity_platform, key in entity_keys(device.config):
            uid = unique_id(device.device_id, key)
            if entity_platform is platform and uid not in bridge.entity_unique_ids:
                bridge.entity_unique_ids.add(uid)
                new.append(factory(bridge, device, key))
        if new:
            async_add_entities(new)

    # The bridge subscribes only after every platform is set up, so each device (retained
    # configs included) arrives through this signal.
    entry.async_on_unload(async_dispatcher_connect(hass, signal_new_device(entry.entry_id), add))
