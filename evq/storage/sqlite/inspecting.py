"""What `evq status`, `events`, `show`, `dlq`, `replay` and `prune` read and write on SQLite.

Each function takes a connection inside the transaction (or read) its caller holds. The
states a person sees, replay targets and what may be pruned come from `evq.storage.rules`;
the SQL here only selects and stores. Time ranges are id ranges: an event id begins with the
millisecond it was published in (`evq.ids.event_id_floor`), so no index on `published_at` is
kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from evq.ids import event_id_floor
from evq.storage import rows, rules
from evq.storage.contract import (
    AttemptRecord,
    DeadLetter,
    DeliveryState,
    EventRecord,
    EventSelection,
    MinuteCount,
    QueueStatus,
    StoredCounts,
)
from evq.storage.sqlite.connection import chunks
from evq.storage.sqlite.delivering import CURSOR, next_due, row_id

# Time ranges of events are looked up as id ranges this much wider, then `published_at` is
# compared exactly: an id's time and `published_at` are two reads of the clock microseconds
# apart (and a ULID keeps its last millisecond if the clock steps back a little).
_ID_TIME_MARGIN = 1.0
_DEAD_SELECT = (
    f"SELECT {rows.DEAD_LETTER_COLUMNS}"
    # A LEFT JOIN: a dead letter whose event row is gone (damage) is still listed.
    " FROM evq_delivery d LEFT JOIN evq_event e ON e.seq = d.event_seq"
)
# The stored fields that `rules.STATE_CONDITIONS` splits states by; one parameter: now.
_FAILED = "failures > 0"
_LATER = "coalesce(due_at > ?, 0)"


# Status


def status(conn: sqlite3.Connection, now: float) -> QueueStatus:
    """Read what the queue holds and does now from indexes and counters only.

    `published` is the `dispatched` counter plus the events not dispatched yet. The cost grows
    with the backlog (unfinished deliveries) and the dead letters, never with the number of
    finished events kept in the log.
    """
    # One statement, so one snapshot: a dispatch in between cannot count an event twice or
    # not at all.
    published, due, delayed = conn.execute(
        "SELECT coalesce((SELECT value FROM evq_counter WHERE name = 'dispatched'), 0)"
        " + count(*), count(*), coalesce(sum(due_at > ?), 0)"
        f" FROM evq_event WHERE seq > {CURSOR} AND due_at IS NOT NULL",
        (now,),
    ).fetchone()
    groups = [
        StoredCounts(state, bool(failed), bool(later), count)
        for state, failed, later, count in conn.execute(
            f"SELECT state, {_FAILED}, {_LATER}, count(*) FROM evq_delivery"
            " WHERE due_at IS NOT NULL GROUP BY 1, 2, 3",
            (now,),
        )
        # A state no evq wrote (a damaged row) is left out rather than fail the count.
        if state in ("pending", "running")
    ]
    dead = int(conn.execute("SELECT count(*) FROM evq_delivery WHERE state = 'dead'").fetchone()[0])
    groups.append(StoredCounts("dead", False, False, dead))
    counts = rules.count_states(groups)
    done, failed = conn.execute(
        "SELECT coalesce(sum(done), 0), coalesce(sum(failed), 0) FROM evq_stat"
        " WHERE second >= ? AND second < ?",
        (int(now) - rules.RATE_WINDOW_SECONDS, int(now)),
    ).fetchone()
    workers = conn.execute(
        f"SELECT {rows.WORKER_COLUMNS} FROM evq_worker WHERE seen_at >= ? ORDER BY started_at, id",
        (now - rules.WORKER_SEEN_WITHIN_SECONDS,),
    ).fetchall()
    oldest_due = next_due(conn)
    return QueueStatus(
        time=now,
        published=int(published),
        awaiting_dispatch=int(due),
        delayed=int(delayed),
        pending=counts["pending"],
        scheduled=counts["scheduled"],
        retrying=counts["retrying"],
        running=counts["running"],
        dead=counts["dead"],
        oldest_due_at=oldest_due if oldest_due is not None and oldest_due <= now else None,
        delivered_last_minute=int(done),
        failed_last_minute=int(failed),
        workers=[rows.worker_record(row) for row in workers],
    )


def finished_per_minute(conn: sqlite3.Connection, minutes: int, now: float) -> list[MinuteCount]:
    """Deliveries finished per minute since `minutes` whole minutes before now's minute."""
    start = (int(now) // 60 - minutes) * 60
    found = conn.execute(
        "SELECT second / 60 * 60, sum(done), sum(failed) FROM evq_stat"
        " WHERE second >= ? AND second <= ? GROUP BY 1 ORDER BY 1",
        (start, int(now)),
    ).fetchall()
    return [MinuteCount(float(minute), int(done), int(failed)) for minute, done, failed in found]


# Events


def events(
    conn: sqlite3.Connection,
    selection: EventSelection,
    state: DeliveryState | None,
    limit: int | None,
    now: float,
) -> list[EventRecord]:
    """The selected events, newest first, each with its delivery counts by state."""
    where, params = event_filter(conn, selection)
    if state is not None:
        clause, more = _has_state(state, now)
        where += f" AND {clause}"
        params.extend(more)
    # Ids sort by publish time: newest first through the id index, which also bounds
    # --since/--until (see `event_filter`).
    sql = f"SELECT {rows.EVENT_COLUMNS} FROM evq_event e WHERE {where} ORDER BY e.id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    found = conn.execute(sql, params).fetchall()
    counts = _delivery_counts(conn, [row[0] for row in found], now)
    return [rows.event_record(row, counts.get(row[0]) or rules.zero_counts(), now) for row in found]


def event(conn: sqlite3.Connection, event_id: str, now: float) -> EventRecord | None:
    """One event with every delivery and its attempts, or None."""
    row = conn.execute(
        f"SELECT {rows.EVENT_COLUMNS} FROM evq_event e WHERE e.id = ?", (event_id,)
    ).fetchone()
    if row is None:
        return None
    seq = row[0]
    history: dict[int, list[AttemptRecord]] = {}
    for delivery_id, attempt, worker, started_at, finished_at, outcome, error in conn.execute(
        "SELECT delivery_id, attempt, worker, started_at, finished_at, outcome, error"
        " FROM evq_attempt WHERE delivery_id IN"
        " (SELECT id FROM evq_delivery WHERE event_seq = ?) ORDER BY delivery_id, attempt",
        (seq,),
    ):
        history.setdefault(delivery_id, []).append(
            AttemptRecord(
                attempt=rows.count(attempt),
                outcome=rows.text(outcome),
                worker=rows.optional_text(worker),
                started_at=rows.timestamp(started_at),
                finished_at=rows.timestamp(finished_at) or 0.0,
                error=rows.optional_text(error),
            )
        )
    deliveries = tuple(
        rows.delivery_record(d, tuple(history.get(d[0], ())), now)
        for d in conn.execute(
            f"SELECT {rows.DELIVERY_COLUMNS} FROM evq_delivery WHERE event_seq = ? ORDER BY id",
            (seq,),
        )
    )
    counts = rules.zero_counts()
    for delivery in deliveries:
        counts[delivery.state] += 1
    return rows.event_record(row, counts, now, deliveries)


def _delivery_counts(
    conn: sqlite3.Connection, seqs: Sequence[int], now: float
) -> dict[int, dict[DeliveryState, int]]:
    counts: dict[int, dict[DeliveryState, int]] = {}
    for chunk in chunks(seqs):
        marks = ",".join("?" * len(chunk))
        for seq, state, failed, later, count in conn.execute(
            f"SELECT event_seq, state, {_FAILED}, {_LATER}, count(*) FROM evq_delivery"
            f" WHERE event_seq IN ({marks}) GROUP BY 1, 2, 3, 4",
            (now, *chunk),
        ):
            per_event = counts.setdefault(seq, rules.zero_counts())
            per_event[rows.state_of(state, bool(failed), bool(later))] += count
    return counts


def _has_state(state: DeliveryState, now: float) -> tuple[str, list[Any]]:
    """A clause keeping the events with a delivery in `state` (`rules.STATE_CONDITIONS`)."""
    condition = rules.STATE_CONDITIONS[state]
    # Unfinished deliveries and dead ones are found through partial indexes (due_at, dead).
    clauses = [
        "d.due_at IS NOT NULL" if condition.stored in ("pending", "running") else "1",
        # A literal (the states are a closed set), so that the partial indexes apply.
        f"d.state = '{condition.stored}'",
    ]
    params: list[Any] = []
    if condition.failed is not None:
        clauses.append("d.failures > 0" if condition.failed else "d.failures = 0")
    if condition.later is not None:
        clauses.append("d.due_at > ?" if condition.later else "d.due_at <= ?")
        params.append(now)
    subquery = f"SELECT d.event_seq FROM evq_delivery d WHERE {' AND '.join(clauses)}"
    if state in ("pending", "scheduled"):
        # An event not dispatched yet counts as pending (scheduled while its delay runs).
        comparison = ">" if state == "scheduled" else "<="
        subquery += (
            f" UNION ALL SELECT seq FROM evq_event WHERE seq > {CURSOR} AND due_at {comparison} ?"
        )
        params.append(now)
    if state == "done":
        return f"e.due_at IS NULL AND EXISTS ({subquery} AND d.event_seq = e.seq)", params
    return f"e.seq IN ({subquery})", params


def event_filter(conn: sqlite3.Connection, selection: EventSelection) -> tuple[str, list[Any]]:
    """Return the WHERE clause (on `evq_event e`) and parameters of a selection."""
    clauses = ["1"]
    params: list[Any] = []
    if selection.name is not None:
        if "*" not in selection.name:
            clauses.append("e.name = ?")
            params.append(selection.name)
        else:
            from evq.names import matches  # the publishing path never matches patterns

            conn.create_function("evq_name_matches", 2, matches, deterministic=True)
            # The literal segments before the first wildcard are compared in SQL first, so
            # that Python's matcher runs only for names that can match.
            literal = selection.name.split("*", 1)[0]
            if literal:
                clauses.append("substr(e.name, 1, ?) = ?")
                params.extend([len(literal), literal])
            clauses.append("evq_name_matches(?, e.name)")
            params.append(selection.name)
    if selection.since is not None:
        clauses.append("e.id >= ? AND e.published_at >= ?")
        params.extend([event_id_floor(selection.since - _ID_TIME_MARGIN), selection.since])
    if selection.until is not None:
        clauses.append("e.id < ? AND e.published_at < ?")
        params.extend([event_id_floor(selection.until + _ID_TIME_MARGIN), selection.until])
    if selection.before is not None:
        clauses.append("e.id < ?")
        params.append(selection.before)
    return " AND ".join(clauses), params


# Dead letters


def dead_letters(
    conn: sqlite3.Connection,
    ids: Sequence[str],
    receiver: str | None,
    older_than: float | None,
    limit: int | None,
) -> list[DeadLetter]:
    """Dead deliveries with their event, newest first."""
    clauses = ["d.state = 'dead'"]
    params: list[Any] = []
    if ids:
        wanted = row_ids(ids)
        clauses.append(f"d.id IN ({','.join('?' * len(wanted))})")
        params.extend(wanted)
    if receiver is not None:
        clauses.append("d.receiver = ?")
        params.append(receiver)
    if older_than is not None:
        clauses.append("d.finished_at < ?")
        params.append(older_than)
    sql = f"{_DEAD_SELECT} WHERE {' AND '.join(clauses)} ORDER BY d.finished_at DESC, d.id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [rows.dead_letter_record(row) for row in conn.execute(sql, params)]


def row_ids(ids: Sequence[str]) -> list[int]:
    """The row ids among opaque ids; ids that cannot name a row here are left out."""
    return [value for value in map(row_id, ids) if value is not None]


def redrive(conn: sqlite3.Connection, ids: Sequence[str], now: float) -> int:
    """Put dead deliveries back in the queue, due now, with a fresh count; return how many."""
    total = 0
    for chunk in chunks(row_ids(ids)):
        marks = ",".join("?" * len(chunk))
        total += conn.execute(
            # `attempt` keeps counting: it fences off stale workers and keys the history; the
            # receiver's count restarts from `attempt_base`.
            "UPDATE evq_delivery SET state = 'pending', due_at = ?,"
            " attempt_base = attempt, failures = 0, lease_owner = NULL, finished_at = NULL"
            f" WHERE state = 'dead' AND id IN ({marks})",
            (now, *chunk),
        ).rowcount
    return total


def purge(conn: sqlite3.Connection, ids: Sequence[str]) -> int:
    """Delete dead deliveries and their history; return how many."""
    total = 0
    for chunk in chunks(row_ids(ids)):
        marks = ",".join("?" * len(chunk))
        conn.execute(
            f"DELETE FROM evq_attempt WHERE delivery_id IN ({marks}) AND delivery_id IN"
            " (SELECT id FROM evq_delivery WHERE state = 'dead')",
            chunk,
        )
        total += conn.execute(
            f"DELETE FROM evq_delivery WHERE state = 'dead' AND id IN ({marks})", chunk
        ).rowcount
    return total


# Replay and retention


def replay_step(
    conn: sqlite3.Connection,
    selection: EventSelection,
    receiver: str | None,
    after: str | None,
    batch_size: int,
    now: float,
    dry_run: bool,
) -> tuple[int, str | None]:
    """Create (or count) the replay deliveries of the next batch of dispatched events."""
    where, params = event_filter(conn, selection)
    where += " AND e.due_at IS NULL"
    if after is not None:
        where += " AND e.id > ?"
        params.append(after)
    events = conn.execute(
        f"SELECT e.seq, e.id FROM evq_event e WHERE {where} ORDER BY e.id LIMIT ?",
        (*params, batch_size),
    ).fetchall()
    had: dict[int, list[str]] = {seq: [] for seq, _ in events}
    if receiver is None:
        for chunk in chunks(list(had)):
            marks = ",".join("?" * len(chunk))
            for seq, name in conn.execute(
                "SELECT event_seq, receiver FROM evq_delivery"
                f" WHERE event_seq IN ({marks}) ORDER BY id",
                chunk,
            ):
                had[seq].append(name)
    rows = [
        (seq, target, now, now)
        for seq, receivers in had.items()
        for target in rules.replay_receivers(receivers, receiver)
    ]
    if not dry_run:
        conn.executemany(
            "INSERT INTO evq_delivery (event_seq, receiver, state, due_at, created_at, replay)"
            " VALUES (?, ?, 'pending', ?, ?, 1)",
            rows,
        )
    following = events[-1][1] if len(events) == batch_size else None
    return len(rows), following


def prune_step(
    conn: sqlite3.Connection, older_than: float, after: str | None, size: int, dry_run: bool
) -> tuple[int, str | None]:
    """Delete (or count) the finished events among the next `size` published before
    `older_than`, walking the id index (ids sort by publish time) from the id `after`, so that
    old events that must be kept are looked at once per walk, not once per batch."""
    where = "e.id < ? AND e.published_at < ?"
    params: list[Any] = [event_id_floor(older_than + _ID_TIME_MARGIN), older_than]
    if after is not None:
        where += " AND e.id > ?"
        params.append(after)
    rows = conn.execute(
        "SELECT e.seq, e.id, e.due_at IS NULL AND e.dispatched_at IS NOT NULL,"
        " (SELECT count(*) FROM evq_delivery d WHERE d.event_seq = e.seq AND d.state <> 'done')"
        f" FROM evq_event e WHERE {where} ORDER BY e.id LIMIT ?",
        (*params, size),
    ).fetchall()
    finished = [
        seq
        for seq, _, dispatched, unfinished in rows
        if rules.is_finished(bool(dispatched), unfinished)
    ]
    if not dry_run:
        for chunk in chunks(finished):
            marks = ",".join("?" * len(chunk))
            conn.execute(
                "DELETE FROM evq_attempt WHERE delivery_id IN"
                f" (SELECT id FROM evq_delivery WHERE event_seq IN ({marks}))",
                chunk,
            )
            conn.execute(f"DELETE FROM evq_delivery WHERE event_seq IN ({marks})", chunk)
            conn.execute(f"DELETE FROM evq_event WHERE seq IN ({marks})", chunk)
    following = rows[-1][1] if len(rows) == size else None
    return len(finished), following


def forget_old_statistics(conn: sqlite3.Connection, now: float) -> None:
    """Delete delivery statistics and heartbeats of workers older than a day."""
    conn.execute("DELETE FROM evq_stat WHERE second < ?", (int(now - rules.FORGET_SECONDS),))
    conn.execute("DELETE FROM evq_worker WHERE seen_at < ?", (now - rules.FORGET_SECONDS,))
