"""The transactional outbox on SQLite: events written inside an application's transaction."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from evq.errors import OutboxUnsupported
from evq.storage.contract import NewEvent
from evq.storage.sqlite.publishing import insert_events
from evq.storage.sqlite.schema import ensure_schema


def publish_within(connection: Any, events: Sequence[NewEvent], *, queue_path: str) -> list[str]:
    """Insert `events` through the application's `sqlite3` connection to the queue file, in
    its current transaction; evq neither commits nor rolls back. A new file gets evq's tables
    in that same transaction."""
    if not isinstance(connection, sqlite3.Connection):
        raise OutboxUnsupported(
            "the SQLite backend writes inside your transaction only on a sqlite3 connection to"
            f" the queue file, not on a {type(connection).__module__}.{type(connection).__name__}"
        )
    # An event written to another file would never reach a worker of this queue.
    main = next(row[2] for row in connection.execute("PRAGMA database_list") if row[1] == "main")
    if not main or os.path.realpath(main) != os.path.realpath(queue_path):
        raise OutboxUnsupported(
            f"the connection is to {main or 'an in-memory database'!r}, not to the queue file"
            f" {os.path.abspath(queue_path)!r} (EVQ_URL): a worker would never see the event"
        )
    ensure_schema(connection)
    return insert_events(connection, events)
