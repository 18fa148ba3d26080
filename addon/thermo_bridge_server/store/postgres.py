"""The PostgreSQL store (larger installs, several replicas on one database): its writer and its SQL.

One writer task per process takes whatever is queued (up to ``BATCH_CAP`` operations) and
applies it in one transaction with a few set-based statements (``unnest`` arrays; binary
``COPY`` for the history and event rows, the bulk of a batch), then resolves the
operations' futures. Up to ``PIPELINE_DEPTH`` batches are in flight, each in its own
transaction: the next one's inserts that cannot change the outcome overlap the previous
commit's round trips, everything else waits for that commit (see ``_Slot``). Reads and
retention use the pool directly.

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
import contextlib
import functools
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Unpack, cast, override

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed in asyncpg

from .engine import (
    FLUSH,
    HOT_OPERATIONS,
    BatchingStore,
    BatchRows,
    Running,
    Sql,
    StoreOptions,
    batch_keys,
    fail_batch,
    resolve_batch,
    retry_delay,
)
from .rows import BATCH_CAP, PURGE_CHUNK, DedupeKey, StoreClosedError, migrations

_LOGGER = logging.getLogger(__name__)

LOCK_MIGRATIONS = 0x74620001
LOCK_EVENTS = 0x74620002
RETRIES = 5
PIPELINE_DEPTH = 2
"""Batches in flight at once (each in its own transaction; see ``_Slot``)."""
LISTEN_RETRY_MIN = 0.5
LISTEN_RETRY_MAX = 10.0

_HISTORY_COLUMNS = ("device_id", "ts", "key", "value")
_EVENT_COLUMNS = ("id", "ts", "device_id", "home", "type", "data")

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
"""The batch may well succeed on a fresh connection: retried with backoff (at most
``RETRY_MAX_DELAY`` apart) until it does while the store is open, so a database restart or
failover loses nothing and the ingest carries on by itself; once closing, after RETRIES
attempts it fails (and the MQTT messages stay unacknowledged). If the connection died *during* COMMIT the
first attempt may have committed: the retry is then what a QoS 1 redelivery would be anyway
(state updates are deduplicated, configs and availability are change-detecting upserts; a
device event or dead letter may be logged twice)."""

_DATA_ERRORS = (asyncpg.PostgresError, ValueError, TypeError)
"""Errors the server raised for the data (constraint, bad value) or asyncpg raised encoding it:
the batch is retried one operation per transaction so only the culprit fails. Connection
errors fail the whole batch at once (retrying one by one against a dead server only stalls)."""

_Op = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]


@functools.lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """The engine's ``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (its SQL has no literal ``?``)."""
    counter = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


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
    """One transaction's connection and the rows it collects; drives the engine's operations."""

    def __init__(self, conn: asyncpg.Connection[Any], store: PostgresStore, new_keys: set[DedupeKey]) -> None:
        self.conn = conn
        self.store = store
        self.rows = BatchRows(store.default_home)
        self.rows.new_keys = new_keys
        self.locked = False

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:  # noqa: ANN401 - the operation's result
        """Apply one operation: hot ones collect rows, the others run their statements now."""
        if fn in HOT_OPERATIONS:
            return fn(self.rows, *args)
        op = Running(fn(self.rows, *args))
        while op.sql is not None:
            op.send(await self._execute(op.sql))
        return op.result

    async def _execute(self, sql: Sql) -> object:
        if sql is FLUSH:
            await self.flush()
            return None
        if sql.one:
            return await self.conn.fetchrow(numbered(sql.text), *sql.params)
        status: str = await self.conn.execute(numbered(sql.text), *sql.params)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def flush_history(self) -> None:
        """Write the collected history rows (insert-only: no row another batch could lock)."""
        history = self.rows.history
        if history:
            # COPY: the largest row set of a batch (2 rows per report). Binary COPY encodes each
            # row directly; unnest() arrays cost asyncpg several ABC isinstance checks per element.
            await self.conn.copy_records_to_table("history", records=history, columns=_HISTORY_COLUMNS)
            history.clear()

    async def flush(self) -> None:
        """Write the collected rows; the events last, under the offset lock."""
        conn = self.conn
        rows = self.rows
        await self.flush_history()
        if rows.states:
            await conn.execute(
                "INSERT INTO state_values (device_id, key, value, order_ts, seq, device_ts, received_at)"
                " SELECT u.device_id, u.key, u.value::jsonb, u.order_ts, u.seq, u.device_ts, u.received_at"
                " FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::int8[], $6::float8[],"
                " $7::float8[]) AS u(device_id, key, value, order_ts, seq, device_ts, received_at)"
                " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, order_ts = excluded.order_ts,"
                " seq = excluded.seq, device_ts = excluded.device_ts, received_at = excluded.received_at"
                " WHERE (excluded.order_ts, excluded.seq) >= (state_values.order_ts, state_values.seq)",
                *zip(*rows.state_rows(), strict=True),
            )
        if rows.dead:
            await conn.execute(
                "INSERT INTO dead_letters (ts, topic, reason, message, payload)"
                " SELECT * FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::bytea[])",
                *zip(*rows.dead, strict=True),
            )
            rows.dead.clear()
            await conn.execute(
                "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET $1)",
                self.store.dead_letter_limit,
            )
        if rows.events:
            if not self.locked:
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_EVENTS, self.store.schema_key)
                self.locked = True
            # Offsets drawn under the lock, sorted so the log's order is the order operations were
            # queued; in the same round trip, the current home of the devices whose events carry
            # none (read under the lock, as an INSERT ... JOIN devices would).
            ids, known_ids, known_homes = await conn.fetchrow(
                "SELECT ARRAY(SELECT nextval($2::regclass) FROM generate_series(1, $1)),"
                " ARRAY(SELECT device_id FROM devices WHERE device_id = ANY($3::text[]) ORDER BY device_id),"
                " ARRAY(SELECT home FROM devices WHERE device_id = ANY($3::text[]) ORDER BY device_id)",
                len(rows.events),
                self.store.events_sequence,
                rows.homeless_devices(),
            )
            numbered = rows.number_events(sorted(ids), dict(zip(known_ids, known_homes, strict=True)))
            await conn.copy_records_to_table("events", records=numbered, columns=_EVENT_COLUMNS)
            # The doorbell of the other replicas: delivered to their LISTEN only once this commits.
            await conn.execute("SELECT pg_notify($1, $2)", self.store.channel, str(numbered[-1][0]))


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


class PostgresStore(BatchingStore):
    """PostgreSQL backend: an asyncpg pool and one batching writer task."""

    BUCKET: ClassVar[str] = "floor(ts / ?)::int8"
    # A row lock on nothing: serialise concurrent replacements of the same user's grants.
    GRANTS_LOCK: ClassVar[str | None] = "SELECT pg_advisory_xact_lock(hashtext('thermo_bridge grants'), hashtext(?))"

    def __init__(self, dsn: str, *, pool_size: int = 4, **options: Unpack[StoreOptions]) -> None:
        super().__init__(**options)
        self.dsn = dsn
        self.schema_key = 0
        self.events_sequence = ""
        self.channel = ""  # the NOTIFY channel of this schema's event log
        self._listener: asyncio.Task[None] | None = None
        self._pool_size = pool_size
        # A batch waiting for the one before holds a connection: the retry of that one needs another.
        self._depth = PIPELINE_DEPTH if pool_size > PIPELINE_DEPTH else 1
        self._pool: asyncpg.Pool[Any] | None = None
        self._queue: deque[_Op] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._open = False

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

    @override
    async def size_bytes(self) -> int:
        # This store's tables (with their indexes and TOAST) in its schema: the database may hold others'.
        sql = (
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm', 'p')"
        )
        rows = await self._fetch(sql, ())
        return int(rows[0][0])

    @override
    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        return cast("list[Sequence[Any]]", await self._query("fetch", numbered(sql), *params))

    @override
    async def _fetch_consistent(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Sequence[Any]]]:
        for attempt in range(1, RETRIES + 1):
            try:
                async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                    return [list(await conn.fetch(numbered(sql), *params)) for sql, params in queries]
            except _TRANSIENT_ERRORS:
                if attempt == RETRIES:
                    raise
                await asyncio.sleep(0.02 * 2**attempt)
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- other replicas' commits
    async def _listen(self) -> None:
        """LISTEN for every replica's commits; after each (re)connect, ring so readers catch up."""
        delay = LISTEN_RETRY_MIN
        while self._open:
            try:
                conn = await asyncpg.connect(self.dsn)
            except (*_TRANSIENT_ERRORS, asyncpg.PostgresError) as err:
                _LOGGER.warning("Cannot LISTEN for event-log commits (%s); retrying in %.1f s", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self.channel, self._notified)
                delay = LISTEN_RETRY_MIN
                # Commits made while nobody listened are only in the log: let readers look.
                self._ring(await self.latest_offset(), ())
                await lost.wait()
                _LOGGER.warning("The LISTEN connection for event-log commits was lost; reconnecting")
            except (*_TRANSIENT_ERRORS, asyncpg.PostgresError) as err:
                _LOGGER.warning("LISTEN for event-log commits failed (%s); reconnecting", err)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            offset = int(payload)
        except ValueError:
            _LOGGER.warning("Ignoring a malformed event-log notification %r", payload[:40])
            return
        self._ring(offset, ())

    @override
    def _any(self, column: str, values: list[str], params: list[Any]) -> str:
        params.append(values)
        return f"{column} = ANY(?::text[])"

    @override
    def _queue_depth(self) -> int:
        return len(self._queue)

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
        self.channel = f"thermo_bridge_events_{self.schema_key & 0xFFFFFFFF:08x}"
        self._writer = asyncio.create_task(self._run(), name="thermo_bridge store writer")
        try:
            await self._read_epoch()
        except BaseException:
            await self.close()
            raise
        self._listener = asyncio.create_task(self._listen(), name="thermo_bridge store listener")

    @override
    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._wake.set()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._writer is not None:
            await self._writer
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # ---------------------------------------------------------------- the writer task
    @override
    def _submit(self, fn: Callable[..., Any], *args: object) -> asyncio.Future[Any]:
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
                    results, committed = await self._apply(conn, batch, previous, slot)
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
                self._stats.retried()
                # While open, a batch is retried until the database takes it (a restart, a
                # failover): its MQTT messages stay unacknowledged meanwhile, nothing is lost.
                # Closing gives up after RETRIES so a shutdown never hangs on a dead server.
                if attempt < RETRIES or self._open:
                    if attempt < RETRIES:
                        _LOGGER.info("Store batch hit %s (%s); retrying", type(err).__name__, err)
                    else:
                        self._write_failing(err, len(self._queue) + len(batch))
                    await asyncio.sleep(retry_delay(attempt))
                    if previous is not None:
                        await previous.done
                        previous = None
                    continue
                failure: Exception = err
            except Exception as err:
                slot.retrying()
                failure = err
            self._stats.failed()
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
        self._stats.committed(len(batch), time.perf_counter() - started)
        self._write_ok()
        resolve_batch(batch, results)
        if committed:
            self._ring(committed[-1][0], committed)

    async def _apply(
        self, conn: asyncpg.Connection[Any], batch: list[_Op], previous: _Slot | None, slot: _Slot
    ) -> tuple[list[object], list[tuple[int, float, str, str, str, str]]]:
        """Apply the batch; its results and the event-log rows it wrote."""
        # Only state reports, device events and dead letters may overlap the previous batch.
        overlap = previous is not None and all(fn in HOT_OPERATIONS for fn, _, _ in batch)
        if previous is not None:
            if overlap:
                await previous.wait(previous.deduped)  # its duplicates-check rows first: same order as serial
            else:
                await previous.wait(previous.done)
        keys = batch_keys(batch)
        new_keys: set[DedupeKey] = set()
        if keys:
            # Sorted, so two replicas inserting the same keys wait on each other in one order.
            rows = await conn.fetch(
                "INSERT INTO state_dedupe (device_id, seq, ts, digest, received_at)"
                " SELECT * FROM unnest($1::text[], $2::int8[], $3::float8[], $4::int8[], $5::float8[])"
                " ON CONFLICT DO NOTHING RETURNING device_id, seq, ts, digest",
                *zip(*keys, strict=True),
            )
            new_keys = {(r[0], r[1], r[2], r[3]) for r in rows}
        slot.set_deduped()
        work = _Batch(conn, self, new_keys)
        results = [await work.run(fn, args) for fn, args, _ in batch]
        if overlap:
            assert previous is not None  # noqa: S101 - overlap implies a previous batch
            await work.flush_history()
            await previous.wait(previous.done)
        await work.flush()
        return results, work.rows.committed

    @override
    async def purge_before(self, ts: float) -> int:
        total = 0
        for table, column, extra in (
            ("history", "ts", ""),
            ("events", "ts", " AND id < (SELECT max(id) FROM events)"),  # the newest stays: the log's position
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
