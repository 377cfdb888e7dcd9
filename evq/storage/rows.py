"""Records from the rows of evq's relational backends (SQLite, PostgreSQL), which select the
columns below in this order; and reading rows that may be damaged: a row written by hand, by a
bug or by a failing disk may hold a value of the wrong type (a BLOB name, attempt = 'abc').
Every read shows such a row as best it can rather than fail for the whole log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evq.storage import rules
from evq.storage.contract import (
    AttemptRecord,
    DeadLetter,
    DeliveryRecord,
    DeliveryState,
    EventRecord,
    WorkerRecord,
)

# The column order each builder below reads; a backend selects exactly these.
EVENT_COLUMNS = (
    "e.seq, e.id, e.name, e.payload, e.published_at, e.due_at, e.dispatched_at, e.key, e.headers"
)
DELIVERY_COLUMNS = (
    "id, receiver, state, attempt, failures, replay, created_at, due_at, started_at,"
    " finished_at, lease_owner, last_error, traceback"
)
DEAD_LETTER_COLUMNS = (
    "d.id, d.receiver, d.attempt, d.failures, d.finished_at, d.last_error, d.traceback,"
    " d.created_at, e.id, e.name, e.payload, e.published_at, e.headers"
)
WORKER_COLUMNS = "id, hostname, pid, started_at, seen_at, info"


def worker_record(row: Sequence[Any]) -> WorkerRecord:
    """A `WorkerRecord` from a row of `WORKER_COLUMNS`."""
    worker_id, hostname, pid, started_at, seen_at, info = row
    return WorkerRecord(
        id=text(worker_id),
        hostname=text(hostname),
        pid=count(pid),
        started_at=timestamp(started_at) or 0.0,
        seen_at=timestamp(seen_at) or 0.0,
        info=text(info),
    )


def event_record(
    row: Sequence[Any],
    counts: dict[DeliveryState, int],
    now: float,
    deliveries: tuple[DeliveryRecord, ...] = (),
) -> EventRecord:
    """An `EventRecord` from a row of `EVENT_COLUMNS`, with its delivery counts."""
    _, event_id, name, payload, published_at, due_at, dispatched_at, key, headers = row
    due_at = timestamp(due_at)
    return EventRecord(
        id=text(event_id),
        name=text(name),
        payload=text(payload),
        published_at=timestamp(published_at) or 0.0,
        due_at=due_at,
        dispatched_at=timestamp(dispatched_at),
        key=optional_text(key),
        status=rules.event_status(due_at, counts, now),
        counts=counts,
        deliveries=deliveries,
        headers=optional_text(headers),
    )


def delivery_record(
    row: Sequence[Any], history: tuple[AttemptRecord, ...], now: float
) -> DeliveryRecord:
    """A `DeliveryRecord` from a row of `DELIVERY_COLUMNS`, with its history."""
    (
        delivery_id,
        receiver,
        state,
        attempt,
        failures,
        replay,
        created_at,
        due_at,
        started_at,
        finished_at,
        owner,
        last_error,
        traceback,
    ) = row
    due_at = timestamp(due_at)
    return DeliveryRecord(
        id=str(delivery_id),
        receiver=text(receiver),
        state=user_state(state, failures, due_at, now),
        attempts=count(attempt),
        failures=count(failures),
        replay=bool(replay),
        created_at=timestamp(created_at) or 0.0,
        due_at=due_at,
        started_at=timestamp(started_at),
        finished_at=timestamp(finished_at),
        worker=optional_text(owner),
        last_error=optional_text(last_error),
        traceback=optional_text(traceback),
        history=history,
    )


def dead_letter_record(row: Sequence[Any]) -> DeadLetter:
    """A `DeadLetter` from a row of `DEAD_LETTER_COLUMNS` (the event's may be NULL)."""
    (
        delivery_id,
        receiver,
        attempts,
        failures,
        dead_at,
        error,
        traceback,
        created_at,
        event_id,
        name,
        payload,
        published_at,
        headers,
    ) = row
    return DeadLetter(
        id=str(delivery_id),
        receiver=text(receiver),
        attempts=count(attempts),
        failures=count(failures),
        dead_at=timestamp(dead_at) or 0.0,
        error=optional_text(error),
        traceback=optional_text(traceback),
        created_at=timestamp(created_at) or 0.0,
        event_id=text(event_id or ""),
        name=text(name or ""),
        payload=text(payload or ""),
        published_at=timestamp(published_at) or 0.0,
        headers=optional_text(headers),
    )


def text(value: object) -> str:
    """A stored value as text: bytes decoded (bad bytes replaced), anything else as written."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def optional_text(value: object) -> str | None:
    """`text`, keeping None."""
    return None if value is None else text(value)


def timestamp(value: object) -> float | None:
    """A stored time, or None if it is not a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def count(value: object) -> int:
    """A stored count, or 0 if it is not an integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def state_of(stored: object, failed: bool, later: bool) -> DeliveryState:
    """`rules.state_of`, with a state no evq wrote (a damaged row) shown as dead."""
    try:
        return rules.state_of(text(stored), failed, later)
    except ValueError:
        return "dead"


def user_state(stored: object, failures: object, due_at: float | None, now: float) -> DeliveryState:
    """`rules.user_state` of a row that may be damaged."""
    return state_of(stored, count(failures) > 0, due_at is not None and due_at > now)
