"""evq's tables in a SQLite file: created from `schema.sql`, upgraded in place.

The file records the version of its tables in `PRAGMA user_version`. A newer evq brings an
older file up to date the first time it opens it, in one transaction.
"""

from __future__ import annotations

import os
import re
import sqlite3

SCHEMA_VERSION = 4

# The counter rows the delivery code keeps in `evq_counter`.
SET_CURSOR = (
    "INSERT INTO evq_counter (name, value) VALUES ('dispatch_cursor', ?)"
    " ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)"
)


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create evq's tables, or bring those of an older evq up to date, inside the current
    transaction of `conn` (evq's own, or an application's)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= SCHEMA_VERSION:
        return
    if version == 0:
        for statement in _schema_statements():
            conn.execute(statement)
        # Its body holds semicolons: run as a statement of its own.
        conn.execute(_sql("cursor_trigger.sql"))
    if version == 1:
        _upgrade_1_to_2(conn)
    if 1 <= version <= 2:
        _upgrade_2_to_3(conn)
    if 1 <= version <= 3:
        _upgrade_3_to_4(conn)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def drop_schema(conn: sqlite3.Connection) -> None:
    """Drop evq's tables (their indexes and triggers go with them) inside the current
    transaction of `conn`: what `manage.py migrate evq zero` does."""
    for table in reversed(_tables()):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute("PRAGMA user_version=0")


def _tables() -> list[str]:
    # Named where they are created, so that the list cannot go stale.
    return re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _sql("schema.sql"))


def _upgrade_1_to_2(conn: sqlite3.Connection) -> None:
    # Events to fan out are found from a cursor over seq, no longer from an index on due_at.
    # The cursor starts before the first event not fanned out yet; events after it that were
    # fanned out already (due_at NULL) are skipped by the dispatch.
    conn.execute("DROP INDEX IF EXISTS evq_event_due")
    conn.execute(_sql("cursor_trigger.sql"))
    conn.execute(
        SET_CURSOR,
        (
            conn.execute(
                "SELECT coalesce((SELECT min(seq) - 1 FROM evq_event WHERE due_at IS NOT NULL),"
                " (SELECT max(seq) FROM evq_event), 0)"
            ).fetchone()[0],
        ),
    )


def _upgrade_2_to_3(conn: sqlite3.Connection) -> None:
    # Event headers. A column added with no default rewrites no row: instant on any file.
    conn.execute("ALTER TABLE evq_event ADD COLUMN headers TEXT")


def _upgrade_3_to_4(conn: sqlite3.Connection) -> None:
    # Delivery ids are never given again (AUTOINCREMENT): SQLite numbers a new row from the
    # highest one left, so after the newest delivery was purged or pruned the next one got
    # its id, and a worker's late outcome for it (fenced by id and attempt) could land on
    # the new delivery. SQLite cannot add AUTOINCREMENT to a table: it is made again, with
    # its rows, then its indexes (they went with the old table).
    table, *indexes = _statements_on("evq_delivery")
    conn.execute("ALTER TABLE evq_delivery RENAME TO evq_delivery_before_4")
    conn.execute(table)
    columns = ", ".join(
        row[1] for row in conn.execute("PRAGMA table_info(evq_delivery_before_4)").fetchall()
    )
    conn.execute(
        f"INSERT INTO evq_delivery ({columns}) SELECT {columns} FROM evq_delivery_before_4"
    )
    conn.execute("DROP TABLE evq_delivery_before_4")
    for index in indexes:
        conn.execute(index)


def _schema_statements() -> list[str]:
    """The statements of schema.sql, in order (each after its comment, without `;`)."""
    return [statement for statement in _sql("schema.sql").split(";") if statement.strip()]


def _statements_on(table: str) -> list[str]:
    """The statements of schema.sql that make `table`, then its indexes."""
    found = re.compile(rf"\b(TABLE IF NOT EXISTS|ON) {table} ")
    return [statement for statement in _schema_statements() if found.search(statement)]


def read_older(conn: sqlite3.Connection, version: int) -> None:
    """Let a read-only connection to a file of an older evq, which cannot be upgraded, be read
    as if it were: a temporary view (temp objects shadow the file's) adds the missing
    columns."""
    if version < 3:
        conn.execute(
            "CREATE TEMP VIEW IF NOT EXISTS evq_event AS SELECT *, NULL AS headers"
            " FROM main.evq_event"
        )


def _sql(name: str) -> str:
    # A plain read beside this module: importlib.resources would cost a new file's first
    # publish more than the read itself.
    with open(os.path.join(os.path.dirname(__file__), name), encoding="utf-8") as file:
        return file.read()
