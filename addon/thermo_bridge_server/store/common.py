"""Pieces both backends share: row shapes, the idempotency key, migrations on disk.

Design notes that hold for both backends:

* Latest state is one row per (device, key), upserted only when the incoming update is not
  older than the stored one (``order_ts``, then ``seq``). Partial updates therefore merge
  without a read-modify-write, two replicas writing the same device cannot lose each
  other's keys, and a late redelivery of an older report cannot overwrite a newer value.
* ``order_ts`` is the device's timestamp when it sends one (clamped to at most
  ``MAX_FUTURE_SKEW`` seconds ahead of the server clock, so a device whose clock jumps
  back after running ahead is not frozen), else the server receive time.
* The idempotency key of a state update is (device_id, seq, device ts, digest of the
  values), used only when the update carries ``seq`` and/or ``ts``; updates with neither
  are never deduplicated (there is nothing to tell a redelivery from a new report).
  A QoS 1 redelivery is byte-identical, so the digest never hides a real duplicate, and it
  keeps two *different* reports with the same key (a device sending two partial updates in
  the same second without ``seq``, or a seq counter reset by a reboot) from being dropped.
* History gets one row per numeric value (measurements, numeric thermostat keys; booleans
  as 0/1; a key reported as ``None`` as a NULL row meaning "unknown from here").
  Its timestamp is the device's ``ts`` when given, else the receive time.
* Aggregated history buckets are aligned to multiples of the resolution since the Unix epoch
  (``floor(ts / resolution) * resolution``), so the same query always gives the same buckets
  and hourly buckets start on the hour; the first bucket may start before ``start`` but only
  holds values in [start, end). Buckets count only known values (NULL rows are skipped);
  ``limit`` caps the rows returned (raw points, or buckets).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from thermo_bridge_protocol import MEASUREMENT_TYPES, DeviceConfig, StateUpdate, StateValue, parse_config
from thermo_bridge_protocol.models import THERMOSTAT_NUMBER_STATE

from .base import CommandRecord, CommandStatus, DeadLetter, EventType

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


class StoreClosedError(RuntimeError):
    """A write was queued on a store that is not open."""


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_ENCODE_SORTED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode
# json.dumps() with keyword arguments builds a new encoder per call: these are built once.


def dumps(value: object) -> str:
    """Compact, canonical JSON (sorted keys) so equal data gives equal text."""
    return _ENCODE_SORTED(value)


def scalar_json(value: StateValue) -> str:
    """JSON for one state value, with fast paths for the usual number and boolean."""
    if type(value) is float:
        return repr(value)  # what json does for a finite float (the protocol rejects the others)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _ENCODE(value)


def config_json(config: DeviceConfig) -> str:
    """The stored form of a config: its wire form, keys in order (measurements are ordered)."""
    return json.dumps(config.as_dict(), separators=(",", ":"), ensure_ascii=False)


def load_config(text: str) -> DeviceConfig:
    """Parse a stored config back through the protocol (the wire form round-trips)."""
    return parse_config(text.encode())


DedupeKey = tuple[str, int, float, int]
"""(device_id, seq or NO_SEQ, device ts or NO_TS, digest)."""


def state_payload(device_id: str, update: StateUpdate) -> tuple[str, DedupeKey | None]:
    """The STATE event's data as JSON, and the update's idempotency key (None without seq and ts).

    Encoded once per update: the digest in the key is taken over this same text. A QoS 1
    redelivery is byte-identical, so it parses to the same values in the same order and
    gives the same text and digest.
    """
    data = _ENCODE({"values": update.values, "ts": update.ts, "seq": update.seq})
    if update.seq is None and update.ts is None:
        return data, None
    digest = int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big") >> 1  # fits a bigint
    return data, (
        device_id,
        NO_SEQ if update.seq is None else update.seq,
        NO_TS if update.ts is None else float(update.ts),
        digest,
    )


def order_ts(update: StateUpdate, received: float) -> float:
    """The timestamp that orders updates of one key (see the module notes)."""
    if update.ts is None:
        return received
    return min(update.ts, received + MAX_FUTURE_SKEW)


def history_value(key: str, value: StateValue) -> tuple[bool, float | None]:
    """(goes to history, stored value) for one state key."""
    if key not in HISTORY_KEYS:
        return False, None
    if isinstance(value, bool):
        return True, 1.0 if value else 0.0
    if isinstance(value, float | int):
        return True, float(value)
    if value is None:
        return True, None
    return False, None


@dataclass(slots=True)
class PendingEvent:
    """An event-log row waiting for the batch flush; ``home`` None = the device's current home."""

    ts: float
    device_id: str
    home: str | None
    type: EventType
    data: str


def command_from_row(row: Sequence[Any]) -> CommandRecord:
    """Build a CommandRecord from (id, device_id, sub, values json, status, reason, created, updated)."""
    command_id, device_id, sub, values, status, reason, created_at, updated_at = row
    return CommandRecord(
        command_id=command_id,
        device_id=device_id,
        sub=sub,
        values=json.loads(values),
        status=CommandStatus(status),
        created_at=created_at,
        updated_at=updated_at,
        reason=reason,
    )


def dead_letter_from_row(row: Sequence[Any]) -> DeadLetter:
    """Build a DeadLetter from (id, ts, topic, reason, message, payload)."""
    return DeadLetter(id=row[0], ts=row[1], topic=row[2], reason=row[3], message=row[4], payload=bytes(row[5]))


def migrations(backend: str) -> list[tuple[int, str, str]]:
    """The backend's migrations as (version, name, sql), ascending; files are ``NNN_name.sql``."""
    folder = resources.files("thermo_bridge_server").joinpath("migrations", backend)
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


def resolve_batch(batch: Sequence[tuple[Any, Any, asyncio.Future[Any]]], results: Sequence[object]) -> None:
    """Settle each queued write's future with its result once its batch committed."""
    for (_, _, future), result in zip(batch, results, strict=True):
        if not future.done():
            future.set_result(result)


def fail_batch(batch: Sequence[tuple[Any, Any, asyncio.Future[Any]]], err: BaseException) -> None:
    """Fail every queued write's future of a batch that could not commit."""
    for _, _, future in batch:
        if not future.done():
            future.set_exception(err)
