"""What `evq status`, `events`, `show`, `dlq`, `replay` and `prune` read and write on
PostgreSQL.

Each function takes a connection inside the transaction (or snapshot) its caller holds. The
states a person sees, replay targets and what may be pruned come from `evq.storage.rules`;
the SQL here only selects and stores, with filters assembled from `rules.STATE_CONDITIONS`.
Time ranges are id ranges first (an event id begins with the millisecond it was published
in), then exact comparisons of `published_at`.
"""

from __future__ import annotations

import re
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
from evq.storage.postgres.delivering import next_due, row_ids

# See the SQLite backend: an id's time and `published_at` are two reads of the clock.
_ID_TIME_MARGIN = 1.0
_DEAD_SELECT = (
    f"SELECT {rows.DEAD_LETTER_COLUMNS} FROM evq_delivery d JOIN evq_event e ON e.seq = d.event_seq"
)
# The stored fields that `rules.STATE_CONDITIONS` splits states by; one parameter: now.
_SPLIT = "failures > 0, coalesce(due_at > %s, false)"
_SEGMENT = "[A-Za-z0-9_-]+"


# Status


def status(conn: Any, now: float) -> QueueStatus:
    """Read what the queue holds and does now from indexes and counters (in one snapshot)."""
    published, due, delayed = conn.execute(
        "SELECT coalesce((SELECT sum(value) FROM evq_counter WHERE name = 'dispatched'), 0)"
        " + count(*), count(*), count(*) FILTER (WHERE due_at > %s)"
        " FROM evq_event WHERE due_at IS NOT NULL",
        (now,),
    ).fetchone()
    groups = [
        StoredCounts(state, failed, later, count)
        for state, failed, later, count in conn.execute(
            f"SELECT state, {_SPLIT}, count(*) FROM evq_delivery"
            " WHERE due_at IS NOT NULL GROUP BY 1, 2, 3",
            (now,),
        )
        if state in ("pending", "running")
    ]
    dead = conn.execute("SELECT count(*) FROM evq_delivery WHERE state = 'dead'").fetchone()[0]
    groups.append(StoredCounts("dead", False, False, int(dead)))
    counts = rules.count_states(groups)
    done, failed = conn.execute(
        "SELECT coalesce(sum(done), 0), coalesce(sum(failed), 0) FROM evq_stat"
        " WHERE second >= %s AND second < %s",
        (int(now) - rules.RATE_WINDOW_SECONDS, int(now)),
    ).fetchone()
    workers = conn.execute(
        f"SELECT {rows.WORKER_COLUMNS} FROM evq_worker WHERE seen_at >= %s ORDER BY started_at, id",
        (now - rules.WORKER_SEEN_WITHIN_SECONDS,),
    ).fetchall()
    oldest_due, _ = next_due(conn)
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


def finished_per_minute(conn: Any, minutes: int, now: float) -> list[MinuteCount]:
    """Deliveries finished per minute since `minutes` whole minutes before now's minute."""
    start = (int(now) // 60 - minutes) * 60
    found = conn.execute(
        "SELECT second / 60 * 60, sum(done), sum(failed) FROM evq_stat"
        " WHERE second >= %s AND second <= %s GROUP BY 1 ORDER BY 1",
        (start, int(now)),
    ).fetchall()
    return [MinuteCount(float(minute), int(done), int(failed)) for minute, done, failed in found]


# Events


def events(
    conn: Any,
    selection: EventSelection,
    state: DeliveryState | None,
    limit: int | None,
    now: float,
) -> list[EventRecord]:
    """The selected events, newest first, each with its delivery counts by state."""
    where, params = event_filter(selection)
    if state is not None:
        clause, more = _has_state(state, now)
        where += f" AND {clause}"
        params.extend(more)
    sql = f"SELECT {rows.EVENT_COLUMNS} FROM evq_event e WHERE {where} ORDER BY e.id DESC"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    found = conn.execute(sql, params).fetchall()
    counts = _delivery_counts(conn, [row[0] for row in found], now)
    return [rows.event_record(row, counts.get(row[0]) or rules.zero_counts(), now) for row in found]


def event(conn: Any, event_id: str, now: float) -> EventRecord | None:
    """One event with every delivery and its attempts, or None."""
    row = conn.execute(
        f"SELECT {rows.EVENT_COLUMNS} FROM evq_event e WHERE e.id = %s", (event_id,)
    ).fetchone()
    if row is None:
        return None
    seq = row[0]
    history: dict[int, list[AttemptRecord]] = {}
    for delivery_id, *attempt in conn.execute(
        "SELECT delivery_id, attempt, outcome, worker, started_at, finished_at, error"
        " FROM evq_attempt WHERE delivery_id IN"
        " (SELECT id FROM evq_delivery WHERE event_seq = %s) ORDER BY delivery_id, attempt",
        (seq,),
    ):
        history.setdefault(delivery_id, []).append(AttemptRecord(*attempt))
    deliveries = tuple(
        rows.delivery_record(d, tuple(history.get(d[0], ())), now)
        for d in conn.execute(
            f"SELECT {rows.DELIVERY_COLUMNS} FROM evq_delivery WHERE event_seq = %s ORDER BY id",
            (seq,),
        )
    )
    counts = rules.zero_counts()
    for delivery in deliveries:
        counts[delivery.state] += 1
    return rows.event_record(row, counts, now, deliveries)


def _delivery_counts(
    conn: Any, seqs: Sequence[int], now: float
) -> dict[int, dict[DeliveryState, int]]:
    counts: dict[int, dict[DeliveryState, int]] = {}
    if not seqs:
        return counts
    for seq, state, failed, later, count in conn.execute(
        f"SELECT event_seq, state, {_SPLIT}, count(*) FROM evq_delivery"
        " WHERE event_seq = ANY(%s) GROUP BY 1, 2, 3, 4",
        (now, list(seqs)),
    ):
        per_event = counts.setdefault(seq, rules.zero_counts())
        per_event[rules.state_of(state, failed, later)] += count
    return counts


def _has_state(state: DeliveryState, now: float) -> tuple[str, list[Any]]:
    """A clause keeping the events with a delivery in `state` (`rules.STATE_CONDITIONS`)."""
    condition = rules.STATE_CONDITIONS[state]
    clauses = [
        "d.due_at IS NOT NULL" if condition.stored in ("pending", "running") else "true",
        f"d.state = '{condition.stored}'",  # a closed set: a literal, for the partial indexes
    ]
    params: list[Any] = []
    if condition.failed is not None:
        clauses.append("d.failures > 0" if condition.failed else "d.failures = 0")
    if condition.later is not None:
        clauses.append("d.due_at > %s" if condition.later else "d.due_at <= %s")
        params.append(now)
    subquery = f"SELECT d.event_seq FROM evq_delivery d WHERE {' AND '.join(clauses)}"
    if state in ("pending", "scheduled"):
        # An event not dispatched yet counts as pending (scheduled while its delay runs).
        comparison = ">" if state == "scheduled" else "<="
        subquery += f" UNION ALL SELECT seq FROM evq_event WHERE due_at {comparison} %s"
        params.append(now)
    if state == "done":
        return f"e.due_at IS NULL AND EXISTS ({subquery} AND d.event_seq = e.seq)", params
    return f"e.seq IN ({subquery})", params


def event_filter(selection: EventSelection) -> tuple[str, list[Any]]:
    """Return the WHERE clause (on `evq_event e`) and parameters of a selection."""
    clauses = ["true"]
    params: list[Any] = []
    if selection.name is not None:
        if "*" not in selection.name:
            clauses.append("e.name = %s")
            params.append(selection.name)
        else:
            clauses.append("e.name ~ %s")
            params.append(pattern_regex(selection.name))
    if selection.since is not None:
        clauses.append("e.id >= %s AND e.published_at >= %s")
        params.extend([event_id_floor(selection.since - _ID_TIME_MARGIN), selection.since])
    if selection.until is not None:
        clauses.append("e.id < %s AND e.published_at < %s")
        params.extend([event_id_floor(selection.until + _ID_TIME_MARGIN), selection.until])
    if selection.before is not None:
        clauses.append("e.id < %s")
        params.append(selection.before)
    return " AND ".join(clauses), params


def pattern_regex(pattern: str) -> str:
    """A subscription pattern as a PostgreSQL regular expression matching whole names, as
    `evq.names.matches` does."""
    parts = []
    for segment in pattern.split("."):
        if segment == "**":
            parts.append(rf"{_SEGMENT}(\.{_SEGMENT})*")
        elif segment == "*":
            parts.append(_SEGMENT)
        else:
            parts.append(re.sub(r"([^A-Za-z0-9_])", r"\\\1", segment))
    return "^" + r"\.".join(parts) + "$"


# Dead letters


def dead_letters(
    conn: Any,
    ids: Sequence[str],
    receiver: str | None,
    older_than: float | None,
    limit: int | None,
) -> list[DeadLetter]:
    """Dead deliveries with their event, newest first."""
    clauses = ["d.state = 'dead'"]
    params: list[Any] = []
    if ids:
        clauses.append("d.id = ANY(%s)")
        params.append(row_ids(ids))
    if receiver is not None:
        clauses.append("d.receiver = %s")
        params.append(receiver)
    if older_than is not None:
        clauses.append("d.finished_at < %s")
        params.append(older_than)
    sql = f"{_DEAD_SELECT} WHERE {' AND '.join(clauses)} ORDER BY d.finished_at DESC, d.id DESC"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    return [rows.dead_letter_record(row) for row in conn.execute(sql, params).fetchall()]


def redrive(conn: Any, ids: Sequence[str], now: float) -> int:
    """Put dead deliveries back in the queue, due now, with a fresh count; return how many."""
    cursor = conn.execute(
        # `attempt` keeps counting: it fences off stale workers and keys the history; the
        # receiver's count restarts from `attempt_base`.
        "UPDATE evq_delivery SET state = 'pending', due_at = %s, attempt_base = attempt,"
        " failures = 0, lease_owner = NULL, finished_at = NULL"
        " WHERE state = 'dead' AND id = ANY(%s)",
        (now, row_ids(ids)),
    )
    return int(cursor.rowcount)


def purge(conn: Any, ids: Sequence[str]) -> int:
    """Delete dead deliveries and their history; return how many."""
    rows = row_ids(ids)
    conn.execute(
        "DELETE FROM evq_attempt WHERE delivery_id = ANY(%s) AND delivery_id IN"
        " (SELECT id FROM evq_delivery WHERE state = 'dead')",
        (rows,),
    )
    cursor = conn.execute("DELETE FROM evq_delivery WHERE state = 'dead' AND id = ANY(%s)", (rows,))
    return int(cursor.rowcount)


# Replay and retention


def replay_step(
    conn: Any,
    selection: EventSelection,
    receiver: str | None,
    after: str | None,
    batch_size: int,
    now: float,
    dry_run: bool,
) -> tuple[int, str | None]:
    """Create (or count) the replay deliveries of the next batch of dispatched events."""
    where, params = event_filter(selection)
    where += " AND e.due_at IS NULL"
    if after is not None:
        where += " AND e.id > %s"
        params.append(after)
    events = conn.execute(
        f"SELECT e.seq, e.id FROM evq_event e WHERE {where} ORDER BY e.id LIMIT %s",
        (*params, batch_size),
    ).fetchall()
    had: dict[int, list[str]] = {seq: [] for seq, _ in events}
    if receiver is None and had:
        for seq, name in conn.execute(
            "SELECT event_seq, receiver FROM evq_delivery WHERE event_seq = ANY(%s) ORDER BY id",
            (list(had),),
        ):
            had[seq].append(name)
    rows = [
        (seq, target)
        for seq, receivers in had.items()
        for target in rules.replay_receivers(receivers, receiver)
    ]
    if rows and not dry_run:
        conn.execute(
            "INSERT INTO evq_delivery (event_seq, receiver, state, due_at, created_at, replay)"
            " SELECT r.seq, r.receiver, 'pending', %s, %s, true"
            " FROM unnest(%s::bigint[], %s::text[]) WITH ORDINALITY AS r(seq, receiver, n)"
            " ORDER BY r.n",
            (now, now, [seq for seq, _ in rows], [target for _, target in rows]),
        )
    following = events[-1][1] if len(events) == batch_size else None
    return len(rows), following


def prune_step(
    conn: Any, older_than: float, after: str | None, size: int, dry_run: bool
) -> tuple[int, str | None]:
    """Delete (or count) the finished events among the next `size` published before
    `older_than`, walking the id index from the id `after`."""
    where = "e.id < %s AND e.published_at < %s"
    params: list[Any] = [event_id_floor(older_than + _ID_TIME_MARGIN), older_than]
    if after is not None:
        where += " AND e.id > %s"
        params.append(after)
    rows = conn.execute(
        "SELECT e.seq, e.id, e.due_at IS NULL AND e.dispatched_at IS NOT NULL,"
        " (SELECT count(*) FROM evq_delivery d WHERE d.event_seq = e.seq AND d.state <> 'done')"
        f" FROM evq_event e WHERE {where} ORDER BY e.id LIMIT %s",
        (*params, size),
    ).fetchall()
    finished = [
        seq for seq, _, dispatched, unfinished in rows if rules.is_finished(dispatched, unfinished)
    ]
    if finished and not dry_run:
        conn.execute(
            "DELETE FROM evq_attempt WHERE delivery_id IN"
            " (SELECT id FROM evq_delivery WHERE event_seq = ANY(%s))",
            (finished,),
        )
        conn.execute("DELETE FROM evq_delivery WHERE event_seq = ANY(%s)", (finished,))
        conn.execute("DELETE FROM evq_event WHERE seq = ANY(%s)", (finished,))
    following = rows[-1][1] if len(rows) == size else None
    return len(finished), following


def forget_old_statistics(conn: Any, now: float) -> None:
    """Delete delivery statistics and heartbeats of workers older than a day."""
    conn.execute("DELETE FROM evq_stat WHERE second < %s", (int(now - rules.FORGET_SECONDS),))
    conn.execute("DELETE FROM evq_worker WHERE seen_at < %s", (now - rules.FORGET_SECONDS,))
