"""The PostgreSQL store (larger installs, several server replicas on one database).

One writer task per process takes whatever is queued (up to ``BATCH_CAP`` operations) and
applies it in one transaction with a few set-based statements (``unnest`` arrays; binary
``COPY`` for the history and event rows, the bulk of a batch), then resolves the
operations' futures. Up to ``PIPELINE_DEPTH`` batches are in flight, each in its own
transaction: the next one's inserts that cannot change the outcome overlap the previous
commit's round trips, everything else waits for that commit (see ``_Slot``). Reads and
admin writes use the pool directly.

Safe with several replicas writing at once:

* Latest state is one row per (device, key), upserted with a ``WHERE`` that only lets a
  newer update (``order_ts``, ``seq``) replace an older one: no read-modify-write, so no
  lost update, whichever replica commits first. Rows are upserted sorted by key so two
  replicas lock them in the same order (no deadlock between state batches).
* Duplicates are caught by the ``state_dedupe`` primary key with ``ON CONFLICT DO
  NOTHING``: if two replicas get the same redelivered message, the second waits for the
  first's commit and then sees the conflict.
* Event-log offsets: a sequence alone is not enough. Transaction A may draw offset 10,
  transaction B offset 11, and B commit first; a reader resuming from 11 would then never
  see 10. So every transaction that appends events first takes a transaction-level
  advisory lock (``pg_advisory_xact_lock``), draws its offsets while holding it, and keeps
  it until commit; the next appender draws its offsets only after that commit is visible.
  Offsets therefore increase strictly in commit order across replicas. The lock is taken
  as late as possible in the batch (just before the events are inserted) so replicas
  overlap everything else.
* Deadlocks that remain possible between rarer operations (two replicas upserting the same
  configs in different orders) are detected by PostgreSQL; the batch is retried.
* Migrations run under a session advisory lock, so replicas starting together apply each
  migration once.

Advisory lock keys are (constant, hashtext(current_schema())) so databases shared by
several schemas (tests, tenants) do not serialise each other.
"""

# ruff: noqa: S608 - SQL here is assembled only from constants and "$n" placeholders

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from typing import Any, override

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed in asyncpg

from thermo_bridge_protocol import DeviceConfig, DeviceEvent, StateUpdate

from .base import (
    DEAD_LETTER_PAYLOAD_BYTES,
    DEFAULT_HOME,
    CommandRecord,
    CommandStatus,
    DeadLetter,
    DeviceRecord,
    EventRecord,
    EventType,
    HistoryPoint,
    StateRecord,
    Store,
)
from .common import (
    BATCH_CAP,
    NO_SEQ,
    PURGE_CHUNK,
    StoreClosedError,
    command_from_row,
    config_json,
    dead_letter_from_row,
    dumps,
    fail_batch,
    history_value,
    load_config,
    migrations,
    order_ts,
    resolve_batch,
    scalar_json,
    state_payload,
)

_LOGGER = logging.getLogger(__name__)

LOCK_MIGRATIONS = 0x74620001
LOCK_EVENTS = 0x74620002
MAX_DEAD_LETTER_MESSAGE = 1000
RETRIES = 5
PIPELINE_DEPTH = 2
"""Batches in flight at once (each in its own transaction; see ``_Slot``)."""

_HISTORY_COLUMNS = ("device_id", "ts", "key", "value")
_EVENT_COLUMNS = ("id", "ts", "device_id", "home", "type", "data")
_COMMAND_COLUMNS = "command_id, device_id, sub, vals::text, status, reason, created_at, updated_at"
_DEVICE_SELECT = (
    "SELECT d.device_id, d.home, d.config, a.online, d.first_seen, d.updated_at"
    " FROM devices d LEFT JOIN availability a USING (device_id)"
)

_TRANSIENT_ERRORS = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.PostgresConnectionError,  # includes ConnectionDoesNotExistError: the pool reconnects
    asyncpg.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.InternalClientError,  # protocol state after the server dropped the connection mid-way
    OSError,
    TimeoutError,
)
"""The batch may well succeed on a fresh connection: retried with backoff a few times, then it
fails (and the MQTT messages stay unacknowledged). If the connection died *during* COMMIT the
first attempt may have committed: the retry is then what a QoS 1 redelivery would be anyway
(state updates are deduplicated, configs and availability are change-detecting upserts; a
device event or dead letter may be logged twice)."""

_DATA_ERRORS = (asyncpg.PostgresError, ValueError, TypeError)
"""Errors the server raised for the data (constraint, bad value) or asyncpg raised encoding it:
the batch is retried one operation per transaction so only the culprit fails. Connection
errors fail the whole batch at once (retrying one by one against a dead server only stalls)."""

_DedupeKey = tuple[str, int, float, int]
_Op = tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...], asyncio.Future[Any]]


async def apply_migrations(conn: asyncpg.Connection[Any]) -> list[int]:
    """Apply pending migrations under a session advisory lock; return the versions applied."""
    schema_key = await conn.fetchval("SELECT hashtext(current_schema())")
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1, $2)", LOCK_MIGRATIONS, schema_key)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)"
        )
        done = {row[0] for row in await conn.fetch("SELECT version FROM schema_version")}
        for version, name, sql in migrations("postgres"):
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_version VALUES ($1, $2, $3)", version, name, time.time())
            _LOGGER.info("Applied PostgreSQL migration %03d_%s", version, name)
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_MIGRATIONS, schema_key)
    return applied


class _Batch:
    """One transaction's work: immediate SQL plus rows collected for the set-based flush."""

    def __init__(self, conn: asyncpg.Connection[Any], store: PostgresStore, new_keys: set[_DedupeKey]) -> None:
        self.conn = conn
        self.store = store
        self.new_keys = new_keys
        self.locked = False
        self.history: list[tuple[str, float, str, float | None]] = []
        # (device_id, key) -> (order, row): only the newest update of a key in the batch is kept
        self.states: dict[tuple[str, str], tuple[tuple[float, int, int], tuple[Any, ...]]] = {}
        self.events: list[tuple[float, str, str | None, str, str]] = []
        self.dead: list[tuple[float, str, str, str, bytes]] = []
        self.arrival = 0

    def event(self, ts: float, device_id: str, home: str | None, type_: EventType, data: str) -> None:
        self.events.append((ts, device_id, home, str(type_), data))

    async def flush_history(self) -> None:
        """Write the collected history rows (insert-only: no row another batch could lock)."""
        if self.history:
            # COPY: the largest row set of a batch (2 rows per report). Binary COPY encodes each
            # row directly; unnest() arrays cost asyncpg several ABC isinstance checks per element.
            await self.conn.copy_records_to_table("history", records=self.history, columns=_HISTORY_COLUMNS)
            self.history.clear()

    async def flush(self) -> None:
        """Write the collected rows; the events last, under the offset lock."""
        conn = self.conn
        await self.flush_history()
        if self.states:
            rows = [row for _, (_, row) in sorted(self.states.items())]
            self.states.clear()
            await conn.execute(
                "INSERT INTO state_values (device_id, key, value, order_ts, seq, device_ts, received_at)"
                " SELECT u.device_id, u.key, u.value::jsonb, u.order_ts, u.seq, u.device_ts, u.received_at"
                " FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::int8[], $6::float8[],"
                " $7::float8[]) AS u(device_id, key, value, order_ts, seq, device_ts, received_at)"
                " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, order_ts = excluded.order_ts,"
                " seq = excluded.seq, device_ts = excluded.device_ts, received_at = excluded.received_at"
                " WHERE (excluded.order_ts, excluded.seq) >= (state_values.order_ts, state_values.seq)",
                *zip(*rows, strict=True),
            )
        if self.dead:
            await conn.execute(
                "INSERT INTO dead_letters (ts, topic, reason, message, payload)"
                " SELECT * FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::bytea[])",
                *zip(*self.dead, strict=True),
            )
            self.dead.clear()
            await conn.execute(
                "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET $1)",
                self.store.dead_letter_limit,
            )
        if self.events:
            events = self.events
            self.events = []
            if not self.locked:
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_EVENTS, self.store.schema_key)
                self.locked = True
            # Offsets drawn under the lock, sorted so the log's order is the order operations were
            # queued; in the same round trip, the current home of the devices whose events carry
            # none (read under the lock, as the INSERT ... JOIN devices it replaces did).
            need_home = sorted({event[1] for event in events if event[2] is None})
            ids, known_ids, known_homes = await conn.fetchrow(
                "SELECT ARRAY(SELECT nextval($2::regclass) FROM generate_series(1, $1)),"
                " ARRAY(SELECT device_id FROM devices WHERE device_id = ANY($3::text[]) ORDER BY device_id),"
                " ARRAY(SELECT home FROM devices WHERE device_id = ANY($3::text[]) ORDER BY device_id)",
                len(events),
                self.store.events_sequence,
                need_home,
            )
            homes = dict(zip(known_ids, known_homes, strict=True))
            default_home = self.store.default_home
            await conn.copy_records_to_table(
                "events",
                records=[
                    (offset, ts, device_id, homes.get(device_id, default_home) if home is None else home, type_, data)
                    for offset, (ts, device_id, home, type_, data) in zip(sorted(ids), events, strict=True)
                ],
                columns=_EVENT_COLUMNS,
            )

    # ------------------------------------------------------------ hot path (collected)
    async def state(self, device_id: str, update: StateUpdate, ts: float, key: _DedupeKey | None, data: str) -> bool:
        if key is not None:
            if key not in self.new_keys:
                return False
            self.new_keys.discard(key)  # a second copy later in this batch is a duplicate
        ots = order_ts(update, ts)
        seq = NO_SEQ if update.seq is None else update.seq
        hts = ts if update.ts is None else update.ts
        self.arrival += 1
        order = (ots, seq, self.arrival)
        states = self.states
        for name, value in update.values.items():
            current = states.get((device_id, name))
            if current is None or order >= current[0]:
                states[device_id, name] = (order, (device_id, name, scalar_json(value), ots, seq, update.ts, ts))
            keep, number = history_value(name, value)
            if keep:
                self.history.append((device_id, hts, name, number))
        self.event(ts, device_id, None, EventType.STATE, data)
        return True

    async def device_event(self, device_id: str, event: DeviceEvent, ts: float) -> None:
        data = {"event": event.event_type, "data": event.data, "ts": event.ts}
        self.event(ts, device_id, None, EventType.EVENT, dumps(data))

    async def dead_letter(self, topic: str, reason: str, message: str, payload: bytes, ts: float) -> None:
        self.dead.append(
            (ts, topic, reason, message[:MAX_DEAD_LETTER_MESSAGE], bytes(payload[:DEAD_LETTER_PAYLOAD_BYTES]))
        )

    # ------------------------------------------------------------ in place (after a flush)
    async def config(self, config: DeviceConfig, ts: float) -> None:
        await self.flush()
        text = config_json(config)
        changed = await self.conn.fetchval(
            "INSERT INTO devices (device_id, home, kind, config, first_seen, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $5)"
            " ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind, config = excluded.config,"
            " updated_at = excluded.updated_at WHERE devices.config IS DISTINCT FROM excluded.config RETURNING 1",
            config.device_id,
            self.store.default_home,
            str(config.kind),
            text,
            ts,
        )
        if changed:
            self.event(ts, config.device_id, None, EventType.DEVICE, text)

    async def remove(self, device_id: str, ts: float) -> None:
        await self.flush()
        home = await self.conn.fetchval("DELETE FROM devices WHERE device_id = $1 RETURNING home", device_id)
        await self.conn.execute("DELETE FROM state_values WHERE device_id = $1", device_id)
        await self.conn.execute("DELETE FROM availability WHERE device_id = $1", device_id)
        if home is not None:
            self.event(ts, device_id, home, EventType.REMOVED, "{}")

    async def availability(self, device_id: str, online: bool, ts: float) -> None:
        await self.flush()
        changed = await self.conn.fetchval(
            "INSERT INTO availability (device_id, online, updated_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (device_id) DO UPDATE SET online = excluded.online, updated_at = excluded.updated_at"
            " WHERE availability.online IS DISTINCT FROM excluded.online RETURNING 1",
            device_id,
            online,
            ts,
        )
        if changed:
            self.event(ts, device_id, None, EventType.AVAILABILITY, dumps({"online": online}))

    async def create_command(self, record: CommandRecord) -> None:
        await self.flush()
        await self.conn.execute(
            "INSERT INTO commands (command_id, device_id, sub, vals, status, reason, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)",
            record.command_id,
            record.device_id,
            record.sub,
            dumps(record.values),
            str(record.status),
            record.reason,
            record.created_at,
            record.updated_at,
        )
        self.event(record.created_at, record.device_id, None, EventType.COMMAND, dumps(record.as_dict()))

    async def update_command(
        self, command_id: str, status: CommandStatus, reason: str | None, ts: float
    ) -> CommandRecord | None:
        await self.flush()
        row = await self.conn.fetchrow(
            "UPDATE commands SET status = $1, reason = $2, updated_at = $3 WHERE command_id = $4"
            f" AND status = 'pending' RETURNING {_COMMAND_COLUMNS}",
            str(status),
            reason,
            ts,
            command_id,
        )
        if row is None:
            return None
        record = command_from_row(row)
        self.event(ts, record.device_id, None, EventType.COMMAND, dumps(record.as_dict()))
        return record


class _RestartError(Exception):
    """The batch this one overlapped failed an attempt: roll back and redo after it."""


class _Slot:
    """How a batch in flight tells the batch queued after it how far it got.

    The writer keeps up to ``PIPELINE_DEPTH`` batches in flight, each in its own transaction,
    so the next batch's work overlaps this one's round trips instead of waiting for its
    commit. Only what cannot change the outcome overlaps: the next batch inserts its
    duplicates-check keys once this batch's are in (a key in both then waits in PostgreSQL
    for this commit and is a duplicate, as in serial order), then its history rows
    (insert-only); everything else (latest state, dead letters, the event log and its
    offsets, configs, commands) only after this batch committed or failed, so those
    statements and the event offsets come in queue order, as with one batch at a time.

    The only wait PostgreSQL cannot see is the next batch waiting here for this one. It
    holds just its new key rows and history rows then, which this batch needs only if it
    retries: so a batch signals ``retrying`` before any retry, and the next batch, seeing
    it, rolls back and redoes its work once this batch is finished.
    """

    __slots__ = ("deduped", "done", "failed")

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.deduped: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.failed: asyncio.Future[None] = loop.create_future()

    def set_deduped(self) -> None:
        if not self.deduped.done():
            self.deduped.set_result(None)

    def retrying(self) -> None:
        self.set_deduped()
        if not self.failed.done():
            self.failed.set_result(None)

    def finish(self) -> None:
        self.set_deduped()
        if not self.done.done():
            self.done.set_result(None)

    async def wait(self, step: asyncio.Future[None]) -> None:
        """Wait for ``step``; raise ``_RestartError`` if this batch retries meanwhile (or did)."""
        if not step.done() and not self.failed.done():
            await asyncio.wait((step, self.failed), return_when=asyncio.FIRST_COMPLETED)
        if self.failed.done():
            raise _RestartError


_OVERLAPPING = frozenset({_Batch.state, _Batch.device_event, _Batch.dead_letter})


class PostgresStore(Store):
    """PostgreSQL backend: an asyncpg pool and one batching writer task."""

    def __init__(
        self,
        dsn: str,
        *,
        retention_days: float = 30,
        dead_letter_limit: int = 1000,
        default_home: str = DEFAULT_HOME,
        pool_size: int = 4,
    ) -> None:
        self.dsn = dsn
        self.retention_days = retention_days
        self.dead_letter_limit = dead_letter_limit
        self.default_home = default_home
        self.schema_key = 0
        self.events_sequence = ""
        self._pool_size = pool_size
        # A batch waiting for the one before holds a connection: the retry of that one needs another.
        self._depth = PIPELINE_DEPTH if pool_size > PIPELINE_DEPTH else 1
        self._pool: asyncpg.Pool[Any] | None = None
        self._queue: deque[_Op] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._open = False
        self._stats: dict[str, float] = {
            "batches_total": 0,
            "ops_total": 0,
            "failed_batches_total": 0,
            "retried_batches_total": 0,
            "last_batch_size": 0,
            "last_commit_seconds": 0.0,
            "max_commit_seconds": 0.0,
        }

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        """The connection pool (only while open)."""
        if self._pool is None or not self._open:
            raise StoreClosedError("the store is not open")
        return self._pool

    async def _query(self, kind: str, sql: str, *args: object) -> Any:  # noqa: ANN401 - asyncpg's own result
        """Run one idempotent statement on the pool, retried on transient connection errors."""
        for attempt in range(1, RETRIES + 1):
            try:
                return await getattr(self.pool, kind)(sql, *args)
            except _TRANSIENT_ERRORS:
                if attempt == RETRIES:
                    raise
                await asyncio.sleep(0.02 * 2**attempt)
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- lifecycle
    @override
    async def open(self) -> None:
        if self._open:
            return
        pool: asyncpg.Pool[Any] = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self._pool_size)
        try:
            async with pool.acquire() as conn:
                await apply_migrations(conn)
                self.schema_key = await conn.fetchval("SELECT hashtext(current_schema())")
                self.events_sequence = await conn.fetchval("SELECT pg_get_serial_sequence('events', 'id')")
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._wake = asyncio.Event()
        self._open = True
        self._writer = asyncio.create_task(self._run(), name="thermo_bridge store writer")

    @override
    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._wake.set()
        if self._writer is not None:
            await self._writer
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # ---------------------------------------------------------------- the writer task
    def _submit(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: object) -> asyncio.Future[Any]:
        if not self._open:
            raise StoreClosedError("the store is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((fn, args, future))
        self._wake.set()
        return future

    async def _run(self) -> None:
        queue = self._queue
        previous: _Slot | None = None
        in_flight: set[asyncio.Task[None]] = set()
        while True:
            if len(in_flight) >= self._depth:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            if not queue:
                if not self._open:
                    if in_flight:
                        await asyncio.wait(in_flight)
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), BATCH_CAP))]
            slot = _Slot()
            task = asyncio.create_task(self._run_batch(batch, previous, slot))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            previous = slot

    async def _run_batch(self, batch: list[_Op], previous: _Slot | None, slot: _Slot) -> None:
        try:
            await self._commit(batch, previous, slot)
        except Exception as err:  # never let the writer die: fail the batch, keep going
            _LOGGER.exception("Store writer failed a batch")
            fail_batch(batch, err)
        finally:
            slot.finish()

    async def _commit(self, batch: list[_Op], previous: _Slot | None = None, slot: _Slot | None = None) -> None:
        """Apply a batch in one transaction; on failure, one transaction per operation.

        With ``previous`` (the batch queued before, maybe still committing) only the inserts
        that cannot conflict with it overlap its commit; see ``_Slot``.
        """
        assert self._pool is not None  # noqa: S101 - the writer runs only while open
        slot = slot or _Slot()
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    results = await self._apply(conn, batch, previous, slot)
                break
            except _RestartError:
                # The previous batch failed an attempt while ours overlapped it: ours rolled
                # back; redo it once the previous one is finished, not overlapping anything.
                slot.retrying()
                assert previous is not None  # noqa: S101 - raised only while overlapping
                await previous.done
                previous = None
                attempt -= 1
                continue
            except _TRANSIENT_ERRORS as err:
                slot.retrying()
                self._stats["retried_batches_total"] += 1
                if attempt < RETRIES:
                    _LOGGER.info("Store batch hit %s (%s); retrying", type(err).__name__, err)
                    await asyncio.sleep(0.02 * 2**attempt)
                    if previous is not None:
                        await previous.done
                        previous = None
                    continue
                failure: Exception = err
            except Exception as err:
                slot.retrying()
                failure = err
            self._stats["failed_batches_total"] += 1
            transient = isinstance(failure, _TRANSIENT_ERRORS)
            if len(batch) == 1 or transient or not isinstance(failure, _DATA_ERRORS):
                _LOGGER.error("Store write of %d operation(s) failed: %s", len(batch), failure)
                fail_batch(batch, failure)
                return
            _LOGGER.warning("Store batch of %d failed (%s); retrying one by one", len(batch), failure)
            if previous is not None:
                await previous.done
            for op in batch:
                await self._commit([op])
            return
        elapsed = time.perf_counter() - started
        stats = self._stats
        stats["batches_total"] += 1
        stats["ops_total"] += len(batch)
        stats["last_batch_size"] = len(batch)
        stats["last_commit_seconds"] = elapsed
        stats["max_commit_seconds"] = max(stats["max_commit_seconds"], elapsed)
        resolve_batch(batch, results)

    async def _apply(
        self, conn: asyncpg.Connection[Any], batch: list[_Op], previous: _Slot | None, slot: _Slot
    ) -> list[object]:
        # Only state reports, device events and dead letters may overlap the previous batch.
        overlap = previous is not None and all(fn in _OVERLAPPING for fn, _, _ in batch)
        if previous is not None:
            if overlap:
                await previous.wait(previous.deduped)  # its duplicates-check rows first: same order as serial
            else:
                await previous.wait(previous.done)
        keys: dict[_DedupeKey, float] = {}
        for fn, args, _ in batch:
            if fn is _Batch.state and args[3] is not None:
                keys.setdefault(args[3], args[2])
        new_keys: set[_DedupeKey] = set()
        if keys:
            # Sorted, so two replicas inserting the same keys wait on each other in one order.
            rows = await conn.fetch(
                "INSERT INTO state_dedupe (device_id, seq, ts, digest, received_at)"
                " SELECT * FROM unnest($1::text[], $2::int8[], $3::float8[], $4::int8[], $5::float8[])"
                " ON CONFLICT DO NOTHING RETURNING device_id, seq, ts, digest",
                *zip(*((*key, received) for key, received in sorted(keys.items())), strict=True),
            )
            new_keys = {(r[0], r[1], r[2], r[3]) for r in rows}
        slot.set_deduped()
        work = _Batch(conn, self, new_keys)
        results = [await fn(work, *args) for fn, args, _ in batch]
        if overlap:
            assert previous is not None  # noqa: S101 - overlap implies a previous batch
            await work.flush_history()
            await previous.wait(previous.done)
        await work.flush()
        return results

    # ---------------------------------------------------------------- writes
    @override
    def apply_config(self, config: DeviceConfig, ts: float) -> asyncio.Future[None]:
        return self._submit(_Batch.config, config, ts)

    @override
    def remove_device(self, device_id: str, ts: float) -> asyncio.Future[None]:
        return self._submit(_Batch.remove, device_id, ts)

    @override
    def apply_state(self, device_id: str, update: StateUpdate, ts: float) -> asyncio.Future[bool]:
        data, key = state_payload(device_id, update)
        return self._submit(_Batch.state, device_id, update, ts, key, data)

    @override
    def apply_availability(self, device_id: str, online: bool, ts: float) -> asyncio.Future[None]:
        return self._submit(_Batch.availability, device_id, online, ts)

    @override
    def record_device_event(self, device_id: str, event: DeviceEvent, ts: float) -> asyncio.Future[None]:
        return self._submit(_Batch.device_event, device_id, event, ts)

    @override
    def add_dead_letter(self, topic: str, reason: str, message: str, payload: bytes, ts: float) -> asyncio.Future[None]:
        return self._submit(_Batch.dead_letter, topic, reason, message, payload, ts)

    @override
    def create_command(self, record: CommandRecord) -> asyncio.Future[None]:
        return self._submit(_Batch.create_command, record)

    @override
    def update_command(
        self, command_id: str, status: CommandStatus, reason: str | None, ts: float
    ) -> asyncio.Future[CommandRecord | None]:
        return self._submit(_Batch.update_command, command_id, status, reason, ts)

    # ---------------------------------------------------------------- reads
    @override
    async def list_devices(
        self,
        homes: Collection[str] | None = None,
        *,
        kind: str | None = None,
        online: bool | None = None,
        home: str | None = None,
    ) -> list[DeviceRecord]:
        where = []
        params: list[Any] = []
        if homes is not None:
            homes = list(homes)
            if not homes:
                return []
            params.append(homes)
            where.append(f"d.home = ANY(${len(params)}::text[])")
        if kind is not None:
            params.append(kind)
            where.append(f"d.kind = ${len(params)}")
        if online is not None:
            params.append(online)
            where.append(f"a.online = ${len(params)}")
        if home is not None:
            params.append(home)
            where.append(f"d.home = ${len(params)}")
        sql = _DEVICE_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY d.device_id"
        return [_device(row) for row in await self._query("fetch", sql, *params)]

    @override
    async def get_device(self, device_id: str) -> DeviceRecord | None:
        row = await self._query("fetchrow", _DEVICE_SELECT + " WHERE d.device_id = $1", device_id)
        return None if row is None else _device(row)

    @override
    async def get_state(self, device_id: str) -> StateRecord | None:
        rows = await self._query(
            "fetch",
            "SELECT key, value::text, order_ts, seq, device_ts, received_at FROM state_values WHERE device_id = $1",
            device_id,
        )
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
        key_filter = ""
        if keys is not None:
            keys = list(keys)
            if not keys:
                return []
            params.append(keys)
            key_filter = f" AND key = ANY(${len(params)}::text[])"
        params.append(limit)
        if resolution is None:
            rows = await self._query(
                "fetch",
                "SELECT ts, key, value FROM history WHERE device_id = $1 AND ts >= $2 AND ts < $3"
                f"{key_filter} ORDER BY ts, key LIMIT ${len(params)}",
                *params,
            )
            return [HistoryPoint(ts, key, value) for ts, key, value in rows]
        params.append(float(resolution))
        rows = await self._query(
            "fetch",
            f"SELECT floor(ts / ${len(params)})::int8 AS bucket, key, avg(value), min(value), max(value), count(value)"
            " FROM history WHERE device_id = $1 AND ts >= $2 AND ts < $3 AND value IS NOT NULL"
            f"{key_filter} GROUP BY bucket, key ORDER BY bucket, key LIMIT ${len(params) - 1}",
            *params,
        )
        return [
            HistoryPoint(float(bucket) * resolution, key, mean, minimum, maximum, count)
            for bucket, key, mean, minimum, maximum, count in rows
        ]

    @override
    async def get_command(self, command_id: str) -> CommandRecord | None:
        row = await self._query(
            "fetchrow", f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE command_id = $1", command_id
        )
        return None if row is None else command_from_row(row)

    @override
    async def pending_commands(self, older_than: float) -> list[CommandRecord]:
        rows = await self._query(
            "fetch",
            f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE status = 'pending' AND created_at < $1 ORDER BY created_at",
            older_than,
        )
        return [command_from_row(row) for row in rows]

    @override
    async def events_since(
        self, offset: int, *, limit: int = 1000, homes: Collection[str] | None = None
    ) -> list[EventRecord]:
        params: list[Any] = [offset, limit]
        home_filter = ""
        if homes is not None:
            homes = list(homes)
            if not homes:
                return []
            params.append(homes)
            home_filter = " AND home = ANY($3::text[])"
        rows = await self._query(
            "fetch",
            f"SELECT id, ts, device_id, home, type, data::text FROM events WHERE id > $1{home_filter}"
            " ORDER BY id LIMIT $2",
            *params,
        )
        return [EventRecord(row[0], row[1], row[2], row[3], EventType(row[4]), json.loads(row[5])) for row in rows]

    @override
    async def latest_offset(self) -> int:
        return int(await self._query("fetchval", "SELECT COALESCE(max(id), 0) FROM events"))

    @override
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = await self._query(
            "fetch", "SELECT id, ts, topic, reason, message, payload FROM dead_letters ORDER BY id DESC LIMIT $1", limit
        )
        return [dead_letter_from_row(row) for row in rows]

    # ---------------------------------------------------------------- homes and grants
    @override
    async def set_device_home(self, device_id: str, home: str) -> bool:
        result = await self._query("execute", "UPDATE devices SET home = $1 WHERE device_id = $2", home, device_id)
        return bool(result != "UPDATE 0")

    @override
    async def set_grants(self, sub: str, homes: Collection[str]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            # Row lock on nothing: serialise concurrent replacements of the same user's grants.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('thermo_bridge grants'), hashtext($1))", sub)
            await conn.execute("DELETE FROM grants WHERE sub = $1", sub)
            await conn.execute(
                "INSERT INTO grants (sub, home) SELECT $1, h FROM unnest($2::text[]) AS h ON CONFLICT DO NOTHING",
                sub,
                sorted(set(homes)),
            )

    @override
    async def get_grants(self, sub: str) -> frozenset[str]:
        rows = await self._query("fetch", "SELECT home FROM grants WHERE sub = $1", sub)
        return frozenset(row[0] for row in rows)

    @override
    async def all_grants(self) -> Mapping[str, frozenset[str]]:
        out: dict[str, set[str]] = {}
        for sub, home in await self._query("fetch", "SELECT sub, home FROM grants ORDER BY sub"):
            out.setdefault(sub, set()).add(home)
        return {sub: frozenset(homes) for sub, homes in out.items()}

    # ---------------------------------------------------------------- maintenance
    @override
    async def purge_before(self, ts: float) -> int:
        total = 0
        for table, column, extra in (
            ("history", "ts", ""),
            ("events", "ts", ""),
            ("state_dedupe", "received_at", ""),
            ("commands", "updated_at", " AND status <> 'pending'"),
        ):
            while True:
                result = await self._query(
                    "execute",
                    f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                    f"SELECT ctid FROM {table} WHERE {column} < $1{extra} LIMIT $2))",
                    ts,
                    PURGE_CHUNK,
                )
                deleted = int(result.rsplit(" ", 1)[-1])
                total += deleted
                if deleted < PURGE_CHUNK:
                    break
        return total

    @override
    async def stats(self) -> Mapping[str, float]:
        return {**self._stats, "queue_depth": float(len(self._queue))}


def _device(row: Sequence[Any]) -> DeviceRecord:
    device_id, home, config, online, first_seen, updated_at = row
    return DeviceRecord(
        device_id=device_id,
        home=home,
        config=load_config(config),
        online=online,
        first_seen=first_seen,
        updated_at=updated_at,
    )
