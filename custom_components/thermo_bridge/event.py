"""Event entity: one per device that declares events (button presses, faults…)."""

from __future__ import annotations

from collections.abc import Iterator

from homeassistant.components.event import EventEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .bridge import Bridge, DeviceData, ThermoBridgeConfigEntry
from .entity import ThermoBridgeEntity, async_setup_platform_entities
from .protocol import DeviceConfig, DeviceEvent

PARALLEL_UPDATES = 0
KEY = "event"


async def async_setup_entry(
    hass: HomeAssistant, entry: ThermoBridgeConfigEntry, async_add_entities: AddEntitiesCallback
) -> None:
    """Add an event entity for every device with events, now and as devices are discovered."""

    def factory(bridge: Bridge, device: DeviceData) -> Iterator[ThermoBridgeEvent]:
        if ThermoBridgeEvent.supported(device.config, KEY):
            yield ThermoBridgeEvent(bridge, device, KEY)

    await async_setup_platform_entities(hass, entry, async_add_entities, factory)


class ThermoBridgeEvent(ThermoBridgeEntity, EventEntity):
    """The device's events; the event data become the entity's attributes."""

    _attr_translation_key = "device_event"
    _listen_keys = frozenset[str]()  # state reports do not concern it; config/availability do

    @staticmethod
    def supported(config: DeviceConfig, key: str) -> bool:
        """Devices that declare at least one event."""
        return bool(config.events)

    def _update_from_config(self, config: DeviceConfig) -> None:
        self._attr_event_types = list(config.events)

    async def async_added_to_hass(self) -> None:
        """Follow the device's events as well."""
        await super().async_added_to_hass()
        self.async_on_remove(self._device.async_add_event_listener(self._handle_event))

    @callback
    def _handle_event(self, event: DeviceEvent) -> None:
        self._trigger_event(event.event_type, dict(event.data))
        self.async_write_ha_state()
