"""Reading rows that may be damaged: a row written by hand, by a bug or by a failing disk may
hold a value of the wrong type (a BLOB name, attempt = 'abc'). Every read shows such a row as
best it can rather than fail for the whole log."""

from __future__ import annotations

from evq.storage import rules
from evq.storage.contract import DeliveryState


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
