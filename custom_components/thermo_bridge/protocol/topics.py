"""Topic layout: ``<base>/<device_id>/<kind>``; validation of base topics and device ids."""

from __future__ import annotations

import re

from .errors import ProtocolError, Reason
from .models import MessageKind

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A device id is one safe topic segment: no wildcards, no separators, no spaces."""

_KINDS = {kind.value: kind for kind in MessageKind}


def validate_device_id(device_id: object) -> str:
    """Return ``device_id`` or raise ProtocolError naming what is wrong with it."""
    if not isinstance(device_id, str):
        raise ProtocolError(Reason.INVALID_DEVICE_ID, "device id must be a string")
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise ProtocolError(
            Reason.INVALID_DEVICE_ID,
            f"device id {device_id[:80]!r} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
        )
    return device_id


def validate_base_topic(base: str) -> str:
    """Return ``base`` stripped of slashes at its ends, or raise ProtocolError.

    A base topic is one or more non-empty levels without wildcards and not starting with ``$``.
    """
    stripped = base.strip("/")
    if not stripped or len(stripped.encode()) > 200:
        raise ProtocolError(Reason.INVALID_TOPIC, "base topic must be 1-200 bytes")
    if stripped.startswith("$"):
        raise ProtocolError(Reason.INVALID_TOPIC, "base topic must not start with '$'")
    if any(ch in stripped for ch in "+#\0"):
        raise ProtocolError(Reason.INVALID_TOPIC, "base topic must not contain '+', '#' or NUL")
    if any(not level for level in stripped.split("/")):
        raise ProtocolError(Reason.INVALID_TOPIC, "base topic must not contain empty levels ('//')")
    return stripped


def device_topic(base: str, device_id: str, kind: MessageKind) -> str:
    """The topic of one message kind of one device."""
    return f"{base}/{device_id}/{kind.value}"


def wildcard_topic(base: str, kind: MessageKind) -> str:
    """The subscription covering ``kind`` for every device under ``base``."""
    return f"{base}/+/{kind.value}"


def split_topic(base: str, topic: str) -> tuple[str, MessageKind]:
    """Return (device_id, kind) of a topic under ``base``; raise ProtocolError otherwise."""
    prefix = base + "/"
    if not topic.startswith(prefix):
        raise ProtocolError(Reason.INVALID_TOPIC, f"topic {topic[:120]!r} is not under {base!r}")
    device_id, sep, suffix = topic[len(prefix) :].partition("/")
    kind = _KINDS.get(suffix) if sep else None
    if kind is None:
        raise ProtocolError(Reason.INVALID_TOPIC, f"topic {topic[:120]!r} is not <base>/<device_id>/<kind>")
    return validate_device_id(device_id), kind
