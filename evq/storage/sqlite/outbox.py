"""The transactional outbox on SQLite: events written inside an application's transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from evq.errors import OutboxUnsupported
from evq.storage.contract import NewEvent
from evq.storage.sqlite.publishing import insert_events
from evq.storage.sqlite.schema import ensure_schema


def publish_within(connection: Any, events: Sequence[NewEvent]) -> list[str]:
    """Insert `events` through the application's `sqlite3` connection to the queue file, in
    its current transaction; evq neither commits nor rolls back. A new file gets evq's tables
    in that same transaction."""
    if not isinstance(connection, sqlite3.Connection):
        raise OutboxUnsupported(
            "the SQLite backend writes inside your transaction only on a sqlite3 connection to"
            f" the queue file, not on a {type(connection).__module__}.{type(connection).__name__}"
        )
    ensure_schema(connection)
    return insert_events(connection, events)
