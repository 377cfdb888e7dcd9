-- evq's tables in a PostgreSQL schema (schema version 2), in the connection's current schema.
-- Run by `evq migrate` (and a worker's start) under an advisory lock. Times are Unix seconds on
-- the server's clock. See evq/storage/postgres/__init__.py.
CREATE TABLE IF NOT EXISTS evq_version (
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS evq_event (
    seq bigserial PRIMARY KEY,
    id text COLLATE "C" NOT NULL UNIQUE,
    name text COLLATE "C" NOT NULL,
    payload text NOT NULL,
    published_at double precision NOT NULL,
    due_at double precision,
    dispatched_at double precision,
    key text COLLATE "C",
    headers text
);
-- Version 2: event headers (no default, so adding the column rewrites no row).
ALTER TABLE evq_event ADD COLUMN IF NOT EXISTS headers text;
CREATE UNIQUE INDEX IF NOT EXISTS evq_event_key ON evq_event (key) WHERE key IS NOT NULL;
-- The events no worker has fanned out yet (few, whatever the size of the log), oldest first:
-- each is due for fan-out since it was published, or since the server stored it if the
-- publisher's clock was ahead.
CREATE INDEX IF NOT EXISTS evq_event_undispatched ON evq_event (least(published_at, due_at), seq)
    WHERE due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS evq_delivery (
    id bigserial PRIMARY KEY,
    event_seq bigint NOT NULL,
    receiver text NOT NULL,
    state text NOT NULL,
    due_at double precision,
    attempt integer NOT NULL DEFAULT 0,
    failures integer NOT NULL DEFAULT 0,
    attempt_base integer NOT NULL DEFAULT 0,
    lease_owner text,
    created_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    last_error text,
    traceback text,
    replay boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS evq_delivery_due ON evq_delivery (due_at, id) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS evq_delivery_event ON evq_delivery (event_seq);
CREATE INDEX IF NOT EXISTS evq_delivery_dead ON evq_delivery (finished_at) WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS evq_attempt (
    delivery_id bigint NOT NULL,
    attempt integer NOT NULL,
    worker text,
    started_at double precision,
    finished_at double precision NOT NULL,
    outcome text NOT NULL,
    error text,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE TABLE IF NOT EXISTS evq_worker (
    id text PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    started_at double precision NOT NULL,
    seen_at double precision NOT NULL,
    info text NOT NULL DEFAULT '{}'
);
-- Counters and statistics are kept in shards, one per worker (mod 16), so that workers never
-- wait on each other's row to count.
CREATE TABLE IF NOT EXISTS evq_stat (
    second bigint NOT NULL,
    shard integer NOT NULL,
    done bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (second, shard)
);
CREATE TABLE IF NOT EXISTS evq_counter (
    name text NOT NULL,
    shard integer NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (name, shard)
)
