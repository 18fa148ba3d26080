-- thermo_bridge store, SQLite: initial schema. Timestamps are Unix seconds (REAL).

CREATE TABLE devices (
    device_id   TEXT PRIMARY KEY,
    home        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    config      TEXT NOT NULL,           -- canonical wire form (JSON)
    first_seen  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX devices_home ON devices (home);

-- Kept apart from devices: availability may arrive before the config (retained topics).
CREATE TABLE availability (
    device_id   TEXT PRIMARY KEY,
    online      INTEGER NOT NULL,
    updated_at  REAL NOT NULL
);

-- Latest state: one row per (device, key), so partial updates merge by upsert.
CREATE TABLE state_values (
    device_id   TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,           -- JSON (keeps number / bool / string / null apart)
    order_ts    REAL NOT NULL,
    seq         INTEGER NOT NULL,
    device_ts   REAL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device_id, key)
) WITHOUT ROWID;

-- Idempotency keys of applied state updates (see store/common.py); purged with retention.
CREATE TABLE state_dedupe (
    device_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    ts          REAL NOT NULL,
    digest      INTEGER NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device_id, seq, ts, digest)
) WITHOUT ROWID;
CREATE INDEX state_dedupe_received ON state_dedupe (received_at);

CREATE TABLE history (
    device_id   TEXT NOT NULL,
    ts          REAL NOT NULL,
    key         TEXT NOT NULL,
    value       REAL
);
-- Covering index: a range query for one device reads only this index, in (ts, key) order.
-- No index on ts alone: it would cost ~40 % more per insert; retention walks this index
-- device by device instead (store/sqlite.py).
CREATE INDEX history_device_ts ON history (device_id, ts, key, value);

-- AUTOINCREMENT: offsets are never reused, even after retention deleted the newest rows.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          REAL NOT NULL,
    device_id   TEXT NOT NULL,
    home        TEXT NOT NULL,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX events_ts ON events (ts);
-- A user's resume (offset > N in their homes) seeks per home instead of scanning everyone's events.
CREATE INDEX events_home ON events (home, id);

CREATE TABLE commands (
    command_id  TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    sub         TEXT NOT NULL,
    vals        TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX commands_pending ON commands (created_at) WHERE status = 'pending';
CREATE INDEX commands_updated ON commands (updated_at);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          REAL NOT NULL,
    topic       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    message     TEXT NOT NULL,
    payload     BLOB NOT NULL
);

CREATE TABLE grants (
    sub         TEXT NOT NULL,
    home        TEXT NOT NULL,
    PRIMARY KEY (sub, home)
) WITHOUT ROWID;
