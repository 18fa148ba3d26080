"""Constants of the thermo_bridge integration."""

from __future__ import annotations

from typing import Final

from homeassistant.const import Platform

DOMAIN: Final = "thermo_bridge"

CONF_BASE_TOPIC: Final = "base_topic"
CONF_API_PATH: Final = "api_path"
CONF_LINK: Final = "link"
"""How the entry found its server: ``supervisor`` (add-on discovery, with the internal token)
or ``network`` (zeroconf on the LAN, or typed in)."""
LINK_SUPERVISOR: Final = "supervisor"
LINK_NETWORK: Final = "network"
CONF_ADDON_SLUG: Final = "addon_slug"
"""The add-on's slug, from the Supervisor's discovery: its device page links to its panel."""
CONF_COMMAND_TIMEOUT: Final = "command_timeout"
CONF_OPTIMISTIC: Final = "optimistic"

DEFAULT_COMMAND_TIMEOUT: Final = 10
"""Seconds a requested value is shown before the device's reported state wins again."""
MIN_COMMAND_TIMEOUT: Final = 1
MAX_COMMAND_TIMEOUT: Final = 300
SERVICE_ACK_WAIT: Final = 5.0
"""Longest a service call waits for the device's ack (capped by the command timeout).

Long enough for a device on a healthy network to answer, short enough that an
automation is not stalled by a device that never acks; a late error ack still reverts
the entity and is logged.
"""

EVENT_THERMO_BRIDGE: Final = "thermo_bridge_event"
"""Bus event fired for every device event (see README for the payload)."""
EVENT_THERMO_BRIDGE_COMMAND: Final = "thermo_bridge_command"
"""Bus event fired when a command sent through the add-on server reached its outcome."""

ZEROCONF_TYPE: Final = "_thermo-bridge._tcp.local."

PLATFORMS: Final = [Platform.BINARY_SENSOR, Platform.CLIMATE, Platform.EVENT, Platform.SENSOR]


def signal_new_device(entry_id: str) -> str:
    """Dispatcher signal sent when a device is discovered or its config changed."""
    return f"{DOMAIN}_{entry_id}_device"
