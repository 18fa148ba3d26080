"""The event log's payloads: one encoder per event type, the only place their shapes are defined.

Every entry of the log is (offset, ts, device_id, home, type, data); ``data`` is the JSON
text built here, stored as it is and read back with :func:`decode`. Anything that serves the
log to clients passes these shapes on unchanged, so they are a wire contract: a change here
is a change of the API.
"""

from __future__ import annotations

import json
from typing import Any

from thermo_bridge_protocol import DeviceConfig, DeviceEvent, StateUpdate

from .base import CommandRecord

_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_SORTED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode
# json.dumps() with keyword arguments builds a new encoder per call: these are built once.


def canonical_json(value: object) -> str:
    """Compact JSON with sorted keys, so equal data gives equal text."""
    return _SORTED(value)


def device(config: DeviceConfig) -> str:
    """DEVICE_ADDED / DEVICE_UPDATED: the config's wire form, keys in the order the device sent."""
    return json.dumps(config.as_dict(), separators=(",", ":"), ensure_ascii=False)


def removed() -> str:
    """DEVICE_REMOVED: no data."""
    return "{}"


def state(update: StateUpdate) -> str:
    """STATE: the keys the report carried with their values, the device's ts and seq (or null).

    A QoS 1 redelivery is byte-identical, so it encodes to the same text: the store's
    idempotency key hashes this text.
    """
    return _COMPACT({"values": update.values, "ts": update.ts, "seq": update.seq})


def availability(online: bool) -> str:
    """AVAILABILITY (only logged when it changed)."""
    return canonical_json({"online": online})


def device_event(event: DeviceEvent) -> str:
    """DEVICE_EVENT: a momentary device event, its data and the device's ts."""
    return canonical_json({"event": event.event_type, "data": event.data, "ts": event.ts})


def command(record: CommandRecord) -> str:
    """COMMAND: the command at this step of its lifecycle, with the user who sent it.

    Only that user and admins receive these events (``access.Access.sees_event``).
    """
    return canonical_json({**record.as_dict(), "sub": record.sub})


def grants(sub: str) -> str:
    """GRANTS (internal): whose server-side grants changed."""
    return canonical_json({"sub": sub})


def decode(text: str) -> dict[str, Any]:
    """The stored ``data`` back as a dict."""
    data: dict[str, Any] = json.loads(text)
    return data
