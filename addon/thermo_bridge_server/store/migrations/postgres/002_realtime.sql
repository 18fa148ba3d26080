-- The real-time API: the event log's epoch, event types named as the API sends them,
-- idempotent commands, single-use SSE tickets.

-- A random id created with the database: a position (epoch, offset) from another database is
-- never mistaken for one of this log's.
CREATE TABLE meta (
    key         text PRIMARY KEY,
    value       text NOT NULL
);
INSERT INTO meta (key, value) VALUES ('epoch', md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text));

-- 'device' meant discovered or changed; which one it was is not known for old rows.
UPDATE events SET type = 'device_updated' WHERE type = 'device';
UPDATE events SET type = 'device_removed' WHERE type = 'removed';
UPDATE events SET type = 'device_event' WHERE type = 'event';

-- A client's idempotency key: the same user sending the same key again gets the same command.
ALTER TABLE commands ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX commands_idempotency ON commands (sub, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- EventSource cannot send an Authorization header: it presents a ticket, used once, on any replica.
CREATE TABLE sse_tickets (
    ticket      text PRIMARY KEY,        -- SHA-256 of the ticket (the ticket itself is never stored)
    principal   text NOT NULL,           -- JSON: sub, permissions, homes, expires_at of the token
    expires_at  double precision NOT NULL
);
