"""The thermo_bridge integration: MQTT thermostats and sensors as Home Assistant entities."""

from __future__ import annotations

import logging

from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers import device_registry as dr

from .bridge import Bridge, ThermoBridgeConfigEntry
from .const import DOMAIN, PLATFORMS

_LOGGER = logging.getLogger(__name__)


async def async_setup_entry(hass: HomeAssistant, entry: ThermoBridgeConfigEntry) -> bool:
    """Wait for HA's MQTT client, add the platforms, then subscribe to the base topic."""
    if not await mqtt.async_wait_for_mqtt_client(hass):
        raise ConfigEntryNotReady(translation_domain=DOMAIN, translation_key="mqtt_not_available")
    bridge = Bridge(hass, entry)
    entry.runtime_data = bridge
    # Platforms first: the retained configs that arrive right after subscribing find them ready.
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    entry.async_on_unload(bridge.async_stop)
    await bridge.async_start()
    return True


async def async_unload_entry(hass: HomeAssistant, entry: ThermoBridgeConfigEntry) -> bool:
    """Unload the platforms; the bridge's subscriptions and timers go with the entry."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: ThermoBridgeConfigEntry, device_entry: dr.DeviceEntry
) -> bool:
    """Allow deleting a device; clear its retained config so it is not rediscovered."""
    bridge = entry.runtime_data
    for domain, device_id in device_entry.identifiers:
        if domain == DOMAIN:
            await bridge.async_remove_device(device_id)
    return True
