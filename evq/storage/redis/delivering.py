"""Delivering on Redis: fan events out, lease deliveries, record outcomes.

A worker's step: `peek.lua` reads the names of the next events to fan out (and when work is
due), the worker routes them here, in Python (`Routing.receivers_for`), and `lease.lua`
records its outcomes, writes the deliveries of the events still not fanned out, and takes
leases, in one atomic script. A lease that took work also reads the events to fan out next,
so that while there is work a step is that one script: one round trip. Both move the events
they read from the inbox into the log first (`ingest`, atomic in the script). A crash between
the two loses nothing: the read fanned nothing out, and an event another worker fanned out
meanwhile is skipped by the script. Outcomes and events travel as JSON texts, and the lease
answers in one: redis-py packs and parses each argument and value in Python, which cost more
than the script.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from evq.storage import rules
from evq.storage.contract import Lease, LeaseBatch, Outcome, Routing
from evq.storage.redis.connection import Connection

# `rules.dead_reason`'s sentences, built from the rule itself: the script puts the receiver
# where the NUL is. Written once, in rules.py.
_UNREGISTERED = rules.dead_reason(
    rules.Candidate("", "\0", "pending", 0, 0, 0, "", 0), registered=False
)
_LOST_TOO_OFTEN = rules.dead_reason(
    rules.Candidate("", "", "pending", rules.MAX_LOST_ATTEMPTS, 0, 0, "", 0), registered=True
)


Peeked = list[tuple[str, str]]
"""The next events to fan out, (id, name) each: read by `peek.lua`, or by a lease that took
work, for the worker's next step."""


def lease(
    connection: Connection,
    routing: Routing,
    owner: str,
    limit: int,
    outcomes: Sequence[Outcome],
    dispatch_limit: int,
    now: float | None,
    peeked: Peeked | None = None,
) -> tuple[LeaseBatch, Peeked | None]:
    """Record `outcomes`, fan out the next events, and lease up to `limit` deliveries.

    `peeked`, what the previous lease read for this step, saves the read: one round trip a
    step while there is work. Events published since are not in it: when it leaves the
    lease short, the rest is leased after a fresh read, so that the batch is what one step
    would take. Returns the batch, and what to pass as `peeked` next (None: read first)."""
    rules.check_outcomes(outcomes)
    if peeked is None or limit == 0:
        return _read_then_lease(connection, routing, owner, limit, outcomes, dispatch_limit, now)
    batch, fresh, complete = _lease_step(
        connection, routing, owner, limit, outcomes, peeked, dispatch_limit, now
    )
    taken = len(batch.leases)
    if taken == limit or (taken and not fresh) or complete:
        return batch, fresh
    rest, fresh = _read_then_lease(
        connection, routing, owner, limit - taken, (), dispatch_limit, now, taken_before=taken
    )
    merged = LeaseBatch(
        batch.leases + rest.leases,
        rest.next_due if not taken else None,
        batch.dead_lettered + rest.dead_lettered,
    )
    return merged, fresh


def _read_then_lease(
    connection: Connection,
    routing: Routing,
    owner: str,
    limit: int,
    outcomes: Sequence[Outcome],
    dispatch_limit: int,
    now: float | None,
    *,
    taken_before: int = 0,
) -> tuple[LeaseBatch, Peeked | None]:
    """Read the events to route (a read), then lease (after `taken_before` leases of the
    same step); without outcomes and with nothing due, only the read runs."""
    caller_now = time.time()
    peeked = connection.run(
        "peek",
        # A worker of selected receivers is not woken by the others' due deliveries.
        ["" if now is None else repr(now), dispatch_limit, *_selected(routing.selected)],
        doing="read the queue",
    )
    server_now, next_due = float(peeked[0]), _time(peeked[1])
    events = list(zip(peeked[2::2], peeked[3::2], strict=True))
    if not outcomes and not events and (next_due is None or next_due > server_now):
        # On the caller's clock, which a worker compares it with; as stored when the caller
        # gave the time (tests move time). (`lease.lua` moves its own the same way.)
        if now is None:
            next_due = rules.on_caller_clock(next_due, server_now, caller_now)
        return LeaseBatch([], next_due), None
    batch, fresh, _ = _lease_step(
        connection, routing, owner, limit, outcomes, events, dispatch_limit, now, taken_before
    )
    return batch, fresh


def _lease_step(
    connection: Connection,
    routing: Routing,
    owner: str,
    limit: int,
    outcomes: Sequence[Outcome],
    events: Peeked,
    peek_limit: int,
    now: float | None,
    taken_before: int = 0,
) -> tuple[LeaseBatch, Peeked | None, bool]:
    """One run of `lease.lua`, after `taken_before` leases of the same step; returns the
    batch, the events it read for the next step (None if it took no lease, and so read
    none), and whether the batch is complete though short: it ended at a lost delivery,
    which `rules.lease_plan` takes only in a batch of its own."""
    reply = json.loads(
        connection.run(
            "lease",
            _lease_args(routing, owner, limit, outcomes, events, peek_limit, now, taken_before),
            doing="lease deliveries",
        )
    )
    dead_lettered, next_due, taken = int(reply[0]), reply[1], int(reply[2])
    end = 3 + _LEASE_FIELDS * taken
    leases = [
        _lease(reply[start : start + _LEASE_FIELDS]) for start in range(3, end, _LEASE_FIELDS)
    ]
    if not leases:
        return LeaseBatch([], _time(next_due), dead_lettered), None, False
    rest = reply[end:]
    fresh = list(zip(rest[::2], rest[1::2], strict=True))
    return LeaseBatch(leases, None, dead_lettered), fresh, next_due == "lost"


_LEASE_FIELDS = len(Lease._fields)


def _lease(row: list[str]) -> Lease:
    return Lease(
        delivery_id=row[0],
        attempt=int(row[1]),
        attempt_base=int(row[2]),
        failures=int(row[3]),
        receiver=row[4],
        event_id=row[5],
        name=row[6],
        payload=row[7],
        published_at=float(row[8]),
        lease_seconds=float(row[9]),
        replay=row[10] == "1",
        headers=row[11] or None,
    )


def record(connection: Connection, outcomes: Sequence[Outcome], owner: str) -> None:
    """Record `outcomes`, each fenced by its lease: `lease.lua` with no lease taken."""
    rules.check_outcomes(outcomes)
    empty = Routing(subscriptions=(), lease_seconds={})
    connection.run(
        "lease", _lease_args(empty, owner, 0, outcomes, [], 0, None), doing="record outcomes"
    )


def _lease_args(
    routing: Routing,
    owner: str,
    limit: int,
    outcomes: Sequence[Outcome],
    events: Peeked,
    peek_limit: int,
    now: float | None,
    taken_before: int = 0,
) -> list[str | int]:
    args: list[str | int] = [
        "" if now is None else repr(now),
        repr(time.time()),
        owner,
        limit,
        rules.MAX_LOST_ATTEMPTS,
        # '': a worker of selected receivers, which leaves the others' deliveries alone.
        "" if routing.selected is not None else _UNREGISTERED or "",
        _LOST_TOO_OFTEN or "",
        rules.LOST_WORKER_ERROR,
        peek_limit,
        json.dumps([_outcome_row(o, owner) for o in outcomes]),
        json.dumps([[event_id, *routing.receivers_for(name)] for event_id, name in events]),
        taken_before,
    ]
    for receiver, seconds in routing.lease_seconds.items():
        args += [receiver, repr(float(seconds))]
    return args


def _outcome_row(o: Outcome, owner: str) -> list[str | int]:
    """An outcome as `lease.lua` reads it: times as text (a JSON number read by Lua keeps
    only 14 digits)."""
    entry = ""
    if o.started_at is not None:
        entry = json.dumps([owner, o.started_at, o.finished_at, rules.history_outcome(o), o.error])
    return [
        o.lease.delivery_id,
        str(o.lease.attempt),
        o.kind,
        "" if o.started_at is None else repr(o.started_at),
        repr(o.finished_at),
        "" if o.retry_at is None else repr(o.retry_at),
        o.error or "",
        o.traceback or "",
        int(o.counts_as_failure),
        entry,
    ]


def renew(connection: Connection, leases: Sequence[tuple[Lease, float]]) -> int:
    """Extend running leases (fenced); return how many were still held."""
    args: list[str | int] = [repr(time.time())]
    for lease, until in leases:
        args += [lease.delivery_id, lease.attempt, repr(until)]
    return int(connection.run("renew", args, doing="renew leases"))


def next_due(connection: Connection, receivers: frozenset[str] | None = None) -> float | None:
    """When the earliest delivery (to one of `receivers`, if given) or event to fan out is
    due, if any, on the caller's clock (see `rules.on_caller_clock`)."""
    args: list[str | int] = ["", 0, *_selected(receivers)]
    caller_now = time.time()
    peeked = connection.run("peek", args, doing="read the queue")
    return rules.on_caller_clock(_time(peeked[1]), float(peeked[0]), caller_now)


def running_count(connection: Connection, owner_prefix: str) -> int:
    """How many unexpired leases owners with this prefix hold."""
    return int(connection.run("running", [owner_prefix], doing="count running deliveries"))


def _selected(receivers: frozenset[str] | None) -> list[str]:
    """`peek.lua`'s trailing arguments: the receivers whose deliveries count, if not all."""
    if receivers is None:
        return []
    return sorted(receivers) or [""]  # none: a name no receiver has


def _time(text: str | None) -> float | None:
    return float(text) if text else None
