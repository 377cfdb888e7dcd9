"""The transactional outbox on PostgreSQL: events written inside an application's transaction,
on its psycopg 3 or psycopg2 connection.

evq only executes statements there: it never commits, rolls back, nor changes a setting of the
connection, and never creates tables inside someone else's transaction (if evq's tables are
missing it says which command creates them). The insert carries the NOTIFY that wakes idle
workers, which PostgreSQL sends when, and only if, the application commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evq.errors import OutboxUnsupported
from evq.storage.contract import NewEvent
from evq.storage.postgres.delivering import insert_events
from evq.storage.postgres.schema import check_current, installed_version

DRIVERS = ("psycopg", "psycopg2")


def publish_within(connection: Any, events: Sequence[NewEvent], location: str) -> list[str]:
    """Insert `events` through the application's connection in its current transaction."""
    driver = type(connection).__module__.split(".", 1)[0]
    if driver not in DRIVERS or not hasattr(connection, "cursor"):
        raise OutboxUnsupported(
            "the PostgreSQL backend writes inside your transaction only on a psycopg 3 or"
            f" psycopg2 connection, not on a {type(connection).__module__}."
            f"{type(connection).__name__}"
        )
    cursor = connection.cursor()
    try:
        check_current(installed_version(cursor), f"{location} (on your connection)")
        return insert_events(cursor, events, now=None)
    finally:
        cursor.close()
