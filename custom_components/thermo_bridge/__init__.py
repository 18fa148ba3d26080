"""The thermo_bridge integration: MQTT thermostats and sensors as Home Assistant entities."""

from __future__ import annotations

import logging

from homeassistant.components import mqtt
from homeassistant.const import CONF_HOST, CONF_TOKEN
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers import device_registry as dr

from .bridge import Bridge, ThermoBridgeConfigEntry
from .const import DOMAIN, PLATFORMS
from .server import ServerCoordinator, server_identifier

_LOGGER = logging.getLogger(__name__)


async def async_setup_entry(hass: HomeAssistant, entry: ThermoBridgeConfigEntry) -> bool:
    """Wait for HA's MQTT client, add the platforms, then subscribe to the base topic."""
    if not await mqtt.async_wait_for_mqtt_client(hass):
        raise ConfigEntryNotReady(translation_domain=DOMAIN, translation_key="mqtt_not_available")
    bridge = Bridge(hass, entry)
    entry.runtime_data = bridge
    _async_set_up_server(hass, entry)
    if bridge.server is not None:
        # In the background, not first_refresh: a server that is down or slow must not keep the
        # devices (they come from MQTT) from setting up; its entities wait unavailable meanwhile.
        entry.async_create_background_task(hass, bridge.server.async_refresh(), "thermo_bridge server status")
    # Platforms first: the retained configs that arrive right after subscribing find them ready.
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    entry.async_on_unload(bridge.async_stop)
    await bridge.async_start()
    return True


def _async_set_up_server(hass: HomeAssistant, entry: ThermoBridgeConfigEntry) -> None:
    """Poll the linked server when the entry has its address and token."""
    if entry.data.get(CONF_HOST) and entry.data.get(CONF_TOKEN):
        server = entry.runtime_data.server = ServerCoordinator(hass, entry)
        # Registered now, so the first status (in the background) finds it to set sw_version on.
        dr.async_get(hass).async_get_or_create(config_entry_id=entry.entry_id, **server.device_info())


async def async_unload_entry(hass: HomeAssistant, entry: ThermoBridgeConfigEntry) -> bool:
    """Unload the platforms; the bridge's subscriptions and timers go with the entry."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: ThermoBridgeConfigEntry, device_entry: dr.DeviceEntry
) -> bool:
    """Allow deleting a device; clear its retained config so it is not rediscovered.

    The linked server's device stays while the entry is linked (it comes back with the next poll).
    """
    bridge = entry.runtime_data
    if server_identifier(entry) in device_entry.identifiers:
        return bridge.server is None
    for domain, device_id in device_entry.identifiers:
        if domain == DOMAIN:
            await bridge.async_remove_device(device_id)
    return True
