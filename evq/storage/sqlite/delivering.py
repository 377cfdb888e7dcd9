"""Delivering on SQLite: fan events out, lease deliveries, record outcomes.

Every function runs inside a transaction its caller holds (`Connection.write()`). Which
deliveries a lease takes, and which become dead letters, is decided by `evq.storage.rules`;
this module only fetches and stores.
"""

from __future__ import annotations

import json
import math
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
# SQLite sorts every number before every text (and blob): `due_at >= ''` finds, at the end of
# the due index, the rows whose due time was damaged into something that is not a number.
_TEXT = "''"
# SQLite's integers are 64-bit: an id outside that range is not stored here.
_MAX_ROW_ID = 2**63 - 1


def row_id(text: str) -> int | None:
    """Return the row id an opaque id names, or None if it names no row of this backend."""
    # Only the one way evq writes a number ("7", never "007" or "+7"): ids are compared as text.
    if not text.isascii() or not text.isdigit() or (text[0] == "0" and text != "0"):
        return None
    value = int(text)
    return value if value <= _MAX_ROW_ID else None


def next_due(conn: sqlite3.Connection, receivers: frozenset[str] | None = None) -> float | None:
    """When the earliest delivery (to one of `receivers`, if given) is due; an event not
    fanned out yet is due for that at once (since it was published), whatever its delay: its
    deliveries carry the delay."""
    if receivers is None:
        # Numbers only: a damaged row's text sorts after every number, at the index's end.
        deliveries = f"SELECT min(due_at) AS due_at FROM evq_delivery WHERE due_at < {_TEXT}"
        params: tuple[str, ...] = ()
    else:
        # The first in due order among the receivers': the index walked until one is found.
        deliveries = (
            f"SELECT * FROM (SELECT due_at FROM evq_delivery WHERE due_at < {_TEXT}"
            f" AND {_SELECTED} ORDER BY due_at LIMIT 1)"
        )
        params = (_selected(receivers),)
    row = conn.execute(
        f"SELECT min(due_at) FROM ({deliveries}"
        " UNION ALL SELECT min(published_at) FROM evq_event"
        f" WHERE seq > {CURSOR} AND due_at IS NOT NULL)",
        params,
    ).fetchone()
    if _has_damaged_due_times(conn):
        return 0.0  # due at once, to become a dead letter (see `lease`)
    due = row[0]
    if due is None:
        return None
    if type(due) not in (int, float) or not math.isfinite(due):
        # An event's publish time damaged into text, bytes or an infinity: due at once, so
        # that it is fanned out and its deliveries become dead letters (see `lease`).
        return 0.0
    return float(due)


# The deliveries of the receivers a worker selected (`Routing.selected`), given as JSON.
_SELECTED = "receiver IN (SELECT value FROM json_each(?))"


def _selected(receivers: frozenset[str]) -> str:
    return json.dumps(sorted(receivers))


def _has_damaged_due_times(conn: sqlite3.Connection) -> bool:
    return (
        conn.execute(f"SELECT 1 FROM evq_delivery WHERE due_at >= {_TEXT}").fetchone() is not None
    )


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
    # A few hundred rows a statement, not one: each statement also bumps the table's
    # AUTOINCREMENT counter (a row of sqlite_sequence), which per row cost a tenth of a drain.
    for first in range(0, len(deliveries), _ROWS_PER_INSERT):
        chunk = deliveries[first : first + _ROWS_PER_INSERT]
        conn.execute(
            "INSERT INTO evq_delivery (event_seq, receiver, state, due_at, created_at) VALUES "
            + ", ".join(["(?, ?, 'pending', ?, ?)"] * len(chunk)),
            [value for row in chunk for value in row],
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


# Rows of one INSERT: 4 values each, well under SQLite's limit of bound values.
_ROWS_PER_INSERT = 250


def lease(
    conn: sqlite3.Connection, routing: Routing, owner: str, limit: int, now: float
) -> tuple[list[Lease], int]:
    """Lease up to `limit` due deliveries to `owner` as `rules.lease_plan` decides; return the
    leases and how many deliveries became dead letters instead."""
    selected = ""
    params: tuple[Any, ...] = (now, limit)
    if routing.selected is not None:
        selected = f" AND d.{_SELECTED}"
        params = (now, _selected(routing.selected), limit)
    rows = conn.execute(
        "SELECT d.id, d.receiver, d.state, d.attempt, d.attempt_base, d.failures, d.lease_owner,"
        " d.started_at, d.replay, e.id, e.name,"
        # The payload is read as bytes: a damaged or forged row may hold text that is not
        # UTF-8, which sqlite3 refuses to return and which would stall the queue at this row.
        " CAST(e.payload AS BLOB), e.published_at, d.due_at, e.headers"
        # A LEFT JOIN: a delivery whose event row is gone is damage to report, not to skip.
        " FROM evq_delivery d LEFT JOIN evq_event e ON e.seq = d.event_seq"
        f" WHERE d.due_at IS NOT NULL AND d.due_at <= ?{selected} ORDER BY d.due_at, d.id LIMIT ?",
        params,
    ).fetchall()
    # Rows whose due time is not a number sort after every due one: looked for once the due
    # ones no longer fill a lease, so that a backlog pays nothing for them.
    if len(rows) < limit and _has_damaged_due_times(conn):
        rows += conn.execute(
            "SELECT d.id, d.receiver, d.state, d.attempt, d.attempt_base, d.failures,"
            " NULL, NULL, NULL, NULL, NULL, NULL, NULL, d.due_at, NULL"
            f" FROM evq_delivery d WHERE d.due_at >= {_TEXT} LIMIT ?",
            (limit,),
        ).fetchall()
    candidates = []
    damaged = []
    candidate = rules.Candidate._make  # from a tuple, without keywords: thousands a second
    for row in rows:
        # The usual row, checked at the cost of one comparison; any other is looked at closely.
        if (type(row[1]), type(row[3]), type(row[4]), type(row[5]), type(row[9])) != _INTACT:
            damaged.append((now, _damage(row), row[0]))
            continue
        raw = row[11]
        candidates.append(
            candidate((str(row[0]), *row[1:3], *row[3:6], payload_text(raw), len(raw), row))
        )
    plan = rules.lease_plan(candidates, routing)
    for lost in plan.lost:
        row = lost.fetched
        conn.execute(
            "INSERT OR REPLACE INTO evq_attempt VALUES (?, ?, ?, ?, ?, 'lost', ?)",
            (row[0], row[3], row[6], row[7], now, rules.LOST_WORKER_ERROR),
        )
    if damaged or plan.dead:
        conn.executemany(
            "UPDATE evq_delivery SET state = 'dead', due_at = NULL, finished_at = ?,"
            " last_error = ?, lease_owner = NULL WHERE id = ?",
            [*damaged, *((now, reason, c.fetched[0]) for c, reason in plan.dead)],
        )
    leases = []
    taken = []
    lease = Lease._make
    for c, lease_seconds in plan.take:
        row = c.fetched
        leases.append(
            lease(
                (
                    c.delivery_id,
                    c.attempt + 1,
                    c.attempt_base,
                    c.failures,
                    c.receiver,
                    row[9],
                    row[10],
                    c.payload,
                    row[12],
                    lease_seconds,
                    bool(row[8]),
                    row[14],
                )
            )
        )
        taken.append((now + lease_seconds, owner, now, row[0]))
    conn.executemany(
        "UPDATE evq_delivery SET state = 'running', attempt = attempt + 1,"
        " due_at = ?, lease_owner = ?, started_at = ? WHERE id = ?",
        taken,
    )
    return leases, len(plan.dead) + len(damaged)


# The types of (receiver, attempt, attempt_base, failures, event id) in an intact row.
_INTACT = (str, int, int, int, str)


def _damage(row: Sequence[Any]) -> str:
    """Why a fetched delivery row cannot be leased: it was damaged (written by hand, by a bug,
    by a failing disk). Such a row becomes a dead letter, and the queue goes on."""
    if row[9] is None and row[13] is not None and not isinstance(row[13], (int, float)):
        return f"stored delivery row is damaged: due_at is {row[13]!r}, not a time"
    if row[9] is None:
        return "stored delivery row is damaged: its event is missing"
    columns = ("receiver", "attempt", "attempt_base", "failures")
    for column, value, kind in zip(
        columns, (row[1], row[3], row[4], row[5]), _INTACT, strict=False
    ):
        if type(value) is not kind:
            return f"stored delivery row is damaged: {column} is {value!r}, not {kind.__name__}"
    return "stored delivery row is damaged"


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
        # The id as the lease has it: SQLite compares it with the integer key as a number.
        key = (o.lease.delivery_id, o.lease.attempt)
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
        [(until, lease.delivery_id, lease.attempt) for lease, until in leases],
    )
    return cursor.rowcount
