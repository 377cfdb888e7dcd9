"""Delivering on SQLite: fan events out, lease deliveries, record outcomes.

Every function runs inside a transaction its caller holds (`Connection.write()`). Which
deliveries a lease takes, and which become dead letters, is decided by `evq.storage.rules`;
this module only fetches and stores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from evq.storage import rules
from evq.storage.contract import Lease, Outcome, Routing
from evq.storage.sqlite.connection import payload_text
from evq.storage.sqlite.schema import SET_CURSOR

# Events are counted when a worker dispatches them, once per batch, not when they are
# published: a publish then writes only its row and its indexes (see `status`).
_COUNT_DISPATCHED = (
    "INSERT INTO evq_counter (name, value) VALUES ('dispatched', ?)"
    " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
)
# The highest seq fanned out: events after it wait for a worker (see the package docstring).
CURSOR = "coalesce((SELECT value FROM evq_counter WHERE name = 'dispatch_cursor'), 0)"
# SQLite's integers are 64-bit: an id outside that range is not stored here.
_MAX_ROW_ID = 2**63 - 1


def row_id(text: str) -> int | None:
    """Return the row id an opaque id names, or None if it names no row of this backend."""
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= _MAX_ROW_ID else None


def next_due(conn: sqlite3.Connection) -> float | None:
    """When the earliest delivery is due; an event not fanned out yet is due for that at once
    (since it was published), whatever its delay: its deliveries carry the delay."""
    row = conn.execute(
        "SELECT min(due_at) FROM ("
        " SELECT min(due_at) AS due_at FROM evq_delivery WHERE due_at IS NOT NULL"
        " UNION ALL SELECT min(published_at) FROM evq_event"
        f" WHERE seq > {CURSOR} AND due_at IS NOT NULL)"
    ).fetchone()
    return None if row[0] is None else float(row[0])


def dispatch(conn: sqlite3.Connection, routing: Routing, now: float, limit: int) -> None:
    """Fan the next `limit` events after the cursor out to their receivers."""
    events = conn.execute(
        # Names are read as bytes for the same reason as payloads in `lease`: one damaged
        # row must not stop every event behind it from being dispatched.
        f"SELECT seq, CAST(name AS BLOB), due_at FROM evq_event WHERE seq > {CURSOR}"
        " ORDER BY seq LIMIT ?",
        (limit,),
    ).fetchall()
    if not events:
        return
    deliveries: list[tuple[int, str, float, float]] = []
    undeliverable: list[tuple[int, str, float, float, float, str]] = []
    dispatched: list[tuple[float, int]] = []
    for seq, raw_name, due_at in events:
        if due_at is None:
            continue  # Fanned out already, by a worker of schema version 1.
        dispatched.append((now, seq))
        name = payload_text(raw_name)
        if name is None:
            error = rules.UNDELIVERABLE_NAME_ERROR
            undeliverable.append((seq, rules.UNDELIVERABLE, now, now, now, error))
        else:
            deliveries.extend(
                (seq, receiver, due_at, now) for receiver in routing.receivers_for(name)
            )
    conn.executemany(
        "INSERT INTO evq_delivery (event_seq, receiver, state, due_at, created_at)"
        " VALUES (?, ?, 'pending', ?, ?)",
        deliveries,
    )
    if undeliverable:
        # Kept as a dead letter of no receiver, so that `evq dlq list` shows the damage.
        conn.executemany(
            "INSERT INTO evq_delivery (event_seq, receiver, state, created_at, finished_at,"
            " started_at, last_error) VALUES (?, ?, 'dead', ?, ?, ?, ?)",
            undeliverable,
        )
    conn.executemany(
        "UPDATE evq_event SET due_at = NULL, dispatched_at = ? WHERE seq = ?", dispatched
    )
    conn.execute(SET_CURSOR, (events[-1][0],))
    conn.execute(_COUNT_DISPATCHED, (len(dispatched),))


def lease(
    conn: sqlite3.Connection, routing: Routing, owner: str, limit: int, now: float
) -> tuple[list[Lease], int]:
    """Lease up to `limit` due deliveries to `owner` as `rules.lease_plan` decides; return the
    leases and how many deliveries became dead letters instead."""
    rows = conn.execute(
        "SELECT d.id, d.receiver, d.state, d.attempt, d.attempt_base, d.failures, d.lease_owner,"
        " d.started_at, d.replay, e.id, e.name,"
        # The payload is read as bytes: a damaged or forged row may hold text that is not
        # UTF-8, which sqlite3 refuses to return and which would stall the queue at this row.
        " CAST(e.payload AS BLOB), e.published_at"
        " FROM evq_delivery d JOIN evq_event e ON e.seq = d.event_seq"
        " WHERE d.due_at IS NOT NULL AND d.due_at <= ? ORDER BY d.due_at, d.id LIMIT ?",
        (now, limit),
    ).fetchall()
    by_id: dict[str, Any] = {}
    candidates = []
    damaged = []
    for row in rows:
        delivery_id = str(row[0])
        by_id[delivery_id] = row
        reason = _damage(row)
        if reason is not None:
            damaged.append((now, reason, row[0]))
            continue
        candidates.append(
            rules.Candidate(
                delivery_id=delivery_id,
                receiver=row[1],
                stored=row[2],
                attempt=row[3],
                attempt_base=row[4],
                failures=row[5],
                payload=payload_text(row[11]),
                payload_size=len(row[11]),
            )
        )
    plan = rules.lease_plan(candidates, routing)
    for candidate in plan.lost:
        row = by_id[candidate.delivery_id]
        conn.execute(
            "INSERT OR REPLACE INTO evq_attempt VALUES (?, ?, ?, ?, ?, 'lost', ?)",
            (row[0], row[3], row[6], row[7], now, rules.LOST_WORKER_ERROR),
        )
    conn.executemany(
        "UPDATE evq_delivery SET state = 'dead', due_at = NULL, finished_at = ?,"
        " last_error = ?, lease_owner = NULL WHERE id = ?",
        [*damaged, *((now, reason, by_id[c.delivery_id][0]) for c, reason in plan.dead)],
    )
    leases = []
    for candidate, lease_seconds in plan.take:
        row = by_id[candidate.delivery_id]
        assert candidate.payload is not None
        leases.append(
            Lease(
                delivery_id=candidate.delivery_id,
                attempt=candidate.attempt + 1,
                attempt_base=candidate.attempt_base,
                failures=candidate.failures,
                receiver=candidate.receiver,
                event_id=row[9],
                name=row[10],
                payload=candidate.payload,
                published_at=row[12],
                lease_seconds=lease_seconds,
                replay=bool(row[8]),
            )
        )
    conn.executemany(
        "UPDATE evq_delivery SET state = 'running', attempt = attempt + 1,"
        " due_at = ?, lease_owner = ?, started_at = ? WHERE id = ?",
        [(now + lease.lease_seconds, owner, now, int(lease.delivery_id)) for lease in leases],
    )
    return leases, len(plan.dead) + len(damaged)


def _damage(row: Sequence[Any]) -> str | None:
    """Why a fetched delivery row cannot be leased, if it was damaged (written by hand, by a
    bug, by a failing disk): such a row becomes a dead letter, and the queue goes on."""
    columns = {"receiver": (row[1], str), "attempt": (row[3], int), "attempt_base": (row[4], int)}
    columns["failures"] = (row[5], int)
    for column, (value, kind) in columns.items():
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"stored delivery row is damaged: {column} is {value!r}, not {kind.__name__}"
    return None


def record(conn: sqlite3.Connection, outcomes: Sequence[Outcome], owner: str) -> None:
    """Record `outcomes`, each only while its delivery is still at the attempt it leased."""
    rules.check_outcomes(outcomes)
    done: list[tuple[Any, ...]] = []
    retry: list[tuple[Any, ...]] = []
    dead: list[tuple[Any, ...]] = []
    release: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    stats: dict[int, list[int]] = {}
    for o in outcomes:
        key = (int(o.lease.delivery_id), o.lease.attempt)
        if o.kind == "done":
            done.append((o.finished_at, *key))
        elif o.kind == "retry":
            retry.append(
                (o.retry_at, int(o.counts_as_failure), o.finished_at, o.error, o.traceback, *key)
            )
        elif o.kind == "dead":
            dead.append((int(o.counts_as_failure), o.finished_at, o.error, o.traceback, *key))
        else:
            # A release of an attempt that never started gives the attempt number back.
            release.append((o.finished_at, int(o.started_at is None), *key))
        if o.started_at is not None:
            history.append(
                (*key, owner, o.started_at, o.finished_at, rules.history_outcome(o), o.error)
            )
            bucket = stats.setdefault(int(o.finished_at), [0, 0])
            bucket[0 if o.kind == "done" else 1] += 1
    if history:
        # Before the updates below, and only for attempts still running under this lease: a
        # stale worker (its lease expired, the delivery moved on) must not rewrite history.
        conn.executemany(
            "INSERT OR REPLACE INTO evq_attempt SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7"
            " WHERE EXISTS (SELECT 1 FROM evq_delivery WHERE id = ?1 AND attempt = ?2"
            " AND state = 'running')",
            history,
        )
    _fenced(
        conn,
        "state = 'done', due_at = NULL, finished_at = ?, lease_owner = NULL",
        done,
    )
    _fenced(
        conn,
        "state = 'pending', due_at = ?, failures = failures + ?, finished_at = ?,"
        " last_error = ?, traceback = ?, lease_owner = NULL",
        retry,
    )
    _fenced(
        conn,
        "state = 'dead', due_at = NULL, failures = failures + ?, finished_at = ?,"
        " last_error = ?, traceback = ?, lease_owner = NULL",
        dead,
    )
    _fenced(
        conn,
        "state = 'pending', due_at = ?, attempt = attempt - ?, lease_owner = NULL",
        release,
    )
    if stats:
        conn.executemany(
            "INSERT INTO evq_stat (second, done, failed) VALUES (?, ?, ?) ON CONFLICT (second)"
            " DO UPDATE SET done = done + excluded.done, failed = failed + excluded.failed",
            [(second, counts[0], counts[1]) for second, counts in stats.items()],
        )


def _fenced(conn: sqlite3.Connection, assignments: str, rows: list[tuple[Any, ...]]) -> None:
    # The lease's attempt is the fencing token: a stale worker's outcome changes nothing.
    if rows:
        conn.executemany(
            f"UPDATE evq_delivery SET {assignments}"
            " WHERE id = ? AND attempt = ? AND state = 'running'",
            rows,
        )


def renew(conn: sqlite3.Connection, leases: Sequence[tuple[Lease, float]]) -> int:
    """Extend running leases (fenced); return how many were still held."""
    cursor = conn.executemany(
        "UPDATE evq_delivery SET due_at = ? WHERE id = ? AND attempt = ? AND state = 'running'",
        [(until, int(lease.delivery_id), lease.attempt) for lease, until in leases],
    )
    return cursor.rowcount
