"""The embedded SQLite store (the default, one server process).

One writer thread owns the write connection: it takes whatever is queued (up to
``BATCH_CAP`` operations), applies it in one ``BEGIN IMMEDIATE`` transaction, commits, and
only then resolves the operations' futures on the event loop (``call_soon_threadsafe``).
Hot-path rows (history, latest state, event log, dead letters) are collected per batch and
written with ``executemany``; rarer operations (configs, availability, commands, admin
writes) run in place, after flushing what was collected so the event log keeps the order
the operations were queued in. The batch's idempotency keys are checked with one
``INSERT OR IGNORE … RETURNING`` rather than one statement per update.

If a batch fails on an operation's data (a constraint, a bad value), it is rolled back and
its operations are retried one transaction each, so the bad one fails alone and loses
nothing else. Any other failure (disk full, I/O error) fails the whole batch: the futures
carry the error and the ingest does not acknowledge those MQTT messages.

Reads run on separate connections in a small thread pool, so the event loop never waits on
disk. WAL mode lets them read while the writer commits.

Durability: WAL with ``synchronous=NORMAL`` (default) survives a killed process (the crash
test kills the writer with SIGKILL mid-ingest) but a power loss may roll back the last
commits; ``?synchronous=full`` in the URL fsyncs every batch and closes that gap.
"""

# ruff: noqa: S608 - SQL here is assembled only from constants and "?" placeholders

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, override

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
    HISTORY_KEYS,
    MAX_FUTURE_SKEW,
    NO_SEQ,
    PURGE_CHUNK,
    DedupeKey,
    StoreClosedError,
    command_from_row,
    config_json,
    dead_letter_from_row,
    dumps,
    fail_batch,
    load_config,
    migrations,
    resolve_batch,
    scalar_json,
    state_payload,
)

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_DEAD_LETTER_MESSAGE = 1000

_SQL_STATE = (
    "INSERT INTO state_values (device_id, key, value, order_ts, seq, device_ts, received_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, order_ts = excluded.order_ts,"
    " seq = excluded.seq, device_ts = excluded.device_ts, received_at = excluded.received_at"
    " WHERE (excluded.order_ts, excluded.seq) >= (state_values.order_ts, state_values.seq)"
)
_SQL_EVENT = (
    "INSERT INTO events (ts, device_id, home, type, data)"
    " VALUES (?, ?, COALESCE(?, (SELECT home FROM devices WHERE device_id = ?), ?), ?, ?)"
)
DEDUPE_CHUNK = 1000
"""Keys per multi-row INSERT (5 parameters each, well under SQLite's 32,766 limit)."""


@functools.lru_cache(maxsize=16)
def _dedupe_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return f"INSERT OR IGNORE INTO state_dedupe VALUES {values} RETURNING device_id, seq, ts, digest"


_COMMAND_COLUMNS = "command_id, device_id, sub, vals, status, reason, created_at, updated_at"


def split_statements(script: str) -> list[str]:
    """Split a migration into statements (comments may contain semicolons)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if statement := buffer.strip():
                statements.append(statement)
            buffer = ""
    if buffer.strip() and not all(part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buffer.strip()[:80]!r}")
    return statements


def apply_migrations(conn: sqlite3.Connection) -> list[int]:
    """Apply pending migrations, each in its own transaction; return the versions applied.

    ``BEGIN IMMEDIATE`` takes the write lock before the version is read, so two processes
    opening the same file at once apply each migration exactly once.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    applied: list[int] = []
    for version, name, sql in migrations("sqlite"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM schema_version WHERE version = ?", (version,)).fetchone():
                conn.execute("COMMIT")
                continue
            for statement in split_statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (version, name, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        _LOGGER.info("Applied SQLite migration %03d_%s", version, name)
        applied.append(version)
    return applied


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-16000")
    return conn


_Op = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]

_DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, ValueError, TypeError)
"""Errors one operation's data causes: the batch is retried one operation per transaction.
Anything else (disk full, I/O error, locked database) fails the whole batch at once: retrying
2,000 operations one by one against a broken disk would only stall the writer."""


class _Writer:
    """The writer thread's state for one batch: immediate SQL plus rows collected for the flush."""

    def __init__(self, conn: sqlite3.Connection, default_home: str, dead_letter_limit: int) -> None:
        self.conn = conn
        self.default_home = default_home
        self.dead_letter_limit = dead_letter_limit
        self.history: list[tuple[str, float, str, float | None]] = []
        # (device_id, key) -> (order, row): only the newest update of a key in the batch is written
        self.states: dict[tuple[str, str], tuple[tuple[float, int, int], tuple[Any, ...]]] = {}
        self.arrival = 0
        self.events: list[tuple[float, str, str | None, str, str, str, str]] = []
        self.dead: list[tuple[float, str, str, str, bytes]] = []
        self.payloads: deque[tuple[str, DedupeKey | None]] = deque()
        self.new_keys: set[DedupeKey] = set()

    def prepare(self, batch: list[_Op]) -> None:
        """Encode the batch's state updates and record their idempotency keys in one statement.

        ``INSERT OR IGNORE … RETURNING`` returns only the keys that were new, so duplicates
        (already stored, or twice in this batch) are known without one query per update.
        """
        payloads = self.payloads
        payloads.clear()
        keys: dict[DedupeKey, float] = {}
        state = _Writer.state
        for fn, args, _ in batch:
            if fn is state:
                device_id, update, ts = args
                data, key = state_payload(device_id, update)
                payloads.append((data, key))
                if key is not None and key not in keys:
                    keys[key] = ts
        new: set[DedupeKey] = set()
        items = [(*key, ts) for key, ts in keys.items()]
        for start in range(0, len(items), DEDUPE_CHUNK):
            chunk = items[start : start + DEDUPE_CHUNK]
            rows = self.conn.execute(_dedupe_sql(len(chunk)), [v for row in chunk for v in row]).fetchall()
            new.update(rows)
        self.new_keys = new

    def reset(self) -> None:
        """Drop collected rows (after a rollback)."""
        self.history.clear()
        self.states.clear()
        self.events.clear()
        self.dead.clear()

    def event(self, ts: float, device_id: str, home: str | None, type_: EventType, data: str) -> None:
        """Collect an event-log row; ``home`` None means the device's home at flush time."""
        self.events.append((ts, device_id, home, device_id, self.default_home, str(type_), data))

    def flush(self) -> None:
        """Write every collected row, in an order that keeps the event log in queue order."""
        conn = self.conn
        if self.history:
            conn.executemany("INSERT INTO history (device_id, ts, key, value) VALUES (?, ?, ?, ?)", self.history)
        if self.states:
            conn.executemany(_SQL_STATE, [row for _, row in self.states.values()])
        if self.events:
            conn.executemany(_SQL_EVENT, self.events)
        if self.dead:
            conn.executemany(
                "INSERT INTO dead_letters (ts, topic, reason, message, payload) VALUES (?, ?, ?, ?, ?)", self.dead
            )
            conn.execute(
                "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.dead_letter_limit,),
            )
        self.reset()

    # ------------------------------------------------------------ hot path (collected)
    def state(self, device_id: str, update: StateUpdate, ts: float) -> bool:
        """The hot path: written out by hand (it runs once per MQTT message, holding the GIL)."""
        data, key = self.payloads.popleft()  # prepared in batch order
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
            ots = min(device_ts, ts + MAX_FUTURE_SKEW)  # = common.order_ts
        self.arrival += 1
        order = (ots, seq, self.arrival)
        states = self.states
        history = self.history
        for name, value in update.values.items():
            current = states.get((device_id, name))
            if current is None or order >= current[0]:
                states[device_id, name] = (order, (device_id, name, scalar_json(value), ots, seq, device_ts, ts))
            if name in HISTORY_KEYS:  # = common.history_value, inlined
                if value is None or type(value) is float:
                    history.append((device_id, hts, name, value))
                elif isinstance(value, bool):
                    history.append((device_id, hts, name, 1.0 if value else 0.0))
                elif isinstance(value, int):
                    history.append((device_id, hts, name, float(value)))
        self.events.append((ts, device_id, None, device_id, self.default_home, "state", data))
        return True

    def device_event(self, device_id: str, event: DeviceEvent, ts: float) -> None:
        data = {"event": event.event_type, "data": event.data, "ts": event.ts}
        self.event(ts, device_id, None, EventType.EVENT, dumps(data))

    def dead_letter(self, topic: str, reason: str, message: str, payload: bytes, ts: float) -> None:
        self.dead.append(
            (ts, topic, reason, message[:MAX_DEAD_LETTER_MESSAGE], bytes(payload[:DEAD_LETTER_PAYLOAD_BYTES]))
        )

    # ------------------------------------------------------------ in place (after a flush)
    def config(self, config: DeviceConfig, ts: float) -> None:
        self.flush()
        text = config_json(config)
        cur = self.conn.execute(
            "INSERT INTO devices (device_id, home, kind, config, first_seen, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind, config = excluded.config,"
            " updated_at = excluded.updated_at WHERE devices.config IS NOT excluded.config",
            (config.device_id, self.default_home, str(config.kind), text, ts, ts),
        )
        if cur.rowcount:
            self.event(ts, config.device_id, None, EventType.DEVICE, text)

    def remove(self, device_id: str, ts: float) -> None:
        self.flush()
        row = self.conn.execute("DELETE FROM devices WHERE device_id = ? RETURNING home", (device_id,)).fetchone()
        self.conn.execute("DELETE FROM state_values WHERE device_id = ?", (device_id,))
        self.conn.execute("DELETE FROM availability WHERE device_id = ?", (device_id,))
        if row is not None:
            self.event(ts, device_id, row[0], EventType.REMOVED, "{}")

    def availability(self, device_id: str, online: bool, ts: float) -> None:
        self.flush()
        cur = self.conn.execute(
            "INSERT INTO availability (device_id, online, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (device_id) DO UPDATE SET online = excluded.online, updated_at = excluded.updated_at"
            " WHERE availability.online IS NOT excluded.online",
            (device_id, int(online), ts),
        )
        if cur.rowcount:
            self.event(ts, device_id, None, EventType.AVAILABILITY, dumps({"online": online}))

    def create_command(self, record: CommandRecord) -> None:
        self.flush()
        self.conn.execute(
            f"INSERT INTO commands ({_COMMAND_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.command_id,
                record.device_id,
                record.sub,
                dumps(record.values),
                str(record.status),
                record.reason,
                record.created_at,
                record.updated_at,
            ),
        )
        self.event(record.created_at, record.device_id, None, EventType.COMMAND, dumps(record.as_dict()))

    def update_command(
        self, command_id: str, status: CommandStatus, reason: str | None, ts: float
    ) -> CommandRecord | None:
        self.flush()
        row = self.conn.execute(
            "UPDATE commands SET status = ?, reason = ?, updated_at = ? WHERE command_id = ? AND status = 'pending'"
            f" RETURNING {_COMMAND_COLUMNS}",
            (str(status), reason, ts, command_id),
        ).fetchone()
        if row is None:
            return None
        record = command_from_row(row)
        self.event(ts, record.device_id, None, EventType.COMMAND, dumps(record.as_dict()))
        return record

    def set_home(self, device_id: str, home: str) -> bool:
        self.flush()
        return self.conn.execute("UPDATE devices SET home = ? WHERE device_id = ?", (home, device_id)).rowcount > 0

    def set_grants(self, sub: str, homes: tuple[str, ...]) -> None:
        self.flush()
        self.conn.execute("DELETE FROM grants WHERE sub = ?", (sub,))
        self.conn.executemany("INSERT OR IGNORE INTO grants (sub, home) VALUES (?, ?)", [(sub, h) for h in homes])

    def purge_chunk(self, ts: float) -> int:
        """Delete up to PURGE_CHUNK old rows per table; the caller repeats until nothing is left."""
        self.flush()
        conn = self.conn
        deleted = 0
        # History has no ts index: walk the (device_id, ts) index one device at a time.
        devices = conn.execute(
            "WITH RECURSIVE d(id) AS (SELECT min(device_id) FROM history"
            " UNION ALL SELECT (SELECT min(device_id) FROM history WHERE device_id > d.id) FROM d"
            " WHERE d.id IS NOT NULL) SELECT id FROM d WHERE id IS NOT NULL"
        ).fetchall()
        for (device_id,) in devices:
            if deleted >= PURGE_CHUNK:
                break
            deleted += conn.execute(
                "DELETE FROM history WHERE rowid IN (SELECT rowid FROM history WHERE device_id = ? AND ts < ? LIMIT ?)",
                (device_id, ts, PURGE_CHUNK),
            ).rowcount
        deleted += conn.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ? LIMIT ?)", (ts, PURGE_CHUNK)
        ).rowcount
        deleted += conn.execute(
            "DELETE FROM state_dedupe WHERE (device_id, seq, ts, digest) IN"
            " (SELECT device_id, seq, ts, digest FROM state_dedupe WHERE received_at < ? LIMIT ?)",
            (ts, PURGE_CHUNK),
        ).rowcount
        deleted += conn.execute(
            "DELETE FROM commands WHERE command_id IN"
            " (SELECT command_id FROM commands WHERE updated_at < ? AND status != 'pending' LIMIT ?)",
            (ts, PURGE_CHUNK),
        ).rowcount
        return deleted


class SQLiteStore(Store):
    """SQLite backend: WAL, one batching writer thread, reads in a thread pool."""

    def __init__(
        self,
        path: str,
        *,
        retention_days: float = 30,
        dead_letter_limit: int = 1000,
        default_home: str = DEFAULT_HOME,
        synchronous: str = "NORMAL",
        readers: int = 2,
    ) -> None:
        if path in {"", ":memory:"} or path.startswith("file::memory:"):
            raise ValueError("the SQLite store needs a file: readers use their own connections")
        if synchronous.upper() not in {"NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = path
        self.retention_days = retention_days
        self.dead_letter_limit = dead_letter_limit
        self.default_home = default_home
        self.synchronous = synchronous.upper()
        self._readers = readers
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_lock = threading.Lock()
        self._open = False
        self._stats: dict[str, float] = {
            "batches_total": 0,
            "ops_total": 0,
            "failed_batches_total": 0,
            "last_batch_size": 0,
            "last_commit_seconds": 0.0,
            "max_commit_seconds": 0.0,
        }

    # ---------------------------------------------------------------- lifecycle
    @override
    async def open(self) -> None:
        if self._open:
            return
        self._loop = asyncio.get_running_loop()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = await asyncio.to_thread(_connect, self.path, self.synchronous)
        try:
            await asyncio.to_thread(apply_migrations, conn)
        except BaseException:
            conn.close()
            raise
        self._executor = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="store-read")
        self._thread = threading.Thread(target=self._run, args=(conn,), name="store-writer", daemon=True)
        self._open = True
        self._thread.start()

    @override
    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._queue.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True)  # lets running reads finish
        with self._read_lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()

    # ---------------------------------------------------------------- the writer thread
    def _submit(self, fn: Callable[..., Any], *args: object) -> asyncio.Future[Any]:
        if not self._open or self._loop is None:
            raise StoreClosedError("the store is not open")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((fn, args, future))
        return future

    def _run(self, conn: sqlite3.Connection) -> None:
        writer = _Writer(conn, self.default_home, self.dead_letter_limit)
        stopping = False
        try:
            while not stopping:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < BATCH_CAP:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                self._commit(writer, batch)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA optimize")
            conn.close()

    def _commit(self, writer: _Writer, batch: list[_Op]) -> None:
        started = time.perf_counter()
        conn = writer.conn
        results: list[Any] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            writer.prepare(batch)
            for fn, args, _ in batch:
                results.append(fn(writer, *args))
            writer.flush()
            conn.execute("COMMIT")
        except Exception as err:
            writer.reset()
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._stats["failed_batches_total"] += 1
            if len(batch) > 1 and isinstance(err, _DATA_ERRORS):
                _LOGGER.warning("Store batch of %d failed (%s); retrying one by one", len(batch), err)
                for op in batch:
                    self._commit(writer, [op])
                return
            _LOGGER.error("Store write of %d operation(s) failed: %s", len(batch), err)
            self._call(fail_batch, batch, err)
            return
        elapsed = time.perf_counter() - started
        stats = self._stats
        stats["batches_total"] += 1
        stats["ops_total"] += len(batch)
        stats["last_batch_size"] = len(batch)
        stats["last_commit_seconds"] = elapsed
        stats["max_commit_seconds"] = max(stats["max_commit_seconds"], elapsed)
        self._call(resolve_batch, batch, results)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        assert self._loop is not None  # noqa: S101 - set before the thread starts
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits these any more
            self._loop.call_soon_threadsafe(fn, *args)

    # ---------------------------------------------------------------- writes
    @override
    def apply_config(self, config: DeviceConfig, ts: float) -> asyncio.Future[None]:
        return self._submit(_Writer.config, config, ts)

    @override
    def remove_device(self, device_id: str, ts: float) -> asyncio.Future[None]:
        return self._submit(_Writer.remove, device_id, ts)

    @override
    def apply_state(self, device_id: str, update: StateUpdate, ts: float) -> asyncio.Future[bool]:
        return self._submit(_Writer.state, device_id, update, ts)

    @override
    def apply_availability(self, device_id: str, online: bool, ts: float) -> asyncio.Future[None]:
        return self._submit(_Writer.availability, device_id, online, ts)

    @override
    def record_device_event(self, device_id: str, event: DeviceEvent, ts: float) -> asyncio.Future[None]:
        return self._submit(_Writer.device_event, device_id, event, ts)

    @override
    def add_dead_letter(self, topic: str, reason: str, message: str, payload: bytes, ts: float) -> asyncio.Future[None]:
        return self._submit(_Writer.dead_letter, topic, reason, message, payload, ts)

    @override
    def create_command(self, record: CommandRecord) -> asyncio.Future[None]:
        return self._submit(_Writer.create_command, record)

    @override
    def update_command(
        self, command_id: str, status: CommandStatus, reason: str | None, ts: float
    ) -> asyncio.Future[CommandRecord | None]:
        return self._submit(_Writer.update_command, command_id, status, reason, ts)

    # ---------------------------------------------------------------- reads
    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, self.synchronous)
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._read_lock:
                self._read_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if not self._open or self._executor is None:
            raise StoreClosedError("the store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._reader()))

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
            where.append(f"d.home IN ({','.join('?' * len(homes))})")
            params.extend(homes)
        if kind is not None:
            where.append("d.kind = ?")
            params.append(kind)
        if online is not None:
            where.append("a.online = ?")
            params.append(int(online))
        if home is not None:
            where.append("d.home = ?")
            params.append(home)
        sql = (
            "SELECT d.device_id, d.home, d.config, a.online, d.first_seen, d.updated_at"
            " FROM devices d LEFT JOIN availability a USING (device_id)"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY d.device_id"
        )
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [_device(row) for row in rows]

    @override
    async def get_device(self, device_id: str) -> DeviceRecord | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT d.device_id, d.home, d.config, a.online, d.first_seen, d.updated_at"
                " FROM devices d LEFT JOIN availability a USING (device_id) WHERE d.device_id = ?",
                (device_id,),
            ).fetchone()
        )
        return None if row is None else _device(row)

    @override
    async def get_state(self, device_id: str) -> StateRecord | None:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT key, value, order_ts, seq, device_ts, received_at FROM state_values WHERE device_id = ?",
                (device_id,),
            ).fetchall()
        )
        return _state(device_id, rows)

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
        params: list[Any] = [device_id, start, end]
        key_filter = ""
        if keys is not None:
            keys = list(keys)
            if not keys:
                return []
            key_filter = f" AND key IN ({','.join('?' * len(keys))})"
            params.extend(keys)
        if resolution is None:
            sql = (
                "SELECT ts, key, value FROM history WHERE device_id = ? AND ts >= ? AND ts < ?"
                f"{key_filter} ORDER BY ts, key LIMIT ?"
            )
            params.append(limit)
            rows = await self._read(lambda c: c.execute(sql, params).fetchall())
            return [HistoryPoint(ts, key, value) for ts, key, value in rows]
        sql = (
            "SELECT CAST(ts / ? AS INTEGER) AS bucket, key, avg(value), min(value), max(value), count(value)"
            " FROM history WHERE device_id = ? AND ts >= ? AND ts < ? AND value IS NOT NULL"
            f"{key_filter} GROUP BY bucket, key ORDER BY bucket, key LIMIT ?"
        )
        params = [resolution, *params, limit]
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [
            HistoryPoint(float(bucket) * resolution, key, mean, minimum, maximum, count)
            for bucket, key, mean, minimum, maximum, count in rows
        ]

    @override
    async def get_command(self, command_id: str) -> CommandRecord | None:
        row = await self._read(
            lambda c: c.execute(
                f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE command_id = ?", (command_id,)
            ).fetchone()
        )
        return None if row is None else command_from_row(row)

    @override
    async def pending_commands(self, older_than: float) -> list[CommandRecord]:
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE status = 'pending' AND created_at < ?"
                " ORDER BY created_at",
                (older_than,),
            ).fetchall()
        )
        return [command_from_row(row) for row in rows]

    @override
    async def events_since(
        self, offset: int, *, limit: int = 1000, homes: Collection[str] | None = None
    ) -> list[EventRecord]:
        params: list[Any] = [offset]
        home_filter = ""
        if homes is not None:
            homes = list(homes)
            if not homes:
                return []
            home_filter = f" AND home IN ({','.join('?' * len(homes))})"
            params.extend(homes)
        params.append(limit)
        sql = f"SELECT id, ts, device_id, home, type, data FROM events WHERE id > ?{home_filter} ORDER BY id LIMIT ?"
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [EventRecord(row[0], row[1], row[2], row[3], EventType(row[4]), json.loads(row[5])) for row in rows]

    @override
    async def latest_offset(self) -> int:
        row = await self._read(lambda c: c.execute("SELECT COALESCE(max(id), 0) FROM events").fetchone())
        return int(row[0])

    @override
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT id, ts, topic, reason, message, payload FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        )
        return [dead_letter_from_row(row) for row in rows]

    # ---------------------------------------------------------------- homes and grants
    @override
    async def set_device_home(self, device_id: str, home: str) -> bool:
        result: bool = await self._submit(_Writer.set_home, device_id, home)
        return result

    @override
    async def set_grants(self, sub: str, homes: Collection[str]) -> None:
        await self._submit(_Writer.set_grants, sub, tuple(sorted(set(homes))))

    @override
    async def get_grants(self, sub: str) -> frozenset[str]:
        rows = await self._read(lambda c: c.execute("SELECT home FROM grants WHERE sub = ?", (sub,)).fetchall())
        return frozenset(row[0] for row in rows)

    @override
    async def all_grants(self) -> Mapping[str, frozenset[str]]:
        rows = await self._read(lambda c: c.execute("SELECT sub, home FROM grants ORDER BY sub").fetchall())
        out: dict[str, set[str]] = {}
        for sub, home in rows:
            out.setdefault(sub, set()).add(home)
        return {sub: frozenset(homes) for sub, homes in out.items()}

    # ---------------------------------------------------------------- maintenance
    @override
    async def purge_before(self, ts: float) -> int:
        total = 0
        while True:
            deleted: int = await self._submit(_Writer.purge_chunk, ts)
            total += deleted
            if deleted == 0:
                return total

    @override
    async def stats(self) -> Mapping[str, float]:
        return {**self._stats, "queue_depth": float(self._queue.qsize())}


def _device(row: Sequence[Any]) -> DeviceRecord:
    device_id, home, config, online, first_seen, updated_at = row
    return DeviceRecord(
        device_id=device_id,
        home=home,
        config=load_config(config),
        online=None if online is None else bool(online),
        first_seen=first_seen,
        updated_at=updated_at,
    )


def _state(device_id: str, rows: list[Any]) -> StateRecord | None:
    """Merge per-key rows: values, newest receive time, and the newest update's ts/seq."""
    if not rows:
        return None
    values = {}
    newest = None
    for key, value, ots, seq, device_ts, received_at in rows:
        values[key] = json.loads(value) if isinstance(value, str) else value
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
