"""The rules of the domain, written once for every backend.

A backend stores and fetches; what the rows mean is decided here: which state a person sees of
a delivery and of an event, which deliveries a lease takes and which become dead letters, what a
replay delivers, which events pruning may delete, and how replays and pruning walk the log in
short steps. Nothing here touches storage except through the `Queue` contract.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from evq.storage.contract import (
    DELIVERY_STATES,
    OUTCOME_KINDS,
    DeliveryState,
    EventSelection,
    Outcome,
    Routing,
    StoredCounts,
    StoredState,
)

if TYPE_CHECKING:
    from evq.storage.contract import Queue

# A delivery whose worker was lost this many times (killed, OOM, lease expired) is dead.
MAX_LOST_ATTEMPTS = 25
# The receiver of the dead letter kept for an event that cannot be dispatched at all.
UNDELIVERABLE = "evq:undeliverable"
LOST_WORKER_ERROR = "worker lost: lease expired before the attempt finished"
WORKER_SEEN_WITHIN_SECONDS = 30.0
RATE_WINDOW_SECONDS = 60
# Delivery statistics and heartbeats of stopped workers older than this are dropped.
FORGET_SECONDS = 86400.0
#: Clocks that differ by less than this are taken to agree (as the Redis scripts take them).
CLOCK_TOLERANCE_SECONDS = 1.0


# The states a person sees


class StateCondition(NamedTuple):
    """The stored fields of a delivery in one user-visible state: its stored state, whether it
    failed before (None: either), whether it is due after now (None: either)."""

    stored: StoredState
    failed: bool | None = None
    later: bool | None = None

    def holds(self, stored: str, failed: bool, later: bool) -> bool:
        """Whether a delivery with these stored fields is in this state."""
        return (
            stored == self.stored
            and (self.failed is None or self.failed == failed)
            and (self.later is None or self.later == later)
        )


# `pending`, `scheduled` and `retrying` are all stored as pending: scheduled is not due yet (a
# delayed event), retrying has failed before. A delivery given back by a stopping worker, or
# redriven, is pending again.
STATE_CONDITIONS: Mapping[DeliveryState, StateCondition] = {
    "pending": StateCondition("pending", failed=False, later=False),
    "scheduled": StateCondition("pending", failed=False, later=True),
    "retrying": StateCondition("pending", failed=True),
    "running": StateCondition("running"),
    "done": StateCondition("done"),
    "dead": StateCondition("dead"),
}
# An event's status is the most urgent state among its deliveries; done when all are done.
URGENCY: tuple[DeliveryState, ...] = ("dead", "running", "retrying", "pending", "scheduled")


def on_caller_clock(moment: float | None, server_now: float, caller_now: float) -> float | None:
    """`moment`, a time on the clock of a backend's server, on the caller's clock instead: when
    the server read `server_now` the caller's clock read `caller_now`. A worker compares
    `next_due` with its own clock; hosts' clocks differ (by more than the tolerance), and one
    ahead of the server's would see a retry due long before it is, and poll until it is."""
    if moment is None:
        return None
    skew = server_now - caller_now
    return moment - skew if abs(skew) > CLOCK_TOLERANCE_SECONDS else moment


def user_state(stored: str, failures: int, due_at: float | None, now: float) -> DeliveryState:
    """Return the state a person sees of a delivery from its stored fields."""
    return state_of(stored, failures > 0, due_at is not None and due_at > now)


def state_of(stored: str, failed: bool, later: bool) -> DeliveryState:
    """`user_state` from the stored state and the two facts that split it."""
    for state, condition in STATE_CONDITIONS.items():
        if condition.holds(stored, failed, later):
            return state
    raise ValueError(f"unknown stored delivery state {stored!r}")


def count_states(groups: Iterable[StoredCounts]) -> dict[DeliveryState, int]:
    """Add up grouped stored counts by the state a person sees."""
    counts = zero_counts()
    for group in groups:
        counts[state_of(group.state, group.failed, group.later)] += group.deliveries
    return counts


def zero_counts() -> dict[DeliveryState, int]:
    """Return a count of 0 for every delivery state."""
    return dict.fromkeys(DELIVERY_STATES, 0)


def event_status(
    due_at: float | None, counts: Mapping[DeliveryState, int], now: float
) -> DeliveryState:
    """Return the state of an event as a whole: pending (or scheduled while its delay runs)
    until it is fanned out, then the most urgent state among its deliveries."""
    if due_at is not None:
        return "scheduled" if due_at > now else "pending"
    for state in URGENCY:
        if counts.get(state):
            return state
    return "done"


def undispatched_state(due_at: float, now: float) -> DeliveryState:
    """The state an event not fanned out yet counts as, in filters and counts."""
    return "scheduled" if due_at > now else "pending"


# Leasing and dead letters


class Candidate(NamedTuple):
    """A due delivery as a backend fetches it for `lease_plan`. `payload` is None when the
    stored bytes are not UTF-8 text (`payload_size` says how many there were); `fetched` is
    whatever else the backend needs to build the lease (its row), never looked at here."""

    delivery_id: str
    receiver: str
    stored: str
    attempt: int
    attempt_base: int
    failures: int
    payload: str | None
    payload_size: int
    fetched: Any = None


class LeasePlan(NamedTuple):
    """What to do with fetched candidates: `take` them (each with its lease seconds), mark the
    `lost` ones' last attempt as lost, and make the `dead` ones dead letters (with a reason)."""

    take: list[tuple[Candidate, float]]
    lost: list[Candidate]
    dead: list[tuple[Candidate, str]]


def lease_plan(candidates: Sequence[Candidate], routing: Routing) -> LeasePlan:
    """Decide which of the due `candidates` (in due order) one lease takes.

    A delivery still `running` here has an expired lease: its worker died or stalled. That is
    no failure of the receiver's (a killed worker may not even have started it), so it uses up
    no retry, but its attempt is recorded as lost; and it is taken alone, in a batch of its own,
    so that if it is what kills workers it does not take the deliveries leased with it down
    again and again. A worker that runs selected receivers only leaves the others' deliveries
    alone: they are never dead letters of its (see `Routing`).
    """
    plan = LeasePlan([], [], [])
    leases = routing.lease_seconds
    selected = routing.selected
    for candidate in candidates:
        if selected is not None and candidate.receiver not in selected:
            continue  # another worker's: backends leave them out already, when they can
        lost = candidate.stored == "running"
        if lost and plan.take:
            break
        if lost:
            plan.lost.append(candidate)
        lease_seconds = leases.get(candidate.receiver)
        reason = dead_reason(candidate, lease_seconds is not None)
        if reason is not None:
            plan.dead.append((candidate, reason))
            continue
        assert lease_seconds is not None
        plan.take.append((candidate, lease_seconds))
        if lost:
            break
    return plan


def dead_reason(candidate: Candidate, registered: bool) -> str | None:
    """Return why a due delivery must become a dead letter instead of being leased, if it must."""
    if not registered:
        return f"receiver {candidate.receiver} is not registered with the worker"
    lost = candidate.attempt - candidate.attempt_base - candidate.failures
    if lost >= MAX_LOST_ATTEMPTS:
        return (
            f"worker lost {MAX_LOST_ATTEMPTS} times while running this delivery"
            " (the receiver may be crashing its worker)"
        )
    if candidate.payload is None:
        return f"stored payload is not valid JSON: {candidate.payload_size} bytes, not UTF-8 text"
    return None


UNDELIVERABLE_NAME_ERROR = "stored event name is not UTF-8 text; no receiver can match it"


def check_outcomes(outcomes: Iterable[Outcome]) -> None:
    """Raise `ValueError` for an outcome of an unknown kind: never guess what it meant."""
    unknown = {outcome.kind for outcome in outcomes} - _KINDS
    if unknown:
        raise ValueError(
            f"unknown outcome kind {unknown.pop()!r}: use one of {', '.join(OUTCOME_KINDS)}"
        )


_KINDS = frozenset(OUTCOME_KINDS)


def history_outcome(outcome: Outcome) -> str:
    """The outcome an attempt's history shows: a released attempt was interrupted."""
    return "interrupted" if outcome.kind == "release" else outcome.kind


# Replay


def replay_receivers(had: Iterable[str], receiver: str | None) -> list[str]:
    """Return the receivers a replay of one dispatched event delivers to: `receiver` alone if
    given (a backfill, whether it had the event or not), else each receiver that had a
    delivery of it, once (never the placeholder of an undeliverable event)."""
    if receiver is not None:
        return [receiver]
    return [r for r in dict.fromkeys(had) if r != UNDELIVERABLE]


def replay(
    queue: Queue,
    selection: EventSelection,
    *,
    receiver: str | None = None,
    dry_run: bool = False,
    batch_size: int = 1000,
    now: float | None = None,
) -> int:
    """Deliver the selected dispatched events again, as new deliveries marked as replays, due
    now (or with `dry_run`, count them); return how many.

    Events are taken `batch_size` at a time, each batch a short step of its own, so that a
    replay of millions of events never holds up workers (nor their lease renewals). Events not
    dispatched yet are skipped: they are delivered anyway.
    """
    now = time.time() if now is None else now
    total, after = 0, None
    while True:
        created, after = queue.replay_step(
            selection,
            receiver=receiver,
            after=after,
            batch_size=batch_size,
            now=now,
            dry_run=dry_run,
        )
        total += created
        if after is None:
            return total


# Retention


def is_finished(dispatched: bool, unfinished_deliveries: int) -> bool:
    """Whether an event may be pruned: fanned out, and every delivery of it done. An event
    with a pending, scheduled, running, retrying or dead delivery is kept."""
    return dispatched and unfinished_deliveries == 0


def prune_steps(
    queue: Queue,
    older_than: float,
    *,
    after: str | None = None,
    batch_size: int = 1000,
    max_batches: int | None = None,
    dry_run: bool = False,
) -> tuple[int, str | None]:
    """Prune finished events published before `older_than`, walking the log from the event id
    `after` for at most `max_batches` steps; return how many went, and where to go on next time
    (None once the walk reached the cutoff). A worker prunes a few steps at a time, so that
    events kept at the head of the log (dead letters) never stall it."""
    total, batches = 0, 0
    while max_batches is None or batches < max_batches:
        pruned, after = queue.prune_step(
            older_than, after=after, batch_size=batch_size, dry_run=dry_run
        )
        total += pruned
        batches += 1
        if after is None:
            break
    return total, after


def prune(
    queue: Queue,
    older_than: float,
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
    now: float | None = None,
) -> int:
    """Delete (or count) every finished event published before `older_than`, a short step at
    a time; then drop old statistics and heartbeats. Returns how many events."""
    total, _ = prune_steps(queue, older_than, batch_size=batch_size, dry_run=dry_run)
    if not dry_run:
        queue.forget_old_statistics(now=now)
    return total
