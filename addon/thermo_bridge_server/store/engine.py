"""The batching engine both backends share; ``sqlite.py`` and ``postgres.py`` add their writer.

Writes are on the MQTT hot path, so a write method only queues an operation and returns a
future; the backend's single writer takes what is queued, applies it in one transaction
and resolves the futures once it committed. The operations are written once, here:

* hot ones (state reports, device events, dead letters) only collect rows in ``BatchRows``,
  which the writer flushes with set-based statements of its dialect;
* the others (configs, availability, commands, homes, grants) are generators that yield
  the SQL they need (``Sql``) or ``FLUSH`` (write what was collected first, so the event log
  keeps the order operations were queued in); each writer drives them with its own
  connection, synchronously (SQLite's thread) or with ``await`` (asyncpg).

SQL here uses ``?`` placeholders; PostgreSQL numbers them. Reads are shared the same way.

Rules both dialects keep:

* Latest state is one row per (device, key), upserted only when the incoming update is not
  older than the stored one (``order_ts``, then ``seq``). Partial updates therefore merge
  without a read-modify-write, two replicas writing the same device cannot lose each
  other's keys, and a late redelivery of an older report cannot overwrite a newer value.
* ``order_ts`` is the device's timestamp when it sends one (clamped to at most
  ``MAX_FUTURE_SKEW`` seconds ahead of the server clock, so a device whose clock jumps
  back after running ahead is not frozen), else the server receive time.
* The idempotency key of a state update (``rows.dedupe_key``) is checked for the whole
  batch in one statement before the operations run; updates with neither seq nor ts are
  never deduplicated (nothing tells a redelivery from a new report).
* History gets one row per numeric value (measurements, numeric thermostat keys; booleans
  as 0/1; a key reported as ``None`` as a NULL row meaning "unknown from here"). Its
  timestamp is the device's ``ts`` when given, else the receive time.
* Aggregated history buckets are aligned to multiples of the resolution since the Unix epoch
  (``floor(ts / resolution) * resolution``), so the same query always gives the same buckets
  and hourly buckets start on the hour; the first bucket may start before ``start`` but only
  holds values in [start, end). Buckets count only known values (NULL rows are skipped);
  ``limit`` caps the rows returned (raw points, or buckets).
"""

# ruff: noqa: S608 - SQL here is assembled only from constants and placeholders

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, TypedDict, override

from thermo_bridge_protocol import DeviceConfig, DeviceEvent, StateUpdate

from . import events
from .base import (
    DEAD_LETTER_PAYLOAD_BYTES,
    DEFAULT_HOME,
    CommandRecord,
    CommandStatus,
    CommitListener,
    DeadLetter,
    DeviceRecord,
    EventRecord,
    EventType,
    HistoryPoint,
    Snapshot,
    StateRecord,
    Store,
)
from .rows import (
    HISTORY_KEYS,
    MAX_DEAD_LETTER_MESSAGE,
    MAX_FUTURE_SKEW,
    NO_SEQ,
    DedupeKey,
    StoreClosedError,
    command_from_row,
    dead_letter_from_row,
    dedupe_key,
    device_from_row,
    event_from_row,
    grants_from_rows,
    scalar_json,
    state_from_rows,
)

_LOGGER = logging.getLogger(__name__)


class Sql(NamedTuple):
    """One statement an operation needs: its first row (or None) is sent back with ``one``, else its row count."""

    text: str
    params: tuple[Any, ...] = ()
    one: bool = False


FLUSH = Sql("")
"""Yielded by an operation: write the rows collected so far before going on."""

Step = Generator[Sql, Any, Any]
"""An in-place operation: yields statements, receives each one's result, returns its own."""


# --------------------------------------------------------------------------- the batch's rows


class BatchRows:
    """The rows one batch collects for its dialect's set-based flush."""

    __slots__ = ("arrival", "committed", "dead", "default_home", "events", "history", "new_keys", "states")

    def __init__(self, default_home: str) -> None:
        self.default_home = default_home
        self.history: list[tuple[str, float, str, float | None]] = []
        # (device_id, key) -> (order, row): only the newest update of a key in the batch is written
        self.states: dict[tuple[str, str], tuple[tuple[float, int, int], tuple[Any, ...]]] = {}
        # (ts, device_id, home or None = the device's home when flushed, type, data)
        self.events: list[tuple[float, str, str | None, str, str]] = []
        self.dead: list[tuple[float, str, str, str, bytes]] = []
        self.new_keys: set[DedupeKey] = set()
        self.arrival = 0
        # Event-log rows written in this transaction (offset, ts, device_id, home, type, data)
        self.committed: list[tuple[int, float, str, str, str, str]] = []

    def flushed(self) -> None:
        """The collected rows are written (``committed`` keeps the event rows for the doorbell)."""
        self.history.clear()
        self.states.clear()
        self.events.clear()
        self.dead.clear()

    def reset(self) -> None:
        """Drop everything collected and written (after a rollback)."""
        self.flushed()
        self.committed.clear()

    def number_events(self, offsets: Sequence[int], homes: Mapping[str, str]) -> list[tuple[Any, ...]]:
        """The collected events as log rows with their ``offsets`` (ascending) and resolved homes.

        An event without a home gets its device's current home (``homes``), else the default
        home. The rows are also kept in ``committed`` for the commit listeners.
        """
        default = self.default_home
        rows = [
            (offset, ts, device_id, (homes.get(device_id, default) if home is None else home), type_, data)
            for offset, (ts, device_id, home, type_, data) in zip(offsets, self.events, strict=True)
        ]
        self.events.clear()
        self.committed.extend(rows)
        return rows

    def homeless_devices(self) -> list[str]:
        """Devices whose collected events need their current home looked up."""
        return sorted({event[1] for event in self.events if event[2] is None})

    def event(self, ts: float, device_id: str, home: str | None, type_: EventType, data: str) -> None:
        """Collect an event-log row; ``home`` None means the device's home when it is flushed."""
        self.events.append((ts, device_id, home, type_, data))

    # The hot path: one call per MQTT message, holding the GIL, so written out by hand.
    def state(self, device_id: str, update: StateUpdate, ts: float, key: DedupeKey | None, data: str) -> bool:
        """Collect a state report's rows; False for a duplicate (its key is not new)."""
        if key is not None:
            if key not in self.new_keys:
                return False
            self.new_keys.discard(key)  # a second copy later in this batch is a duplicate
        device_ts = update.ts
        seq = NO_SEQ if update.seq is None else update.seq
        if device_ts is None:
            ots = hts = ts
        else:
            hts = device_ts
            ots = min(device_ts, ts + MAX_FUTURE_SKEW)
        self.arrival += 1
        order = (ots, seq, self.arrival)
        states = self.states
        history = self.history
        for name, value in update.values.items():
            current = states.get((device_id, name))
            if current is None or order >= current[0]:
                states[device_id, name] = (order, (device_id, name, scalar_json(value), ots, seq, device_ts, ts))
            if name in HISTORY_KEYS:
                if value is None or type(value) is float:
                    history.append((device_id, hts, name, value))
                elif isinstance(value, bool):
                    history.append((device_id, hts, name, 1.0 if value else 0.0))
                elif isinstance(value, int):
                    history.append((device_id, hts, name, float(value)))
        self.events.append((ts, device_id, None, EventType.STATE, data))
        return True

    def device_event(self, device_id: str, event: DeviceEvent, ts: float) -> None:
        """Collect a device event's log row."""
        self.event(ts, device_id, None, EventType.DEVICE_EVENT, events.device_event(event))

    def dead_letter(self, topic: str, reason: str, message: str, payload: bytes, ts: float) -> None:
        """Collect a rejected message (truncated to the kept sizes)."""
        self.dead.append(
            (ts, topic, reason, message[:MAX_DEAD_LETTER_MESSAGE], bytes(payload[:DEAD_LETTER_PAYLOAD_BYTES]))
        )

    def state_rows(self) -> list[tuple[Any, ...]]:
        """The latest-state rows, sorted by (device, key) so concurrent writers lock them in one order."""
        rows = [row for _, (_, row) in sorted(self.states.items())]
        self.states.clear()
        return rows


HOT_OPERATIONS = frozenset({BatchRows.state, BatchRows.device_event, BatchRows.dead_letter})
"""Operations that only collect rows (the rest are ``Step`` generators)."""


class Running:
    """An in-place operation being driven by a writer: it waits on ``sql`` until that is None.

    The writer executes ``sql`` on its connection (or flushes, for ``FLUSH``) and passes the
    outcome to :meth:`send`; ``result`` is the operation's own result once it finished.
    """

    __slots__ = ("result", "sql", "step")

    def __init__(self, step: Step) -> None:
        self.step = step
        self.result: Any = None
        self.sql: Sql | None = None
        self._advance(None)

    def send(self, outcome: object) -> None:
        """The outcome of ``sql``: its first row or row count (None for ``FLUSH``)."""
        self._advance(outcome)

    def _advance(self, outcome: object) -> None:
        try:
            self.sql = self.step.send(outcome)
        except StopIteration as done:
            self.sql = None
            self.result = done.value


def batch_keys(batch: Sequence[tuple[Callable[..., Any], tuple[Any, ...], Any]]) -> list[tuple[Any, ...]]:
    """The batch's idempotency keys with their receive time, once each, sorted (lock order)."""
    keys: dict[DedupeKey, float] = {}
    for fn, args, _ in batch:
        if fn is BatchRows.state and args[3] is not None:
            keys.setdefault(args[3], args[2])
    return [(*key, received) for key, received in sorted(keys.items())]


# --------------------------------------------------------------------------- in-place operations

_COMMAND_COLUMNS = "command_id, device_id, sub, vals, status, reason, created_at, updated_at, idempotency_key"


def config_op(rows: BatchRows, config: DeviceConfig, ts: float) -> Step:
    """Upsert a device's config; log DEVICE_ADDED for a new device, DEVICE_UPDATED when it changed."""
    yield FLUSH
    text = events.device(config)
    known = yield Sql("SELECT 1 FROM devices WHERE device_id = ?", (config.device_id,), one=True)
    changed = yield Sql(
        "INSERT INTO devices (device_id, home, kind, config, first_seen, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind, config = excluded.config,"
        " updated_at = excluded.updated_at WHERE devices.config IS DISTINCT FROM excluded.config RETURNING 1",
        (config.device_id, rows.default_home, str(config.kind), text, ts, ts),
        one=True,
    )
    if changed is not None:
        kind = EventType.DEVICE_UPDATED if known is not None else EventType.DEVICE_ADDED
        rows.event(ts, config.device_id, None, kind, text)


def remove_op(rows: BatchRows, device_id: str, ts: float) -> Step:
    """Forget a device's config, state and availability (history stays); log DEVICE_REMOVED."""
    yield FLUSH
    removed = yield Sql("DELETE FROM devices WHERE device_id = ? RETURNING home", (device_id,), one=True)
    yield Sql("DELETE FROM state_values WHERE device_id = ?", (device_id,))
    yield Sql("DELETE FROM availability WHERE device_id = ?", (device_id,))
    if removed is not None:
        rows.event(ts, device_id, removed[0], EventType.DEVICE_REMOVED, events.removed())


def availability_op(rows: BatchRows, device_id: str, online: bool, ts: float) -> Step:
    """Record availability; log AVAILABILITY only when it changed."""
    yield FLUSH
    changed = yield Sql(
        "INSERT INTO availability (device_id, online, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (device_id) DO UPDATE SET online = excluded.online, updated_at = excluded.updated_at"
        " WHERE availability.online IS DISTINCT FROM excluded.online RETURNING 1",
        (device_id, online, ts),
        one=True,
    )
    if changed is not None:
        rows.event(ts, device_id, None, EventType.AVAILABILITY, events.availability(online))


def create_command_op(rows: BatchRows, record: CommandRecord) -> Generator[Sql, Any, tuple[CommandRecord, bool]]:
    """Store a new command and log COMMAND, unless its sender already used its idempotency key."""
    yield FLUSH
    created = yield Sql(
        f"INSERT INTO commands ({_COMMAND_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (sub, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING 1",
        (
            record.command_id,
            record.device_id,
            record.sub,
            events.canonical_json(record.values),
            str(record.status),
            record.reason,
            record.created_at,
            record.updated_at,
            record.idempotency_key,
        ),
        one=True,
    )
    if created is None:
        earlier = yield Sql(
            f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE sub = ? AND idempotency_key = ?",
            (record.sub, record.idempotency_key),
            one=True,
        )
        return command_from_row(earlier), False
    rows.event(record.created_at, record.device_id, None, EventType.COMMAND, events.command(record))
    return record, True


def update_command_op(
    rows: BatchRows, command_id: str, status: CommandStatus, reason: str | None, ts: float
) -> Generator[Sql, Any, CommandRecord | None]:
    """Move a pending command to its final status; None if unknown or no longer pending."""
    yield FLUSH
    row = yield Sql(
        "UPDATE commands SET status = ?, reason = ?, updated_at = ? WHERE command_id = ? AND status = 'pending'"
        f" RETURNING {_COMMAND_COLUMNS}",
        (str(status), reason, ts, command_id),
        one=True,
    )
    if row is None:
        return None
    record = command_from_row(row)
    rows.event(ts, record.device_id, None, EventType.COMMAND, events.command(record))
    return record


def set_home_op(rows: BatchRows, device_id: str, home: str, ts: float) -> Generator[Sql, Any, bool]:
    """Assign a device to a home (False if unknown); a move is logged for the old and the new home."""
    yield FLUSH
    row = yield Sql("SELECT home, config FROM devices WHERE device_id = ?", (device_id,), one=True)
    if row is None:
        return False
    old_home, config = row
    if old_home != home:
        yield Sql("UPDATE devices SET home = ? WHERE device_id = ?", (home, device_id))
        rows.event(ts, device_id, old_home, EventType.DEVICE_REMOVED, events.removed())
        rows.event(ts, device_id, home, EventType.DEVICE_UPDATED, config)
    return True


def set_grants_op(rows: BatchRows, sub: str, homes: tuple[str, ...], lock: str | None, ts: float) -> Step:
    """Replace a user's grants and log GRANTS; ``lock`` serialises two replacements of one user."""
    yield FLUSH
    if lock is not None:
        yield Sql(lock, (sub,))
    yield Sql("DELETE FROM grants WHERE sub = ?", (sub,))
    if homes:
        values = ", ".join(["(?, ?)"] * len(homes))
        yield Sql(
            f"INSERT INTO grants (sub, home) VALUES {values} ON CONFLICT DO NOTHING",
            tuple(value for home in homes for value in (sub, home)),
        )
    rows.event(ts, "", "", EventType.GRANTS, events.grants(sub))


def add_ticket_op(rows: BatchRows, ticket_hash: str, principal: str, expires_at: float) -> Step:
    """Keep an SSE ticket until it is used or expires."""
    yield Sql(
        "INSERT INTO sse_tickets (ticket, principal, expires_at) VALUES (?, ?, ?)", (ticket_hash, principal, expires_at)
    )


def take_ticket_op(rows: BatchRows, ticket_hash: str, now: float) -> Generator[Sql, Any, str | None]:
    """Use a ticket once (and forget every expired one)."""
    row = yield Sql(
        "DELETE FROM sse_tickets WHERE ticket = ? AND expires_at > ? RETURNING principal", (ticket_hash, now), one=True
    )
    yield Sql("DELETE FROM sse_tickets WHERE expires_at <= ?", (now,))
    return None if row is None else str(row[0])


# --------------------------------------------------------------------------- futures and stats


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


class WriterStats:
    """The writer's figures for /metrics."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {
            "batches_total": 0,
            "ops_total": 0,
            "failed_batches_total": 0,
            "retried_batches_total": 0,
            "last_batch_size": 0,
            "last_commit_seconds": 0.0,
            "max_commit_seconds": 0.0,
            "write_failing": 0,
        }

    def committed(self, size: int, seconds: float) -> None:
        """A batch of ``size`` operations committed after ``seconds``."""
        values = self.values
        values["batches_total"] += 1
        values["ops_total"] += size
        values["last_batch_size"] = size
        values["last_commit_seconds"] = seconds
        values["max_commit_seconds"] = max(values["max_commit_seconds"], seconds)

    def failed(self) -> None:
        """A batch attempt failed (it is retried one by one, or its writes fail)."""
        self.values["failed_batches_total"] += 1

    def retried(self) -> None:
        """A batch hit a transient error and is tried again."""
        self.values["retried_batches_total"] += 1


# --------------------------------------------------------------------------- the store


RETRY_MAX_DELAY = 2.0
"""Longest pause between two attempts at a batch the database cannot take right now."""
OUTAGE_LOG_INTERVAL = 60.0


def retry_delay(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1`` of a batch: 40 ms doubling, at most RETRY_MAX_DELAY."""
    return float(min(RETRY_MAX_DELAY, 0.02 * 2.0 ** min(attempt, 16)))


class StoreOptions(TypedDict, total=False):
    """What every backend takes besides its location."""

    retention_days: float
    dead_letter_limit: int
    default_home: str


class BatchingStore(Store):
    """The write methods, reads and stats; a dialect provides the writer, SQL access and its few differences."""

    GRANTS_LOCK: ClassVar[str | None] = None
    """A statement taking a lock per ``sub`` before grants are replaced, where writers can race."""

    BUCKET: ClassVar[str]
    """The dialect's ``floor(ts / ?)`` as an integer."""

    def __init__(
        self, *, retention_days: float = 30, dead_letter_limit: int = 1000, default_home: str = DEFAULT_HOME
    ) -> None:
        self.retention_days = retention_days
        self.dead_letter_limit = dead_letter_limit
        self.default_home = default_home
        self._stats = WriterStats()
        self._listeners: list[CommitListener] = []
        self._epoch: str | None = None
        self._write_error: str | None = None
        self._failing_since = 0.0
        self._outage_logged = 0.0

    @property
    @override
    def write_error(self) -> str | None:
        return self._write_error

    def _write_failing(self, err: BaseException, waiting: int) -> None:
        """A batch failed for a reason that passes (database down, disk full); it is tried again.

        Logged when the outage starts and once a minute while it lasts (from the writer's
        thread or task; only plain attributes change here).
        """
        now = time.monotonic()
        self._write_error = f"{type(err).__name__}: {err}".strip()
        self._stats.values["write_failing"] = 1
        if not self._failing_since:
            self._failing_since = self._outage_logged = now
            _LOGGER.error(
                "Store writes are failing (%s); retrying until they succeed. The MQTT messages of the %d"
                " writes waiting are not acknowledged, so the broker keeps them",
                self._write_error,
                waiting,
            )
        elif now - self._outage_logged >= OUTAGE_LOG_INTERVAL:
            self._outage_logged = now
            _LOGGER.error(
                "Store writes still failing after %.0f s (%s); %d writes waiting",
                now - self._failing_since,
                self._write_error,
                waiting,
            )

    def _write_ok(self) -> None:
        """A batch committed: end an outage if there was one."""
        if self._failing_since:
            _LOGGER.warning("Store writes succeed again after %.1f s", time.monotonic() - self._failing_since)
            self._failing_since = 0.0
            self._write_error = None
            self._stats.values["write_failing"] = 0

    @property
    @override
    def epoch(self) -> str:
        if self._epoch is None:
            raise StoreClosedError("the store is not open")
        return self._epoch

    async def _read_epoch(self) -> None:
        row = await self._fetchone("SELECT value FROM meta WHERE key = 'epoch'", ())
        if row is None:
            raise RuntimeError("the database has no epoch (meta table)")
        self._epoch = str(row[0])

    # ---------------------------------------------------------------- what a dialect provides
    @abstractmethod
    def _submit(self, fn: Callable[..., Any], *args: object) -> asyncio.Future[Any]:
        """Queue an operation for the writer; StoreClosedError when not open."""

    @abstractmethod
    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        """Run a read (``?`` placeholders) and return its rows."""

    @abstractmethod
    def _any(self, column: str, values: list[str], params: list[Any]) -> str:
        """A condition ``column`` is one of ``values`` (appending its parameters to ``params``)."""

    @abstractmethod
    def _queue_depth(self) -> int:
        """Operations waiting for the writer."""

    def _and_any(self, column: str, values: Collection[str] | None, params: list[Any]) -> str:
        """`` AND column in values`` (nothing matches an empty collection), or "" for None (no filter)."""
        return "" if values is None else " AND " + self._any(column, list(values), params)

    @abstractmethod
    async def _fetch_consistent(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Sequence[Any]]]:
        """Run reads in one read-only transaction (one consistent view) and return each one's rows."""

    async def _fetchone(self, sql: str, params: Sequence[Any]) -> Sequence[Any] | None:
        rows = await self._fetch(sql, params)
        return rows[0] if rows else None

    # ---------------------------------------------------------------- writes
    @override
    def apply_config(self, config: DeviceConfig, ts: float) -> asyncio.Future[None]:
        return self._submit(config_op, config, ts)

    @override
    def remove_device(self, device_id: str, ts: float) -> asyncio.Future[None]:
        return self._submit(remove_op, device_id, ts)

    @override
    def apply_state(self, device_id: str, update: StateUpdate, ts: float) -> asyncio.Future[bool]:
        data = events.state(update)
        return self._submit(BatchRows.state, device_id, update, ts, dedupe_key(device_id, update, data), data)

    @override
    def apply_availability(self, device_id: str, online: bool, ts: float) -> asyncio.Future[None]:
        return self._submit(availability_op, device_id, online, ts)

    @override
    def record_device_event(self, device_id: str, event: DeviceEvent, ts: float) -> asyncio.Future[None]:
        return self._submit(BatchRows.device_event, device_id, event, ts)

    @override
    def add_dead_letter(self, topic: str, reason: str, message: str, payload: bytes, ts: float) -> asyncio.Future[None]:
        return self._submit(BatchRows.dead_letter, topic, reason, message, payload, ts)

    @override
    def create_command(self, record: CommandRecord) -> asyncio.Future[tuple[CommandRecord, bool]]:
        return self._submit(create_command_op, record)

    @override
    def update_command(
        self, command_id: str, status: CommandStatus, reason: str | None, ts: float
    ) -> asyncio.Future[CommandRecord | None]:
        return self._submit(update_command_op, command_id, status, reason, ts)

    @override
    async def set_device_home(self, device_id: str, home: str) -> bool:
        result: bool = await self._submit(set_home_op, device_id, home, time.time())
        return result

    @override
    async def set_grants(self, sub: str, homes: Collection[str]) -> None:
        await self._submit(set_grants_op, sub, tuple(sorted(set(homes))), self.GRANTS_LOCK, time.time())

    @override
    def add_ticket(self, ticket_hash: str, principal: str, expires_at: float) -> asyncio.Future[None]:
        return self._submit(add_ticket_op, ticket_hash, principal, expires_at)

    @override
    def take_ticket(self, ticket_hash: str, now: float) -> asyncio.Future[str | None]:
        return self._submit(take_ticket_op, ticket_hash, now)

    # ---------------------------------------------------------------- the doorbell
    @override
    def on_commit(self, listener: CommitListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _ring(self, offset: int, rows: Sequence[Sequence[Any]]) -> None:
        """Tell the listeners (on the event loop) what a commit appended to the log."""
        if not self._listeners:
            return
        records = [event_from_row(row) for row in rows]
        for listener in list(self._listeners):
            try:
                listener(offset, records)
            except Exception:
                _LOGGER.exception("Event-log commit listener failed")

    # ---------------------------------------------------------------- reads
    _DEVICES = (
        "SELECT d.device_id, d.home, d.config, a.online, d.first_seen, d.updated_at"
        " FROM devices d LEFT JOIN availability a USING (device_id)"
    )

    @override
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
        params: list[Any] = []
        where = self._and_any("d.home", homes, params)
        conditions = (("d.kind = ?", kind), ("a.online = ?", online), ("d.home = ?", home), ("d.device_id > ?", after))
        for condition, value in conditions:
            if value is not None:
                where += f" AND {condition}"
                params.append(value)
        sql = f"{self._DEVICES} WHERE TRUE{where} ORDER BY d.device_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [device_from_row(row) for row in await self._fetch(sql, params)]

    @override
    async def get_device(self, device_id: str) -> DeviceRecord | None:
        row = await self._fetchone(self._DEVICES + " WHERE d.device_id = ?", (device_id,))
        return None if row is None else device_from_row(row)

    @override
    async def get_state(self, device_id: str) -> StateRecord | None:
        rows = await self._fetch(
            "SELECT key, value, order_ts, seq, device_ts, received_at FROM state_values WHERE device_id = ?",
            (device_id,),
        )
        return state_from_rows(device_id, rows)

    @override
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
        if resolution is not None and not resolution > 0:
            raise ValueError("resolution must be a positive number of seconds")
        params: list[Any] = [device_id, float(start), float(end)]
        window = f"FROM history WHERE device_id = ? AND ts >= ? AND ts < ?{self._and_any('key', keys, params)}"
        params.append(limit)
        if resolution is None:
            rows = await self._fetch(f"SELECT ts, key, value {window} ORDER BY ts, key LIMIT ?", params)
            return [HistoryPoint(ts, key, value) for ts, key, value in rows]
        rows = await self._fetch(
            f"SELECT {self.BUCKET} AS bucket, key, avg(value), min(value), max(value), count(value)"
            f" {window} AND value IS NOT NULL GROUP BY bucket, key ORDER BY bucket, key LIMIT ?",
            [float(resolution), *params],
        )
        return [
            HistoryPoint(float(bucket) * resolution, key, mean, minimum, maximum, count)
            for bucket, key, mean, minimum, maximum, count in rows
        ]

    @override
    async def get_command(self, command_id: str) -> CommandRecord | None:
        row = await self._fetchone(f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE command_id = ?", (command_id,))
        return None if row is None else command_from_row(row)

    @override
    async def pending_commands(self, older_than: float) -> list[CommandRecord]:
        rows = await self._fetch(
            f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE status = 'pending' AND created_at < ? ORDER BY created_at",
            (older_than,),
        )
        return [command_from_row(row) for row in rows]

    @override
    async def events_since(
        self, offset: int, *, limit: int = 1000, homes: Collection[str] | None = None
    ) -> list[EventRecord]:
        params: list[Any] = [offset]
        home_filter = self._and_any("home", homes, params)
        params.append(limit)
        rows = await self._fetch(
            f"SELECT id, ts, device_id, home, type, data FROM events WHERE id > ?{home_filter} ORDER BY id LIMIT ?",
            params,
        )
        return [event_from_row(row) for row in rows]

    @override
    async def latest_offset(self) -> int:
        row = await self._fetchone("SELECT COALESCE(max(id), 0) FROM events", ())
        return int(row[0]) if row is not None else 0

    @override
    async def earliest_offset(self) -> int:
        row = await self._fetchone("SELECT min(id) FROM events", ())
        return 1 if row is None or row[0] is None else int(row[0])

    @override
    async def snapshot(
        self,
        homes: Collection[str] | None,
        *,
        devices: Collection[str] | None = None,
        kinds: Collection[str] | None = None,
    ) -> Snapshot:
        params: list[Any] = []
        where = self._and_any("d.home", homes, params) + self._and_any("d.device_id", devices, params)
        where += self._and_any("d.kind", kinds, params)
        offset_rows, device_rows, state_rows = await self._fetch_consistent(
            [
                ("SELECT COALESCE(max(id), 0) FROM events", ()),
                (f"{self._DEVICES} WHERE TRUE{where} ORDER BY d.device_id", params),
                (
                    "SELECT s.device_id, s.key, s.value, s.order_ts, s.seq, s.device_ts, s.received_at"
                    f" FROM state_values s JOIN devices d USING (device_id) WHERE TRUE{where}",
                    params,
                ),
            ]
        )
        states: dict[str, list[Sequence[Any]]] = {}
        for row in state_rows:
            states.setdefault(row[0], []).append(row[1:])
        return Snapshot(
            offset=int(offset_rows[0][0]),
            devices=[
                (device, state_from_rows(device.device_id, states.get(device.device_id, [])))
                for device in map(device_from_row, device_rows)
            ],
        )

    @override
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = await self._fetch(
            "SELECT id, ts, topic, reason, message, payload FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [dead_letter_from_row(row) for row in rows]

    @override
    async def get_grants(self, sub: str) -> frozenset[str]:
        rows = await self._fetch("SELECT home FROM grants WHERE sub = ?", (sub,))
        return frozenset(row[0] for row in rows)

    @override
    async def all_grants(self) -> Mapping[str, frozenset[str]]:
        return grants_from_rows(await self._fetch("SELECT sub, home FROM grants ORDER BY sub", ()))

    @override
    async def stats(self) -> Mapping[str, float]:
        return {**self._stats.values, "queue_depth": float(self._queue_depth())}
