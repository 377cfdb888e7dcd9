"""evq's tables on PostgreSQL: created by `evq migrate` (and a worker's start), never inside
an application's transaction, and refused when a newer evq wrote them.

The version of the tables is the one row of `evq_version`. Creating or upgrading them takes
a transaction-level advisory lock, so that workers starting at once on an empty database
wait for each other instead of failing.
"""

from __future__ import annotations

import os
import re
from typing import Any

import psycopg

from evq.errors import QueueNotFound, StorageError

SCHEMA_VERSION = 2
# pg_advisory_xact_lock's key for evq's migrations: "evq" in ASCII, then 1.
_MIGRATION_LOCK = 0x657671_01


def installed_version(conn: psycopg.Connection[Any] | Any) -> int | None:
    """The version of evq's tables in the connection's current schema, or None if there are
    none. Works on a psycopg 3 connection and on a psycopg 3 or psycopg2 cursor alike."""
    rows = _fetch(conn, "SELECT to_regclass('evq_version') IS NOT NULL")
    if not rows[0][0]:
        return None
    rows = _fetch(conn, "SELECT max(version) FROM evq_version")
    return int(rows[0][0] or 0)


def check_version(version: int | None, location: str) -> None:
    """Refuse tables written by a newer evq, and a database that holds none."""
    if version is None:
        raise QueueNotFound(
            f"no evq tables in {location} (run `evq migrate`, or start a worker, to create them)"
        )
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"the queue at {location} was written by a newer evq (tables version {version},"
            f" this evq knows {SCHEMA_VERSION}): upgrade evq to use it"
        )


def check_current(version: int | None, location: str) -> None:
    """`check_version`, and refuse tables an older evq wrote, which only `evq migrate` (never
    an application's transaction) may upgrade."""
    check_version(version, location)
    if version is not None and version < SCHEMA_VERSION:
        raise StorageError(
            f"the evq tables in {location} are of an older evq (version {version}, this evq"
            f" writes {SCHEMA_VERSION}): run `evq migrate` first"
        )


def migrate(conn: psycopg.Connection[Any], location: str) -> int:
    """Create evq's tables, or bring them up to date, in a transaction of evq's own on `conn`
    (an autocommit connection of evq's); return the version found before (0: none)."""
    with conn.transaction(), conn.cursor() as cursor:
        return migrate_within(cursor, location)


def migrate_within(cursor: Any, location: str) -> int:
    """`migrate` inside the caller's current transaction, on a psycopg 3 or psycopg2 cursor
    (Django's migration of the `evq` app runs it); return the version found before."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
    before = installed_version(cursor)
    if before is not None and before >= SCHEMA_VERSION:
        check_version(before, location)
        return before
    cursor.execute(_schema_sql())
    cursor.execute("DELETE FROM evq_version")
    cursor.execute("INSERT INTO evq_version (version) VALUES (%s)", (SCHEMA_VERSION,))
    return before or 0


def drop_within(cursor: Any) -> None:
    """Drop evq's tables inside the caller's current transaction (`manage.py migrate evq
    zero`)."""
    tables = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _schema_sql())
    cursor.execute(f"DROP TABLE IF EXISTS {', '.join(tables)} CASCADE")


def _fetch(conn: Any, sql: str) -> list[Any]:
    if not hasattr(conn, "cursor"):  # a cursor already
        conn.execute(sql)
        return list(conn.fetchall())
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _schema_sql() -> str:
    with open(os.path.join(os.path.dirname(__file__), "schema.sql"), encoding="utf-8") as file:
        return file.read()
