"""The steps a publisher and a worker take, through the `Queue` contract only, at times the
test chooses: publish as if at a time, lease (fan out and take) as a worker does at a time,
record outcomes. The command-line tests build their queues with these too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evq.ids import new_event_ids
from evq.publisher import prepare
from evq.storage.contract import Lease, NewEvent, Outcome, OutcomeKind, Queue, Routing

RECEIVER = "tests.apps.states:handle"
OWNER = "test-worker/host:1"
ERROR = "ValueError: card declined"
TRACEBACK = "Traceback ...\nValueError: card declined"


def routing_for(*receivers: str, pattern: str = "**", lease_seconds: float = 30.0) -> Routing:
    """A worker's routing: each receiver (`RECEIVER` if none) subscribed to `pattern`."""
    receivers = receivers or (RECEIVER,)
    return Routing(
        subscriptions=tuple((pattern, receiver) for receiver in receivers),
        lease_seconds=dict.fromkeys(receivers, lease_seconds),
    )


def publish(
    queue: Queue,
    name: str,
    *,
    at: float,
    delay: float | None = None,
    key: str | None = None,
    payload: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """Publish `name` as if it was published at the Unix time `at`; return its id."""
    payload = {"at": at} if payload is None else payload
    event = prepare(name, payload=payload, delay=delay, key=key, headers=headers, now=at)
    return queue.publish([event], now=at)[0]


def publish_batch(queue: Queue, name: str, count: int, *, at: float) -> list[str]:
    """Publish `count` events `name` in one batch, all at the Unix time `at` (one publish
    time: what a cursor on time alone would get wrong); return their ids, in order."""
    ids = new_event_ids(count)
    events = [NewEvent(id=i, name=name, payload="{}", published_at=at, due_at=at) for i in ids]
    return queue.publish(events, now=at)


def take(
    queue: Queue,
    *,
    now: float,
    routing: Routing | None = None,
    owner: str = OWNER,
    limit: int = 1000,
) -> list[Lease]:
    """Fan due events out and lease every due delivery, as a worker does at `now`."""
    routing = routing_for() if routing is None else routing
    return queue.lease(routing, owner=owner, limit=limit, now=now).leases


def outcome(
    lease: Lease,
    kind: OutcomeKind,
    *,
    at: float,
    retry_at: float | None = None,
    started: bool = True,
    counts_as_failure: bool = True,
) -> Outcome:
    """The outcome `kind` of a leased attempt that ran for a quarter of a second until `at`
    (with `started=False`, one that never called the receiver)."""
    failed = kind in ("retry", "dead")
    return Outcome(
        lease,
        kind,
        started_at=at - 0.25 if started else None,
        finished_at=at,
        retry_at=retry_at,
        error=ERROR if failed else None,
        traceback=TRACEBACK if failed else None,
        counts_as_failure=counts_as_failure,
    )


def finish(
    queue: Queue, leases: Sequence[Lease], kind: OutcomeKind, *, at: float, owner: str = OWNER
) -> None:
    """Record the outcome `kind` (done, dead, or retry in an hour) of leased attempts."""
    retry_at = at + 3600 if kind == "retry" else None
    queue.record(
        [outcome(lease, kind, at=at, retry_at=retry_at) for lease in leases], owner=owner, now=at
    )


@dataclass
class States:
    """The ids of events whose one delivery is in each state (`delayed` is not dispatched)."""

    done: str
    dead: str
    retrying: str
    running: str
    pending: str
    delayed: str


def every_state(queue: Queue, *, at: float) -> States:
    """Publish one event per delivery state, all around the time `at`: done, dead and retrying
    finished at `at - 10`, running leased at `at - 20` for 30 s, pending dispatched at `at - 10`,
    and delayed published at `at - 5` for an hour, not dispatched."""
    done = publish(queue, "order.created", at=at - 50)
    finish(queue, take(queue, now=at - 50), "done", at=at - 10)
    dead = publish(queue, "order.paid", at=at - 40)
    finish(queue, take(queue, now=at - 40), "dead", at=at - 10)
    retrying = publish(queue, "order.shipped", at=at - 30)
    finish(queue, take(queue, now=at - 30), "retry", at=at - 10)
    running = publish(queue, "user.created", at=at - 20)
    take(queue, now=at - 20)
    pending = publish(queue, "user.deleted", at=at - 10)
    # Dispatched by a worker that leased nothing.
    queue.lease(routing_for(), owner=OWNER, limit=0, now=at - 10)
    delayed = publish(queue, "report.due", at=at - 5, delay=3600)
    return States(done, dead, retrying, running, pending, delayed)
