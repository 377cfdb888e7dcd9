"""Publishing and delivering on PostgreSQL: insert events, fan them out, lease, record outcomes.

Every function runs on a connection inside the transaction its caller holds (`Connection`'s,
or an application's own for the outbox). Which deliveries a lease takes, and which become dead
letters, is decided by `evq.storage.rules`; this module only fetches and stores.

Workers never wait for each other: events to fan out and due deliveries are taken with
`FOR UPDATE SKIP LOCKED`, and the shared counters are written last in a transaction, in shards.
Times the caller gives (retry times, lease expiries) are on its clock; `shift` carries the
caller's clock reading so that the server moves them onto its own (None: the caller gave
`now` itself, and its times are taken as they are).
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from evq.storage import rules
from evq.storage.contract import Lease, NewEvent, Outcome, Routing
from evq.storage.postgres.queries import QUERIES

SHARDS = 16
# From this many events a batch without keys streams in with COPY (`stream_events`): two round
# trips more than one INSERT, but the server parses no JSON and the client escapes no arrays.
COPY_FROM = 200
# Delivery and event ids are bigints: an id outside that range names no row here.
_MAX_ROW_ID = 2**63 - 1


def shard_of(owner: str) -> int:
    """The counter shard a worker writes to: stable for its process, spread over workers."""
    return zlib.crc32(owner.encode()) % SHARDS


def row_id(text: str) -> int | None:
    """Return the row id an opaque id names, or None if it names no row of this backend."""
    # Only the one way evq writes a number ("7", never "007"): ids are opaque text, and "07"
    # is not an id this backend gave out.
    if not text.isascii() or not text.isdigit() or (text[0] == "0" and text != "0"):
        return None
    value = int(text)
    return value if value <= _MAX_ROW_ID else None


def row_ids(ids: Sequence[str]) -> list[int]:
    """The row ids among opaque ids; ids that cannot name a row here are left out."""
    return [value for value in map(row_id, ids) if value is not None]


def insert_events(cursor: Any, events: Sequence[NewEvent], *, now: float | None) -> list[str]:
    """Insert `events` with `cursor` (psycopg 3 or psycopg2) in one statement; return their
    ids. An event whose key is stored already is not inserted: its place holds the first
    event's id. With `now` None, each delay runs from the server's clock."""
    rows = json.dumps(
        [
            [
                e.id,
                e.name,
                e.payload,
                e.published_at,
                None if now is None else e.due_at,
                max(0.0, e.due_at - e.published_at),
                e.key,
                e.headers,
            ]
            for e in events
        ]
    )
    if _keyless(events):
        cursor.execute(QUERIES["insert_events_without_keys"], {"events": rows})
        (count,) = cursor.fetchone()
        if count != len(events):  # pragma: no cover - a broken promise of the server
            raise RuntimeError(f"stored {count} of {len(events)} events")
        return [e.id for e in events]
    cursor.execute(QUERIES["insert_events"], {"events": rows})
    inserted = {row[0] for row in cursor.fetchall()}
    missing = [e.key for e in events if e.id not in inserted and e.key is not None]
    if not missing:
        return [e.id for e in events]
    cursor.execute(QUERIES["ids_of_keys"], {"keys": missing})
    first = dict(cursor.fetchall())
    return [e.id if e.id in inserted else first[e.key] for e in events]


def copies(events: Sequence[NewEvent]) -> bool:
    """Whether `events` go in with `stream_events`: a large batch none of which has a key (one
    with a key may be a duplicate, which only `insert_events`' ON CONFLICT can skip)."""
    return len(events) >= COPY_FROM and _keyless(events)


def stream_events(
    conn: Any, batches: Iterable[Sequence[NewEvent]], *, now: float | None
) -> list[str]:
    """Store the events of `batches`, in order, inside the transaction `conn` (psycopg 3)
    holds, and wake idle workers when it commits; return their ids. A run of batches without
    keys streams in with one COPY, which the server stores while the next batch is prepared;
    a batch with keys goes in with `insert_events`. With `now` None, each delay runs from the
    server's clock, read here first. An exception raised by `batches` ends the COPY; the
    caller's transaction then rolls back."""
    cursor = conn.cursor()
    start = None
    if now is None:
        ((start,),) = cursor.execute(QUERIES["server_now"]).fetchall()
    ids: list[str] = []
    for keyless, run in itertools.groupby(batches, key=_keyless):
        if not keyless:
            for batch in run:
                ids += insert_events(cursor, batch, now=now)
            continue
        with cursor.copy(QUERIES["copy_events"]) as copy:
            write = copy.write_row
            for batch in run:
                for e in batch:
                    if start is None:
                        due_at = e.due_at
                    else:
                        delay = e.due_at - e.published_at
                        due_at = start + delay if delay > 0.0 else start
                    write((e.id, e.name, e.payload, e.published_at, due_at, e.headers))
                ids += [e.id for e in batch]
    cursor.execute(QUERIES["wake_workers"])
    return ids


def _keyless(events: Sequence[NewEvent]) -> bool:
    return all(e.key is None for e in events)


def next_due(conn: Any, receivers: frozenset[str] | None = None) -> tuple[float | None, float]:
    """When the earliest delivery (to one of `receivers`, if given) or event to fan out is
    due, and the server's time now."""
    if receivers is None:
        due, server_now = conn.execute(QUERIES["next_due"]).fetchone()
    else:
        due, server_now = conn.execute(
            QUERIES["next_due_of"], {"receivers": sorted(receivers)}
        ).fetchone()
    return (None if due is None else float(due)), float(server_now)


def dispatch(conn: Any, routing: Routing, now: float, limit: int) -> int:
    """Fan the next `limit` events not fanned out yet (and not being fanned out by another
    worker) out to their receivers; return how many."""
    events = conn.execute(QUERIES["events_to_dispatch"], {"limit": limit}).fetchall()
    if not events:
        return 0
    seqs, receivers, due = [], [], []
    for seq, name, due_at in events:
        for receiver in routing.receivers_for(name):
            seqs.append(seq)
            receivers.append(receiver)
            due.append(due_at)
    if seqs:
        conn.execute(
            QUERIES["insert_deliveries"],
            {"seqs": seqs, "receivers": receivers, "due": due, "now": now},
        )
    conn.execute(QUERIES["mark_dispatched"], {"seqs": [row[0] for row in events], "now": now})
    return len(events)


def count_dispatched(conn: Any, count: int, shard: int) -> None:
    """Add `count` to the events fanned out (`evq status` counts what was published from it)."""
    if count:
        conn.execute(QUERIES["count_dispatched"], {"shard": shard, "count": count})


def lease(
    conn: Any, routing: Routing, owner: str, limit: int, now: float
) -> tuple[list[Lease], int]:
    """Lease up to `limit` due deliveries to `owner` as `rules.lease_plan` decides; return the
    leases and how many deliveries became dead letters instead."""
    if limit <= 0:
        return [], 0
    if routing.selected is None:
        rows = conn.execute(QUERIES["due_deliveries"], {"now": now, "limit": limit}).fetchall()
    else:
        rows = conn.execute(
            QUERIES["due_deliveries_of"],
            {"now": now, "limit": limit, "receivers": sorted(routing.selected)},
        ).fetchall()
    by_id: dict[str, Any] = {}
    candidates = []
    for row in rows:
        delivery_id = str(row[0])
        by_id[delivery_id] = row
        candidates.append(
            rules.Candidate(
                delivery_id=delivery_id,
                receiver=row[1],
                stored=row[2],
                attempt=row[3],
                attempt_base=row[4],
                failures=row[5],
                payload=row[11],
                payload_size=len(row[11]),
            )
        )
    plan = rules.lease_plan(candidates, routing)
    if plan.lost:
        lost = [by_id[c.delivery_id] for c in plan.lost]
        conn.execute(
            QUERIES["record_lost"],
            {
                "ids": [row[0] for row in lost],
                "attempts": [row[3] for row in lost],
                "workers": [row[6] for row in lost],
                "started": [row[7] for row in lost],
                "now": now,
                "error": rules.LOST_WORKER_ERROR,
            },
        )
    if plan.dead:
        conn.execute(
            QUERIES["make_dead"],
            {
                "ids": [by_id[c.delivery_id][0] for c, _ in plan.dead],
                "reasons": [reason for _, reason in plan.dead],
                "now": now,
            },
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
                headers=row[13],
            )
        )
    if leases:
        conn.execute(
            QUERIES["take"],
            {
                "ids": [int(lease.delivery_id) for lease in leases],
                "leases": [lease.lease_seconds for lease in leases],
                "owner": owner,
                "now": now,
            },
        )
    return leases, len(plan.dead)


def record(
    conn: Any, outcomes: Sequence[Outcome], owner: str, shift: float | None, shard: int
) -> None:
    """Record `outcomes`, each only while its delivery is still at the attempt it leased; then
    their history, for those that counted, and the statistics."""
    rules.check_outcomes(outcomes)
    # One outcome per attempt (the last word), in id order, so that concurrent transactions
    # lock rows in one order.
    latest = {(o.lease.delivery_id, o.lease.attempt): o for o in outcomes}
    ordered = sorted(latest.values(), key=lambda o: int(o.lease.delivery_id))
    recorded: set[int] = set()
    for kind in ("done", "retry", "dead", "release"):
        some = [o for o in ordered if o.kind == kind]
        if some:
            rows = conn.execute(QUERIES[f"record_{kind}"], _outcome_params(kind, some, shift))
            recorded.update(row[0] for row in rows.fetchall())
    history = [
        o for o in ordered if o.started_at is not None and int(o.lease.delivery_id) in recorded
    ]
    if history:
        conn.execute(
            QUERIES["record_history"],
            {
                "ids": [int(o.lease.delivery_id) for o in history],
                "attempts": [o.lease.attempt for o in history],
                "started": [o.started_at for o in history],
                "finished": [o.finished_at for o in history],
                "outcomes": [rules.history_outcome(o) for o in history],
                "errors": [o.error for o in history],
                "owner": owner,
            },
        )
    stats: dict[int, list[int]] = {}
    for o in outcomes:
        if o.started_at is not None:
            bucket = stats.setdefault(int(o.finished_at), [0, 0])
            bucket[0 if o.kind == "done" else 1] += 1
    if stats:
        seconds = sorted(stats)
        conn.execute(
            QUERIES["count_outcomes"],
            {
                "seconds": seconds,
                "done": [stats[s][0] for s in seconds],
                "failed": [stats[s][1] for s in seconds],
                "shard": shard,
            },
        )


def _outcome_params(kind: str, outcomes: list[Outcome], shift: float | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "ids": [int(o.lease.delivery_id) for o in outcomes],
        "attempts": [o.lease.attempt for o in outcomes],
        "finished": [o.finished_at for o in outcomes],
        "shift": shift,
    }
    if kind in ("retry", "dead"):
        params["failures"] = [int(o.counts_as_failure) for o in outcomes]
        params["errors"] = [o.error for o in outcomes]
        params["tracebacks"] = [o.traceback for o in outcomes]
    if kind == "retry":
        params["retry_at"] = [o.retry_at for o in outcomes]
    if kind == "release":
        params["unstarted"] = [int(o.started_at is None) for o in outcomes]
    return params


def renew(cursor: Any, leases: Sequence[tuple[Lease, float]], shift: float | None) -> int:
    """Extend running leases (fenced); return how many were still held."""
    ordered = sorted(leases, key=lambda item: int(item[0].delivery_id))
    cursor.execute(
        QUERIES["renew"],
        {
            "ids": [int(lease.delivery_id) for lease, _ in ordered],
            "attempts": [lease.attempt for lease, _ in ordered],
            "until": [until for _, until in ordered],
            "shift": shift,
        },
    )
    return int(cursor.rowcount)
