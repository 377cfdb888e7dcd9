"""Publishing on Redis: one script stores a batch of events, all or none (a script runs
alone on the server, and stops before writing if an argument is wrong)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from evq.storage.contract import NewEvent
from evq.storage.redis.connection import Connection


def insert_events(connection: Connection, events: Sequence[NewEvent]) -> list[str]:
    """Store `events`; return their ids (the first event's id for an idempotency key stored
    before)."""
    args: list[str | float] = [repr(time.time())]
    for event in events:
        args += [
            event.id,
            event.name,
            event.payload,
            repr(event.published_at),
            repr(event.due_at),
            event.key or "",
            event.headers or "",
        ]
    ids: list[str] = connection.run("publish", args, doing="publish")
    return ids
