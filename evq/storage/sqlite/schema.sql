-- evq's tables in a SQLite queue file (schema version 4). See evq/storage/sqlite/__init__.py.
CREATE TABLE IF NOT EXISTS evq_event (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    published_at REAL NOT NULL,
    due_at REAL,
    dispatched_at REAL,
    key TEXT,
    headers TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS evq_event_key ON evq_event (key) WHERE key IS NOT NULL;
-- AUTOINCREMENT: an id is never given again, even after the newest delivery is purged or
-- pruned, so that an outcome fenced by (id, attempt) cannot land on a later delivery.
CREATE TABLE IF NOT EXISTS evq_delivery (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq INTEGER NOT NULL,
    receiver TEXT NOT NULL,
    state TEXT NOT NULL,
    due_at REAL,
    attempt INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    attempt_base INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    last_error TEXT,
    traceback TEXT,
    replay INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS evq_delivery_due ON evq_delivery (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS evq_delivery_event ON evq_delivery (event_seq);
CREATE INDEX IF NOT EXISTS evq_delivery_dead ON evq_delivery (finished_at)
    WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS evq_attempt (
    delivery_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT,
    started_at REAL,
    finished_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evq_worker (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS evq_stat (
    second INTEGER PRIMARY KEY,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS evq_counter (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
