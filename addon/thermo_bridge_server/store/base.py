"""The store interface both backends (SQLite, PostgreSQL) implement and one test suite checks.

Writes are on the MQTT hot path, so they are not coroutines: each write method queues the
operation for the backend's single writer, which commits queued operations in batches, and
returns a future resolved once the batch holding it is durable. The MQTT ingest acknowledges
a QoS 1 message only when that future resolves, so a crash never loses an acknowledged
message; redelivered duplicates are recognised by ``apply_state``'s idempotency key.
Reads are ordinary coroutines.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from thermo_bridge_protocol import DeviceConfig, DeviceEvent, StateUpdate, StateValue

DEFAULT_HOME = "default"


class CommandStatus(StrEnum):
    """A command's lifecycle: pending until the device acks, fails, or the timeout passes."""

    PENDING = "pending"
    ACKED = "acked"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


class EventType(StrEnum):
    """What an entry of the append-only event log records; the values are the API's event types.

    The data of each type is built in ``events.py`` (its one definition).
    """

    DEVICE_ADDED = "device_added"  # discovered
    DEVICE_UPDATED = "device_updated"  # its config changed, or an admin moved it to this home
    DEVICE_REMOVED = "device_removed"  # retained config cleared, or an admin moved it away from this home
    STATE = "state"
    AVAILABILITY = "availability"
    DEVICE_EVENT = "device_event"
    COMMAND = "command"
    GRANTS = "grants"  # a user's server-side grants changed; never sent to clients (no device)


INTERNAL_EVENTS = frozenset({EventType.GRANTS})
"""Event types that tell servers something and are never delivered to clients."""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device as stored: its config, its home and what we know of its link."""

    device_id: str
    home: str
    config: DeviceConfig
    online: bool | None
    first_seen: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The latest value of every state key a device reported (merged partial updates)."""

    device_id: str
    values: dict[str, StateValue]
    updated_at: float  # server receive time of the newest update
    device_ts: float | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One stored value (raw) or one bucket (aggregated: value is the mean)."""

    ts: float  # raw: receive/device time; aggregated: bucket start
    key: str  # measurement or numeric thermostat state key
    value: float | None
    minimum: float | None = None  # aggregated only
    maximum: float | None = None  # aggregated only
    count: int = 1


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A command sent by a user, and where it is in its lifecycle."""

    command_id: str
    device_id: str
    sub: str  # the Auth0 subject that sent it
    values: dict[str, float | str]
    status: CommandStatus
    created_at: float
    updated_at: float
    reason: str | None = None
    idempotency_key: str | None = None  # the client's key: sending it again returns this command

    def as_dict(self) -> dict[str, Any]:
        """JSON form used by the API and the event log."""
        return {
            "id": self.command_id,
            "device_id": self.device_id,
            "values": self.values,
            "status": str(self.status),
            "reason": self.reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An entry of the append-only event log; ``offset`` increases strictly with commit order."""

    offset: int
    ts: float
    device_id: str
    home: str
    type: EventType
    data: dict[str, Any] = field(default_factory=dict)
    data_json: str = "{}"  # ``data`` as stored: passed on to clients without encoding it again


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Devices with their latest state, exactly as of event-log ``offset`` (one read transaction)."""

    offset: int
    devices: list[tuple[DeviceRecord, StateRecord | None]]


CommitListener = Callable[[int, Sequence[EventRecord]], None]
"""Called on the event loop after commits that appended events: (highest committed offset,
this process's events of that commit in offset order, or none when another process
committed and only the offset is known)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected MQTT message, kept (bounded) for inspection."""

    id: int
    ts: float
    topic: str
    reason: str
    message: str
    payload: bytes  # truncated to DEAD_LETTER_PAYLOAD_BYTES


DEAD_LETTER_PAYLOAD_BYTES = 4096


class Store(ABC):
    """Devices, latest state, history, commands, event log, dead letters, homes and grants."""

    # ---------------------------------------------------------------- lifecycle
    @abstractmethod
    async def open(self) -> None:
        """Connect, apply pending schema migrations (versioned), start the writer."""

    @abstractmethod
    async def close(self) -> None:
        """Commit everything queued, stop the writer, disconnect."""

    # ---------------------------------------------------------------- writes (queued, batched)
    @abstractmethod
    def apply_config(self, config: DeviceConfig, ts: float) -> asyncio.Future[None]:
        """Upsert a device's config (a new device gets the default home); log a DEVICE event."""

    @abstractmethod
    def remove_device(self, device_id: str, ts: float) -> asyncio.Future[None]:
        """Forget a device's config, state and its home assignment; keep history; log REMOVED."""

    @abstractmethod
    def apply_state(self, device_id: str, update: StateUpdate, ts: float) -> asyncio.Future[bool]:
        """Merge a partial update into the latest state, append numeric values to history, log STATE.

        Idempotent: when the update carries ``seq`` and/or ``ts``, (device_id, seq, ts, payload
        digest) is its key and a second update with the same key changes nothing and resolves to
        False. The digest keeps two different reports that share (seq, ts), e.g. after a device's
        counter reset on reboot; without seq and ts there is no dedupe (``rows.dedupe_key``).
        """

    @abstractmethod
    def apply_availability(self, device_id: str, online: bool, ts: float) -> asyncio.Future[None]:
        """Record the device's availability; log AVAILABILITY when it changed."""

    @abstractmethod
    def record_device_event(self, device_id: str, event: DeviceEvent, ts: float) -> asyncio.Future[None]:
        """Append a device event to the event log."""

    @abstractmethod
    def add_dead_letter(self, topic: str, reason: str, message: str, payload: bytes, ts: float) -> asyncio.Future[None]:
        """Keep a rejected message; the table keeps only the newest ``dead_letter_limit`` rows."""

    @abstractmethod
    def create_command(self, record: CommandRecord) -> asyncio.Future[tuple[CommandRecord, bool]]:
        """Store a new (pending) command and log COMMAND; resolves to (the stored command, created).

        With an ``idempotency_key`` that this ``sub`` already used, nothing is stored and it
        resolves to (that earlier command, False).
        """

    @abstractmethod
    def update_command(
        self, command_id: str, status: CommandStatus, reason: str | None, ts: float
    ) -> asyncio.Future[CommandRecord | None]:
        """Move a pending command to its final status; None if unknown or no longer pending. Log COMMAND."""

    # ---------------------------------------------------------------- reads
    @abstractmethod
    async def list_devices(
        self,
        homes: Collection[str] | None = None,
        *,
        kind: str | None = None,
        online: bool | None = None,
        home: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[DeviceRecord]:
        """Devices (``homes`` None = all), optionally filtered; ordered by id.

        ``after`` and ``limit`` page through them: at most ``limit`` devices whose id sorts
        after ``after`` (a range scan of the primary key, however many devices there are).
        """

    @abstractmethod
    async def get_device(self, device_id: str) -> DeviceRecord | None:
        """One device, or None."""

    @abstractmethod
    async def get_state(self, device_id: str) -> StateRecord | None:
        """The latest merged state, or None when nothing was reported."""

    @abstractmethod
    async def history(
        self,
        device_id: str,
        start: float,
        end: float,
        *,
        keys: Collection[str] | None = None,
        resolution: float | None = None,
        limit: int = 10_000,
    ) -> list[HistoryPoint]:
        """Values in [start, end) ordered by (ts, key); with ``resolution`` seconds, one bucket per key."""

    @abstractmethod
    async def get_command(self, command_id: str) -> CommandRecord | None:
        """One command, or None."""

    @abstractmethod
    async def pending_commands(self, older_than: float) -> list[CommandRecord]:
        """Pending commands created before ``older_than`` (for the timeout sweep)."""

    @abstractmethod
    async def events_since(
        self, offset: int, *, limit: int = 1000, homes: Collection[str] | None = None
    ) -> list[EventRecord]:
        """Event-log entries with offset > ``offset``, ascending."""

    @abstractmethod
    async def latest_offset(self) -> int:
        """The newest event-log offset (0 when empty)."""

    @abstractmethod
    async def earliest_offset(self) -> int:
        """The oldest offset still in the log (retention purges older ones; 1 when empty).

        A reader at position N misses nothing when N >= earliest_offset() - 1.
        """

    @property
    @abstractmethod
    def epoch(self) -> str:
        """The event log's random id, created with the database (only while open)."""

    @abstractmethod
    async def snapshot(
        self,
        homes: Collection[str] | None,
        *,
        devices: Collection[str] | None = None,
        kinds: Collection[str] | None = None,
    ) -> Snapshot:
        """The matching devices with their latest state and the log offset they reflect, read at once."""

    @abstractmethod
    def on_commit(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener`` after commits that appended events (the doorbell); returns the way to stop."""

    @abstractmethod
    def add_ticket(self, ticket_hash: str, principal: str, expires_at: float) -> asyncio.Future[None]:
        """Keep a single-use ticket (its hash) for ``principal`` (JSON) until ``expires_at``."""

    @abstractmethod
    def take_ticket(self, ticket_hash: str, now: float) -> asyncio.Future[str | None]:
        """The ticket's principal if it exists and has not expired, removing it (single use)."""

    @abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Newest rejected messages first."""

    # ---------------------------------------------------------------- homes and grants (admin)
    @abstractmethod
    async def set_device_home(self, device_id: str, home: str) -> bool:
        """Assign a device to a home; False if the device is unknown.

        A move logs DEVICE_REMOVED under the old home and DEVICE_UPDATED under the new one, so
        the users of each home see the device leave or arrive.
        """

    @abstractmethod
    async def set_grants(self, sub: str, homes: Collection[str]) -> None:
        """Replace the homes a user (Auth0 ``sub``) is granted; log GRANTS (servers re-check open streams)."""

    @abstractmethod
    async def get_grants(self, sub: str) -> frozenset[str]:
        """The homes granted to a user server-side."""

    @abstractmethod
    async def all_grants(self) -> Mapping[str, frozenset[str]]:
        """Every user's grants (admin listing)."""

    # ---------------------------------------------------------------- maintenance
    @abstractmethod
    async def purge_before(self, ts: float) -> int:
        """Delete history and event-log entries older than ``ts`` (retention); return rows deleted.

        The newest event-log entry is always kept, so the log's position survives a purge.
        """

    @property
    def write_error(self) -> str | None:
        """Why writes fail right now (the writer retries them until they succeed), or None."""
        return None

    @abstractmethod
    async def stats(self) -> Mapping[str, float]:
        """Backend figures for /metrics (queue depth, last batch size, commit latency seconds…)."""

    @abstractmethod
    async def size_bytes(self) -> int:
        """Space the stored data takes (the database files, or this store's tables in PostgreSQL)."""
