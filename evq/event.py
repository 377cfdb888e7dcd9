"""The event envelope: `Event`, what a receiver is called with."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """The event a receiver is called with.

    `id` is unique and sorts by publish time; `attempt` is 1 on the first delivery of this event
    to this receiver and counts up on every retry or redelivery after a crash. `headers` is the
    string metadata the event was published with (empty if none).
    """

    id: str
    name: str
    payload: dict[str, Any]
    published_at: dt.datetime
    attempt: int = 1
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


def timestamp_to_datetime(ts: float) -> dt.datetime:
    """Return the timezone-aware UTC datetime of a Unix timestamp."""
    return dt.datetime.fromtimestamp(ts, dt.UTC)
