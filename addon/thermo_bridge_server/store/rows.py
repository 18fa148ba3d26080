"""Row shapes both dialects share: constants, the idempotency key, rows to records, migrations."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from thermo_bridge_protocol import MEASUREMENT_TYPES, DeviceConfig, StateUpdate, parse_config
from thermo_bridge_protocol.models import THERMOSTAT_NUMBER_STATE

from .base import CommandRecord, CommandStatus, DeadLetter, DeviceRecord, EventRecord, EventType, StateRecord
from .events import decode

MAX_FUTURE_SKEW = 300.0
"""Seconds a device timestamp may run ahead of the server clock for ordering purposes."""

HISTORY_KEYS = frozenset(MEASUREMENT_TYPES) | frozenset(THERMOSTAT_NUMBER_STATE)
"""State keys whose values are numbers (or booleans stored as 0/1) and so go to history."""

NO_SEQ = -1
NO_TS = -1.0
"""Stand-ins for a missing seq/ts inside the idempotency key (NULLs never collide in a key)."""

BATCH_CAP = 2000
"""At most this many queued writes go into one transaction."""

PURGE_CHUNK = 5000
"""Retention deletes this many rows per transaction so ingest is never stalled for long."""

MAX_DEAD_LETTER_MESSAGE = 1000
"""Characters of a rejection message kept with a dead letter."""


class StoreClosedError(RuntimeError):
    """A write was queued on a store that is not open."""


_SCALAR = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def scalar_json(value: object) -> str:
    """JSON for one state value, with fast paths for the usual number and boolean."""
    if type(value) is float:
        return repr(value)  # what json does for a finite float (the protocol rejects the others)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _SCALAR(value)


def load_config(text: str) -> DeviceConfig:
    """Parse a stored config back through the protocol (the wire form round-trips)."""
    return parse_config(text.encode())


DedupeKey = tuple[str, int, float, int]
"""(device_id, seq or NO_SEQ, device ts or NO_TS, digest of the STATE event's data)."""


def dedupe_key(device_id: str, update: StateUpdate, data: str) -> DedupeKey | None:
    """The update's idempotency key, or None when it carries neither seq nor ts.

    ``data`` is the update's STATE event text (``events.state``): a QoS 1 redelivery is
    byte-identical, so it gives the same text and digest, while two different reports
    that share (seq, ts), e.g. after a device's counter reset on reboot, differ in it.
    """
    if update.seq is None and update.ts is None:
        return None
    digest = int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big") >> 1  # fits a bigint
    return (
        device_id,
        NO_SEQ if update.seq is None else update.seq,
        NO_TS if update.ts is None else float(update.ts),
        digest,
    )


def device_from_row(row: Sequence[Any]) -> DeviceRecord:
    """Build a DeviceRecord from (device_id, home, config, online, first_seen, updated_at)."""
    device_id, home, config, online, first_seen, updated_at = row
    return DeviceRecord(
        device_id=device_id,
        home=home,
        config=load_config(config),
        online=None if online is None else bool(online),
        first_seen=first_seen,
        updated_at=updated_at,
    )


def state_from_rows(device_id: str, rows: Sequence[Sequence[Any]]) -> StateRecord | None:
    """Merge per-key rows (key, value json, order_ts, seq, device_ts, received_at).

    The values, the newest receive time, and the ts/seq of the newest update.
    """
    if not rows:
        return None
    values = {}
    newest: tuple[float, int, float, float | None] | None = None
    for key, value, ots, seq, device_ts, received_at in rows:
        values[key] = json.loads(value)
        if newest is None or (ots, seq, received_at) > newest[:3]:
            newest = (ots, seq, received_at, device_ts)
    assert newest is not None  # noqa: S101 - rows is not empty
    return StateRecord(
        device_id=device_id,
        values=dict(sorted(values.items())),
        updated_at=max(row[5] for row in rows),
        device_ts=newest[3],
        seq=None if newest[1] == NO_SEQ else int(newest[1]),
    )


def command_from_row(row: Sequence[Any]) -> CommandRecord:
    """Build a CommandRecord from (id, device_id, sub, values json, status, reason, created, updated, key)."""
    command_id, device_id, sub, values, status, reason, created_at, updated_at, key = row
    return CommandRecord(
        command_id=command_id,
        device_id=device_id,
        sub=sub,
        values=json.loads(values),
        status=CommandStatus(status),
        created_at=created_at,
        updated_at=updated_at,
        reason=reason,
        idempotency_key=key,
    )


def dead_letter_from_row(row: Sequence[Any]) -> DeadLetter:
    """Build a DeadLetter from (id, ts, topic, reason, message, payload)."""
    return DeadLetter(id=row[0], ts=row[1], topic=row[2], reason=row[3], message=row[4], payload=bytes(row[5]))


def event_from_row(row: Sequence[Any]) -> EventRecord:
    """Build an EventRecord from (id, ts, device_id, home, type, data json)."""
    return EventRecord(row[0], row[1], row[2], row[3], EventType(row[4]), decode(row[5]), row[5])


def grants_from_rows(rows: Iterable[Sequence[Any]]) -> dict[str, frozenset[str]]:
    """Every user's homes from (sub, home) rows."""
    out: dict[str, set[str]] = {}
    for sub, home in rows:
        out.setdefault(sub, set()).add(home)
    return {sub: frozenset(homes) for sub, homes in out.items()}


def migrations(backend: str) -> list[tuple[int, str, str]]:
    """The backend's migrations as (version, name, sql), ascending; files are ``NNN_name.sql``."""
    folder = resources.files(__package__).joinpath("migrations", backend)
    out = []
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        number, _, rest = name.partition("_")
        out.append((int(number), rest.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {backend}: {versions}")
    return out
