"""Diagnostics: devices, capabilities, last messages and rejection counters, redacted."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr

from .bridge import Bridge, ThermoBridgeConfigEntry
from .const import DOMAIN
from .device import DeviceData
from .server import server_identifier

TO_REDACT = {"username", "password", "token", "secret", "serial", "serial_number", "mac", "ip", "user"}
"""Keys that never leave the house (``user``: who sent a command through the add-on server);
device payloads are free-form where devices add data."""


def _plain(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def _server(bridge: Bridge) -> dict[str, Any] | None:
    server = bridge.server
    if server is None:
        return None
    return {
        "last_update_success": server.last_update_success,
        "last_error": str(server.last_exception) if server.last_exception else None,
        "status": _plain(server.data),
    }


def _device(bridge: Bridge, device: DeviceData) -> dict[str, Any]:
    return async_redact_data(
        {
            "device_id": device.device_id,
            "config": device.config.as_dict(),
            "values": dict(device.values),
            "pending_commands": {cid: dict(p.values) for cid, p in device.pending.items()},
            "online": device.online,
            "expired": device.expired,
            "available": bridge.is_available(device),
            "last_messages": {kind: _plain(message) for kind, message in device.last_messages.items()},
            "rejected": dict(device.rejected),
        },
        TO_REDACT,
    )


async def async_get_config_entry_diagnostics(hass: HomeAssistant, entry: ThermoBridgeConfigEntry) -> dict[str, Any]:
    """Everything the bridge knows, for a bug report."""
    bridge = entry.runtime_data
    return {
        "entry": {"data": async_redact_data(dict(entry.data), TO_REDACT), "options": dict(entry.options)},
        "server": _server(bridge),
        "mqtt_connected": bridge.mqtt_connected,
        "rejected": {
            "total": bridge.rejected_total,
            "by_reason": dict(bridge.rejected_by_reason),
            "without_known_device": dict(bridge.rejected_unknown),
        },
        "devices": [_device(bridge, device) for device in bridge.devices.values()],
    }


async def async_get_device_diagnostics(
    hass: HomeAssistant, entry: ThermoBridgeConfigEntry, device: dr.DeviceEntry
) -> dict[str, Any]:
    """One device's view."""
    bridge = entry.runtime_data
    if server_identifier(entry) in device.identifiers:
        return {"server": _server(bridge)}
    for domain, device_id in device.identifiers:
        if domain == DOMAIN and (data := bridge.devices.get(device_id)) is not None:
            return _device(bridge, data)
    return {"device_id": next((i for d, i in device.identifiers if d == DOMAIN), None), "discovered": False}
