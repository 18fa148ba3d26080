"""The embedded SQLite store (the default, one server process): its writer thread and its SQL.

One writer thread owns the write connection: it takes whatever is queued (up to
``BATCH_CAP`` operations), applies it in one ``BEGIN IMMEDIATE`` transaction, commits, and
only then resolves the operations' futures on the event loop (``call_soon_threadsafe``).
The rows the hot operations collect are written with ``executemany``; the batch's
idempotency keys are checked with one ``INSERT OR IGNORE … RETURNING``.

If a batch fails on an operation's data (a constraint, a bad value), it is rolled back and
its operations are retried one transaction each, so the bad one fails alone and loses
nothing else. A failure that passes (disk full, an I/O error, a lock held too long) rolls the
batch back and tries it again, with backoff, until it commits: meanwhile its futures stay
pending, so the ingest does not acknowledge those MQTT messages and the broker keeps them
(and stops sending more once our in-flight window is full); ``write_error`` and /health say
why. Any other failure fails the whole batch: the futures carry the error.

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
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Unpack, override

from .engine import (
    FLUSH,
    HOT_OPERATIONS,
    BatchingStore,
    BatchRows,
    Running,
    Sql,
    Step,
    StoreOptions,
    batch_keys,
    fail_batch,
    resolve_batch,
    retry_delay,
)
from .rows import BATCH_CAP, PURGE_CHUNK, StoreClosedError, migrations

_LOGGER = logging.getLogger(__name__)

_SQL_STATE = (
    "INSERT INTO state_values (device_id, key, value, order_ts, seq, device_ts, received_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, order_ts = excluded.order_ts,"
    " seq = excluded.seq, device_ts = excluded.device_ts, received_at = excluded.received_at"
    " WHERE (excluded.order_ts, excluded.seq) >= (state_values.order_ts, state_values.seq)"
)
DEDUPE_CHUNK = 1000
"""Keys per multi-row INSERT (5 parameters each, well under SQLite's 32,766 limit)."""
IN_CHUNK = 900
"""Values per ``IN (...)`` list."""


@functools.lru_cache(maxsize=16)
def _dedupe_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return f"INSERT OR IGNORE INTO state_dedupe VALUES {values} RETURNING device_id, seq, ts, digest"


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


def _files_size(path: str) -> int:
    """The database file and its write-ahead log, as they are on disk right now."""
    total = 0
    for name in (path, f"{path}-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(name).st_size
    return total


JOURNAL_MODE_TRIES = 100


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    for attempt in range(JOURNAL_MODE_TRIES):
        # Switching a new database to WAL needs it to itself, and SQLite answers "locked" at
        # once instead of waiting for the busy timeout when another connection opens it too.
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == JOURNAL_MODE_TRIES - 1:
                conn.close()
                raise
            time.sleep(0.05)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-16000")
    return conn


def _connect_and_migrate(path: str, synchronous: str) -> sqlite3.Connection:
    conn = _connect(path, synchronous)
    try:
        apply_migrations(conn)
    except BaseException:
        conn.close()
        raise
    return conn


_Op = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]

_DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, ValueError, TypeError)
"""Errors one operation's data causes: the batch is retried one operation per transaction.
Anything else fails the whole batch at once: retrying 2,000 operations one by one against a
broken disk would only stall the writer."""

_PASSING_ERRORS = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)
"""Primary result codes of conditions that pass (disk full, I/O error, a lock, a read-only remount):
the whole batch is tried again, with backoff, until it commits while the store is open."""
RETRIES_WHEN_CLOSING = 3


def _passes(err: BaseException) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return isinstance(err, sqlite3.OperationalError) and code is not None and code & 0xFF in _PASSING_ERRORS


def purge_chunk_op(rows: BatchRows, ts: float) -> Step:
    """Delete up to PURGE_CHUNK rows older than ``ts`` per table; the caller repeats until none is left."""
    yield FLUSH
    # History has no ts index (it would cost ~40 % per insert): walk its (device_id, ts) index,
    # device by device, with the device list taken from that same index.
    deleted: int = yield Sql(
        "DELETE FROM history WHERE rowid IN (SELECT h.rowid FROM (WITH RECURSIVE d(id) AS ("
        "SELECT min(device_id) FROM history UNION ALL"
        " SELECT (SELECT min(device_id) FROM history WHERE device_id > d.id) FROM d WHERE d.id IS NOT NULL)"
        " SELECT id FROM d WHERE id IS NOT NULL) AS devs JOIN history h ON h.device_id = devs.id AND h.ts < ?"
        " LIMIT ?)",
        (ts, PURGE_CHUNK),
    )
    deleted += yield Sql(
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ?"
        " AND id < (SELECT max(id) FROM events) LIMIT ?)",  # the newest stays: the log's position
        (ts, PURGE_CHUNK),
    )
    deleted += yield Sql(
        "DELETE FROM state_dedupe WHERE (device_id, seq, ts, digest) IN"
        " (SELECT device_id, seq, ts, digest FROM state_dedupe WHERE received_at < ? LIMIT ?)",
        (ts, PURGE_CHUNK),
    )
    deleted += yield Sql(
        "DELETE FROM commands WHERE command_id IN"
        " (SELECT command_id FROM commands WHERE updated_at < ? AND status != 'pending' LIMIT ?)",
        (ts, PURGE_CHUNK),
    )
    return deleted


class _Writer:
    """The writer thread's connection and the batch being built on it."""

    def __init__(self, conn: sqlite3.Connection, default_home: str, dead_letter_limit: int) -> None:
        self.conn = conn
        self.rows = BatchRows(default_home)
        self.dead_letter_limit = dead_letter_limit

    def prepare(self, batch: Sequence[_Op]) -> None:
        """Record the batch's idempotency keys; ``RETURNING`` gives only the new ones."""
        items = batch_keys(batch)
        new = self.rows.new_keys
        new.clear()
        for start in range(0, len(items), DEDUPE_CHUNK):
            chunk = items[start : start + DEDUPE_CHUNK]
            new.update(self.conn.execute(_dedupe_sql(len(chunk)), [v for row in chunk for v in row]).fetchall())

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:  # noqa: ANN401 - the operation's result
        """Apply one operation: hot ones collect rows, the others run their statements now."""
        if fn in HOT_OPERATIONS:
            return fn(self.rows, *args)
        op = Running(fn(self.rows, *args))
        while op.sql is not None:
            op.send(self._execute(op.sql))
        return op.result

    def _execute(self, sql: Sql) -> object:
        if sql is FLUSH:
            self.flush()
            return None
        cursor = self.conn.execute(sql.text, sql.params)
        return cursor.fetchone() if sql.one else cursor.rowcount

    def flush(self) -> None:
        """Write every collected row, in an order that keeps the event log in queue order."""
        conn = self.conn
        rows = self.rows
        if rows.history:
            conn.executemany("INSERT INTO history (device_id, ts, key, value) VALUES (?, ?, ?, ?)", rows.history)
        if rows.states:
            conn.executemany(_SQL_STATE, rows.state_rows())
        if rows.events:
            # One writer holds the write lock: offsets continue the log's sequence, assigned here
            # so the doorbell knows exactly which rows it rings for.
            (last,) = conn.execute("SELECT COALESCE(max(id), 0) FROM events").fetchone()
            need = rows.homeless_devices()
            homes: dict[str, str] = {}
            for start in range(0, len(need), IN_CHUNK):
                chunk = need[start : start + IN_CHUNK]
                homes.update(
                    conn.execute(
                        f"SELECT device_id, home FROM devices WHERE device_id IN ({','.join('?' * len(chunk))})", chunk
                    ).fetchall()
                )
            numbered = rows.number_events(range(last + 1, last + 1 + len(rows.events)), homes)
            conn.executemany(
                "INSERT INTO events (id, ts, device_id, home, type, data) VALUES (?, ?, ?, ?, ?, ?)", numbered
            )
        if rows.dead:
            conn.executemany(
                "INSERT INTO dead_letters (ts, topic, reason, message, payload) VALUES (?, ?, ?, ?, ?)", rows.dead
            )
            conn.execute(
                "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.dead_letter_limit,),
            )
        rows.flushed()


class SQLiteStore(BatchingStore):
    """SQLite backend: WAL, one batching writer thread, reads in a thread pool."""

    BUCKET: ClassVar[str] = "CAST(ts / ? AS INTEGER)"  # ts >= 0: truncation is floor

    def __init__(
        self, path: str, *, synchronous: str = "NORMAL", readers: int = 2, **options: Unpack[StoreOptions]
    ) -> None:
        if path in {"", ":memory:"} or path.startswith("file::memory:"):
            raise ValueError("the SQLite store needs a file: readers use their own connections")
        if synchronous.upper() not in {"NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        super().__init__(**options)
        self.path = path
        self.synchronous = synchronous.upper()
        self._readers = readers
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_lock = threading.Lock()
        self._wake_retry = threading.Event()  # set by close(): a writer waiting to retry tries at once
        self._open = False

    # ---------------------------------------------------------------- lifecycle
    @override
    async def open(self) -> None:
        if self._open:
            return
        self._loop = asyncio.get_running_loop()
        self._wake_retry.clear()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Shielded: the thread owns the connection until it returns it, even if open() is cancelled
        # (closing it under a running migration would crash the sqlite3 module).
        conn = await asyncio.shield(asyncio.to_thread(_connect_and_migrate, self.path, self.synchronous))
        self._executor = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="store-read")
        self._thread = threading.Thread(target=self._run, args=(conn,), name="store-writer", daemon=True)
        self._open = True
        self._thread.start()
        await self._read_epoch()

    @override
    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._wake_retry.set()
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
    @override
    def _submit(self, fn: Callable[..., Any], *args: object) -> asyncio.Future[Any]:
        if not self._open or self._loop is None:
            raise StoreClosedError("the store is not open")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((fn, args, future))
        return future

    @override
    def _queue_depth(self) -> int:
        return self._queue.qsize()

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
        """Commit ``batch``; a passing failure (disk full…) is retried until it commits while open."""
        attempt = 0
        while True:
            err = self._attempt(writer, batch)
            if err is None or not _passes(err) or (not self._open and attempt >= RETRIES_WHEN_CLOSING):
                break
            attempt += 1
            self._stats.retried()
            self._write_failing(err, self._queue.qsize() + len(batch))
            self._wake_retry.wait(retry_delay(attempt))
        if err is not None:
            self._failed(writer, batch, err)

    def _attempt(self, writer: _Writer, batch: list[_Op]) -> Exception | None:
        """One transaction for ``batch``; None once committed (futures resolved), else the error."""
        started = time.perf_counter()
        conn = writer.conn
        results: list[Any] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            writer.prepare(batch)
            for fn, args, _ in batch:
                results.append(writer.run(fn, args))
            writer.flush()
            conn.execute("COMMIT")
        except Exception as err:
            writer.rows.reset()
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._stats.failed()
            return err
        self._stats.committed(len(batch), time.perf_counter() - started)
        self._write_ok()
        self._call(resolve_batch, batch, results)
        if committed := writer.rows.committed:
            writer.rows.committed = []
            self._call(self._ring, committed[-1][0], committed)
        return None

    def _failed(self, writer: _Writer, batch: list[_Op], err: Exception) -> None:
        if len(batch) > 1 and isinstance(err, _DATA_ERRORS):
            _LOGGER.warning("Store batch of %d failed (%s); retrying one by one", len(batch), err)
            for op in batch:
                self._commit(writer, [op])
            return
        _LOGGER.error("Store write of %d operation(s) failed: %s", len(batch), err)
        self._call(fail_batch, batch, err)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        assert self._loop is not None  # noqa: S101 - set before the thread starts
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits these any more
            self._loop.call_soon_threadsafe(fn, *args)

    @override
    async def size_bytes(self) -> int:
        if not self._open:
            raise StoreClosedError("the store is not open")
        return await asyncio.to_thread(_files_size, self.path)

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

    @override
    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        if not self._open or self._executor is None:
            raise StoreClosedError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: self._reader().execute(sql, params).fetchall()
        )

    @override
    async def _fetch_consistent(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Sequence[Any]]]:
        if not self._open or self._executor is None:
            raise StoreClosedError("the store is not open")

        def run() -> list[list[Sequence[Any]]]:
            conn = self._reader()
            conn.execute("BEGIN")  # WAL: every read below sees the database as of the first one
            try:
                return [conn.execute(sql, params).fetchall() for sql, params in queries]
            finally:
                conn.execute("COMMIT")

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    @override
    def _any(self, column: str, values: list[str], params: list[Any]) -> str:
        params.extend(values)
        return f"{column} IN ({','.join('?' * len(values))})"

    # ---------------------------------------------------------------- maintenance
    @override
    async def purge_before(self, ts: float) -> int:
        total = 0
        while True:
            deleted: int = await self._submit(purge_chunk_op, ts)
            total += deleted
            if deleted == 0:
                return total
