"""The one error the protocol raises for bad input.

Every rejection carries a stable machine-readable ``reason`` (used as a counter label by
the server and in diagnostics by the integration) and a human sentence naming the field.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a message was rejected; stable identifiers, safe as metric labels."""

    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    TOO_DEEP = "too_deep"
    NOT_OBJECT = "not_object"
    UNKNOWN_KEY = "unknown_key"
    MISSING_KEY = "missing_key"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    INVALID_VALUE = "invalid_value"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    INVALID_TOPIC = "invalid_topic"
    INVALID_DEVICE_ID = "invalid_device_id"
    ID_MISMATCH = "id_mismatch"
    UNKNOWN_DEVICE = "unknown_device"
    NOT_SUPPORTED = "not_supported"
    DUPLICATE_KEY = "duplicate_key"


def _printable(text: str) -> str:
    """Escape what could break a log line or a UTF-8 encoder (newlines, lone surrogates)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class ProtocolError(ValueError):
    """A message (or a value in it) that does not follow docs/protocol.md."""

    def __init__(self, reason: Reason, message: str, *, path: str = "") -> None:
        # Paths and messages quote attacker-controlled keys and values: keep them printable
        # and encodable, so logging or storing a rejection can never fail in turn.
        path, message = _printable(path), _printable(message)
        self.reason = reason
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)
