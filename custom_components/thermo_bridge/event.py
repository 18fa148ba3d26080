"""Event entity: one per device that declares events (button presses, faults…)."""

from __future__ import annotations

from homeassistant.components.event import EventEntity
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .bridge import ThermoBridgeConfigEntry
from .entity import ThermoBridgeEntity, async_setup_platform_entities
from .protocol import DeviceConfig, DeviceEvent

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant, entry: ThermoBridgeConfigEntry, async_add_entities: AddEntitiesCallback
) -> None:
    """Add an event entity for every device with events, now and as devices are discovered."""
    await async_setup_platform_entities(hass, entry, async_add_entities, Platform.EVENT, ThermoBridgeEvent)


class ThermoBridgeEvent(ThermoBridgeEntity, EventEntity):
    """The device's events; the event data become the entity's attributes."""

    _platform_key = Platform.EVENT

    _attr_translation_key = "device_event"
    _listen_keys = frozenset[str]()  # state reports do not concern it; config/availability do

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
