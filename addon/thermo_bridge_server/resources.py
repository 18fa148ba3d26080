"""The API's JSON forms of devices, state, history, commands and dead letters.

One definition for REST, the WebSocket and SSE (the OpenAPI and AsyncAPI documents describe them).
"""

from __future__ import annotations

import base64
from typing import Any

from thermo_bridge_server.store.base import CommandRecord, DeadLetter, DeviceRecord, HistoryPoint, StateRecord


def device_json(device: DeviceRecord) -> dict[str, Any]:
    """A device with its capabilities (the config's wire form)."""
    config = device.config
    return {
        "id": device.device_id,
        "name": config.name,
        "kind": str(config.kind),
        "home": device.home,
        "online": device.online,
        "first_seen": device.first_seen,
        "updated_at": device.updated_at,
        "config": config.as_dict(),
    }


def state_json(device_id: str, state: StateRecord | None) -> dict[str, Any]:
    """The latest merged state (empty when the device has not reported yet)."""
    if state is None:
        return {"device_id": device_id, "values": {}, "updated_at": None, "device_ts": None, "seq": None}
    return {
        "device_id": device_id,
        "values": state.values,
        "updated_at": state.updated_at,
        "device_ts": state.device_ts,
        "seq": state.seq,
    }


def point_json(point: HistoryPoint, aggregated: bool) -> dict[str, Any]:
    """One history point; buckets also carry min/max/count."""
    if not aggregated:
        return {"ts": point.ts, "key": point.key, "value": point.value}
    return {
        "ts": point.ts,
        "key": point.key,
        "value": point.value,
        "min": point.minimum,
        "max": point.maximum,
        "count": point.count,
    }


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    """A rejected message; the payload both as text (for reading) and base64 (exact bytes)."""
    return {
        "id": letter.id,
        "ts": letter.ts,
        "topic": letter.topic,
        "reason": letter.reason,
        "message": letter.message,
        "payload_text": letter.payload.decode("utf-8", errors="replace"),
        "payload_base64": base64.b64encode(letter.payload).decode("ascii"),
    }


def command_json(record: CommandRecord) -> dict[str, Any]:
    """A command's public form (never the sender's ``sub``)."""
    return record.as_dict()
