-- The real-time API: the event log's epoch, event types named as the API sends them,
-- idempotent commands, single-use SSE tickets.

-- A random id created with the database: a position (epoch, offset) from another database is
-- never mistaken for one of this log's.
CREATE TABLE meta (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('epoch', lower(hex(randomblob(16))));

-- 'device' meant discovered or changed; which one it was is not known for old rows.
UPDATE events SET type = 'device_updated' WHERE type = 'device';
UPDATE events SET type = 'device_removed' WHERE type = 'removed';
UPDATE events SET type = 'device_event' WHERE type = 'event';

-- A client's idempotency key: the same user sending the same key again gets the same command.
ALTER TABLE commands ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX commands_idempotency ON commands (sub, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- EventSource cannot send an Authorization header: it presents a ticket, used once.
CREATE TABLE sse_tickets (
    ticket      TEXT PRIMARY KEY,        -- SHA-256 of the ticket (the ticket itself is never stored)
    principal   TEXT NOT NULL,           -- JSON: sub, permissions, homes, expires_at of the token
    expires_at  REAL NOT NULL
) WITHOUT ROWID;
