"""Delivering on Redis: fan events out, lease deliveries, record outcomes.

A worker's step is two calls: `peek.lua` reads the names of the next events to fan out (and
when work is due), then the worker routes them here, in Python (`Routing.receivers_for`), and
`lease.lua` records its outcomes, writes the deliveries of the events still not fanned out,
and takes leases, in one atomic script. A crash between the two loses nothing: the read wrote
nothing, and an event another worker fanned out meanwhile is skipped by the script.
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


def lease(
    connection: Connection,
    routing: Routing,
    owner: str,
    limit: int,
    outcomes: Sequence[Outcome],
    dispatch_limit: int,
    now: float | None,
) -> LeaseBatch:
    """Record `outcomes`, fan out the next events, and lease up to `limit` deliveries."""
    rules.check_outcomes(outcomes)
    caller_now = time.time()
    peeked = connection.run(
        "peek",
        # A worker of selected receivers is not woken by the others' due deliveries.
        ["" if now is None else repr(now), dispatch_limit, *_selected(routing.selected)],
        doing="read the queue",
    )
    server_now, next_due = float(peeked[0]), _time(peeked[1])
    events = list(zip(peeked[2::2], peeked[3::2], strict=True))

    def for_caller(due: float | None) -> float | None:
        # On the caller's clock, which a worker compares it with; as stored when the caller
        # gave the time (tests move time).
        return due if now is not None else rules.on_caller_clock(due, server_now, caller_now)

    if not outcomes and not events and (next_due is None or next_due > server_now):
        return LeaseBatch([], for_caller(next_due))
    result = connection.run(
        "lease",
        _lease_args(routing, owner, limit, outcomes, events, now),
        doing="lease deliveries",
    )
    fields = Lease._fields
    leases = []
    for start in range(2, len(result), len(fields)):
        row = result[start : start + len(fields)]
        leases.append(
            Lease(
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
        )
    return LeaseBatch(leases, None if leases else for_caller(_time(result[1])), int(result[0]))


def record(connection: Connection, outcomes: Sequence[Outcome], owner: str) -> None:
    """Record `outcomes`, each fenced by its lease: `lease.lua` with no lease taken."""
    rules.check_outcomes(outcomes)
    empty = Routing(subscriptions=(), lease_seconds={})
    connection.run(
        "lease", _lease_args(empty, owner, 0, outcomes, [], None), doing="record outcomes"
    )


def _lease_args(
    routing: Routing,
    owner: str,
    limit: int,
    outcomes: Sequence[Outcome],
    events: list[tuple[str, str]],
    now: float | None,
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
        len(outcomes),
    ]
    for o in outcomes:
        entry = ""
        if o.started_at is not None:
            entry = json.dumps(
                [owner, o.started_at, o.finished_at, rules.history_outcome(o), o.error]
            )
        args += [
            o.lease.delivery_id,
            o.lease.attempt,
            o.kind,
            "" if o.started_at is None else repr(o.started_at),
            repr(o.finished_at),
            "" if o.retry_at is None else repr(o.retry_at),
            o.error or "",
            o.traceback or "",
            int(o.counts_as_failure),
            entry,
        ]
    args.append(len(events))
    for event_id, name in events:
        receivers = routing.receivers_for(name)
        args += [event_id, len(receivers), *receivers]
    for receiver, seconds in routing.lease_seconds.items():
        args += [receiver, repr(float(seconds))]
    return args


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
