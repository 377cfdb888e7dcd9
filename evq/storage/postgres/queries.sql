-- The fixed statements of evq's PostgreSQL backend, loaded by name (`queries.py`). Times are
-- Unix seconds. `%(shift)s` is how far the server's clock is ahead of the caller's (None when
-- the caller gives the time itself): `coalesce(extract(...) - %(shift)s, 0)`.

-- name: server_now
SELECT extract(epoch FROM clock_timestamp())::float8;

-- name: insert_events
-- One statement (atomic even in autocommit), with the wake-up of idle workers in it: NOTIFY
-- is sent when, and only if, the publishing transaction commits. The events come as one JSON
-- array of [id, name, payload, published_at, due_at, delay, key, headers] (the server reads
-- it in C, where a driver would escape eight arrays element by element in Python). A delay
-- runs from the server's clock (`due_at` is null then), or from the time a caller gave.
WITH inserted AS (
    INSERT INTO evq_event (id, name, payload, published_at, due_at, key, headers)
    SELECT e->>0, e->>1, e->>2, (e->>3)::float8,
        coalesce((e->>4)::float8, extract(epoch FROM clock_timestamp()) + (e->>5)::float8),
        e->>6, e->>7
    FROM json_array_elements(%(events)s::json) WITH ORDINALITY AS r(e, n)
    ORDER BY r.n
    ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id, key
)
SELECT inserted.id, inserted.key FROM inserted, (SELECT pg_notify('evq_wakeup', '')) AS wake;

-- name: insert_events_without_keys
-- The same for events none of which has a key: none can be a duplicate, so every one is
-- inserted and only their number comes back.
WITH inserted AS (
    INSERT INTO evq_event (id, name, payload, published_at, due_at, headers)
    SELECT e->>0, e->>1, e->>2, (e->>3)::float8,
        coalesce((e->>4)::float8, extract(epoch FROM clock_timestamp()) + (e->>5)::float8),
        e->>7
    FROM json_array_elements(%(events)s::json) WITH ORDINALITY AS r(e, n)
    ORDER BY r.n
    RETURNING 1
)
SELECT count(*) FROM inserted, (SELECT pg_notify('evq_wakeup', '')) AS wake;

-- name: copy_events
-- A large batch none of whose events has a key (`delivering.stream_events`): the rows stream in
-- with COPY, in order, each due at the server's time read just before (or the caller's `now`),
-- plus its delay. No row can conflict, so nothing needs ON CONFLICT.
COPY evq_event (id, name, payload, published_at, due_at, headers) FROM STDIN;

-- name: wake_workers
-- Sent when, and only if, the transaction commits.
SELECT pg_notify('evq_wakeup', '');

-- name: ids_of_keys
SELECT key, id FROM evq_event WHERE key = ANY(%(keys)s::text[]);

-- name: next_due
-- An event not fanned out yet is due since it was stored: its publication time, or the
-- server's time at insert if the publisher's clock was ahead.
SELECT least(
    (SELECT due_at FROM evq_delivery WHERE due_at IS NOT NULL ORDER BY due_at, id LIMIT 1),
    (SELECT least(published_at, due_at) FROM evq_event WHERE due_at IS NOT NULL
     ORDER BY least(published_at, due_at), seq LIMIT 1)
), extract(epoch FROM clock_timestamp())::float8;

-- name: next_due_of
-- `next_due` of a worker that runs only the receivers named (`evq worker --receiver`).
SELECT least(
    (SELECT due_at FROM evq_delivery WHERE due_at IS NOT NULL
     AND receiver = ANY(%(receivers)s::text[]) ORDER BY due_at, id LIMIT 1),
    (SELECT least(published_at, due_at) FROM evq_event WHERE due_at IS NOT NULL
     ORDER BY least(published_at, due_at), seq LIMIT 1)
), extract(epoch FROM clock_timestamp())::float8;

-- name: events_to_dispatch
-- Sequence numbers do not commit in order: events are found by the partial index of those
-- not fanned out, and a worker skips those another worker is fanning out right now.
SELECT seq, name, due_at FROM evq_event WHERE due_at IS NOT NULL
ORDER BY least(published_at, due_at), seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED;

-- name: insert_deliveries
INSERT INTO evq_delivery (event_seq, receiver, state, due_at, created_at)
SELECT d.seq, d.receiver, 'pending', d.due_at, %(now)s
FROM unnest(%(seqs)s::bigint[], %(receivers)s::text[], %(due)s::float8[])
    WITH ORDINALITY AS d(seq, receiver, due_at, n)
ORDER BY d.n;

-- name: mark_dispatched
UPDATE evq_event SET due_at = NULL, dispatched_at = %(now)s WHERE seq = ANY(%(seqs)s::bigint[]);

-- name: count_dispatched
INSERT INTO evq_counter (name, shard, value) VALUES ('dispatched', %(shard)s, %(count)s)
ON CONFLICT (name, shard) DO UPDATE SET value = evq_counter.value + excluded.value;

-- name: due_deliveries
-- Workers never wait for each other: rows another worker is leasing are skipped.
SELECT d.id, d.receiver, d.state, d.attempt, d.attempt_base, d.failures, d.lease_owner,
    d.started_at, d.replay, e.id, e.name, e.payload, e.published_at, e.headers
FROM evq_delivery d JOIN evq_event e ON e.seq = d.event_seq
WHERE d.due_at IS NOT NULL AND d.due_at <= %(now)s
ORDER BY d.due_at, d.id LIMIT %(limit)s
FOR UPDATE OF d SKIP LOCKED;

-- name: due_deliveries_of
-- `due_deliveries` of a worker that runs only the receivers named; the others' are left.
SELECT d.id, d.receiver, d.state, d.attempt, d.attempt_base, d.failures, d.lease_owner,
    d.started_at, d.replay, e.id, e.name, e.payload, e.published_at, e.headers
FROM evq_delivery d JOIN evq_event e ON e.seq = d.event_seq
WHERE d.due_at IS NOT NULL AND d.due_at <= %(now)s AND d.receiver = ANY(%(receivers)s::text[])
ORDER BY d.due_at, d.id LIMIT %(limit)s
FOR UPDATE OF d SKIP LOCKED;

-- name: record_lost
INSERT INTO evq_attempt (delivery_id, attempt, worker, started_at, finished_at, outcome, error)
SELECT a.id, a.attempt, a.worker, a.started_at, %(now)s, 'lost', %(error)s
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(workers)s::text[],
    %(started)s::float8[]) AS a(id, attempt, worker, started_at)
ON CONFLICT (delivery_id, attempt) DO UPDATE SET worker = excluded.worker,
    started_at = excluded.started_at, finished_at = excluded.finished_at,
    outcome = excluded.outcome, error = excluded.error;

-- name: make_dead
UPDATE evq_delivery d SET state = 'dead', due_at = NULL, finished_at = %(now)s,
    last_error = v.reason, lease_owner = NULL
FROM unnest(%(ids)s::bigint[], %(reasons)s::text[]) AS v(id, reason) WHERE d.id = v.id;

-- name: take
UPDATE evq_delivery d SET state = 'running', attempt = d.attempt + 1,
    due_at = %(now)s + v.lease_seconds, lease_owner = %(owner)s, started_at = %(now)s
FROM unnest(%(ids)s::bigint[], %(leases)s::float8[]) AS v(id, lease_seconds) WHERE d.id = v.id;

-- name: record_done
-- Every outcome is fenced: it counts only while the delivery is still running the attempt
-- the worker leased. RETURNING tells which did, so that only those get their history.
UPDATE evq_delivery d SET state = 'done', due_at = NULL, finished_at = v.finished_at,
    lease_owner = NULL
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(finished)s::float8[])
    AS v(id, attempt, finished_at)
WHERE d.id = v.id AND d.attempt = v.attempt AND d.state = 'running'
RETURNING d.id;

-- name: record_retry
UPDATE evq_delivery d SET state = 'pending',
    due_at = v.retry_at + coalesce(extract(epoch FROM clock_timestamp()) - %(shift)s, 0),
    failures = d.failures + v.failure, finished_at = v.finished_at, last_error = v.error,
    traceback = v.traceback, lease_owner = NULL
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(retry_at)s::float8[],
    %(failures)s::int[], %(finished)s::float8[], %(errors)s::text[], %(tracebacks)s::text[])
    AS v(id, attempt, retry_at, failure, finished_at, error, traceback)
WHERE d.id = v.id AND d.attempt = v.attempt AND d.state = 'running'
RETURNING d.id;

-- name: record_dead
UPDATE evq_delivery d SET state = 'dead', due_at = NULL, failures = d.failures + v.failure,
    finished_at = v.finished_at, last_error = v.error, traceback = v.traceback,
    lease_owner = NULL
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(failures)s::int[],
    %(finished)s::float8[], %(errors)s::text[], %(tracebacks)s::text[])
    AS v(id, attempt, failure, finished_at, error, traceback)
WHERE d.id = v.id AND d.attempt = v.attempt AND d.state = 'running'
RETURNING d.id;

-- name: record_release
-- A released delivery is due again at once (when it was given back, on the server's clock);
-- an attempt that never started gives its number back.
UPDATE evq_delivery d SET state = 'pending',
    due_at = v.finished_at + coalesce(extract(epoch FROM clock_timestamp()) - %(shift)s, 0),
    attempt = d.attempt - v.unstarted, lease_owner = NULL
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(finished)s::float8[],
    %(unstarted)s::int[]) AS v(id, attempt, finished_at, unstarted)
WHERE d.id = v.id AND d.attempt = v.attempt AND d.state = 'running'
RETURNING d.id;

-- name: record_history
INSERT INTO evq_attempt (delivery_id, attempt, worker, started_at, finished_at, outcome, error)
SELECT h.id, h.attempt, %(owner)s, h.started_at, h.finished_at, h.outcome, h.error
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(started)s::float8[],
    %(finished)s::float8[], %(outcomes)s::text[], %(errors)s::text[])
    AS h(id, attempt, started_at, finished_at, outcome, error)
ON CONFLICT (delivery_id, attempt) DO UPDATE SET worker = excluded.worker,
    started_at = excluded.started_at, finished_at = excluded.finished_at,
    outcome = excluded.outcome, error = excluded.error;

-- name: count_outcomes
INSERT INTO evq_stat (second, shard, done, failed)
SELECT s.second, %(shard)s, s.done, s.failed
FROM unnest(%(seconds)s::bigint[], %(done)s::bigint[], %(failed)s::bigint[])
    AS s(second, done, failed)
ORDER BY s.second
ON CONFLICT (second, shard) DO UPDATE SET done = evq_stat.done + excluded.done,
    failed = evq_stat.failed + excluded.failed;

-- name: renew
UPDATE evq_delivery d
SET due_at = v.until + coalesce(extract(epoch FROM clock_timestamp()) - %(shift)s, 0)
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(until)s::float8[])
    AS v(id, attempt, until)
WHERE d.id = v.id AND d.attempt = v.attempt AND d.state = 'running';

-- name: running_count
SELECT count(*) FROM evq_delivery
WHERE due_at IS NOT NULL AND state = 'running'
    AND due_at > extract(epoch FROM clock_timestamp())
    AND left(lease_owner, %(length)s) = %(prefix)s;

-- name: worker_seen
INSERT INTO evq_worker (id, hostname, pid, started_at, seen_at, info)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(started_at)s, extract(epoch FROM clock_timestamp()),
    %(info)s)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, info = excluded.info;

-- name: worker_stopped
DELETE FROM evq_worker WHERE id = %(id)s;
