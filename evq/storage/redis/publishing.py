"""Publishing on Redis. One event due now, without an idempotency key (the usual publish),
is one XADD to the queue's inbox stream: Redis's cheapest durable write, which also wakes
idle workers (they block reading the stream). Workers move inbox entries into the event log
as they read it (`ingest` in lib.lua). Anything else (a batch, a key, a delay) is one script,
`publish.lua`, all or none (a script runs alone on the server, and stops before writing if
an argument is wrong); it puts events due now into the same inbox, so that they are fanned
out in the order they were published."""

from __future__ import annotations

import time
from collections.abc import Sequence

from evq.storage.contract import NewEvent
from evq.storage.redis.connection import Connection

INGEST_BATCH = 1000
"""How many inbox entries one run of `ingest.lua` moves into the log."""


def insert_events(connection: Connection, events: Sequence[NewEvent]) -> list[str]:
    """Store `events`; return their ids (the first event's id for an idempotency key stored
    before)."""
    if len(events) == 1:
        event = events[0]
        # Published now (not at a time a caller chose: an import, a test), so that the
        # server can tell the publisher's clock from its own (see `ingest`).
        published_now = abs(event.published_at - time.time()) < 1
        if published_now and not event.key and event.due_at <= event.published_at:
            fields = ["i", event.id, "n", event.name, "p", event.payload]
            fields += ["t", repr(event.published_at)]
            if event.headers:
                fields += ["h", event.headers]
            connection.append("inbox", fields, doing="publish")
            return [event.id]
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


def ingest(connection: Connection) -> None:
    """Move the events waiting in the inbox into the log (a batch per script run), so that a
    read of the log sees every event published before it began."""
    left: int | None = None
    while True:
        taken, remaining = connection.run("ingest", [INGEST_BATCH], doing="read the inbox")
        left = int(remaining) if left is None else left - int(taken)
        if int(taken) < INGEST_BATCH or left <= 0:
            return
