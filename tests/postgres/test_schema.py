"""The tables' version on PostgreSQL, in the process: a read without tables, tables of a newer
evq and tables of an older evq are each refused with a message that names the database and
what to do; `migrate` refuses a newer evq's tables without touching them, and returns the
version it found."""

from __future__ import annotations

import time

import psycopg
import pytest

from evq.errors import QueueNotFound, StorageError
from evq.publisher import prepare
from evq.storage import open_queue
from evq.storage.postgres import schema
from evq.storage.postgres.schema import SCHEMA_VERSION
from postgres.conftest import Schema


def as_version_1(tables: Schema) -> None:
    """Make `tables` as evq wrote them before event headers (version 1)."""
    tables.rows("ALTER TABLE evq_event DROP COLUMN headers")
    tables.rows("UPDATE evq_version SET version = 1")


def test_a_read_of_a_database_without_tables_says_what_to_run(empty_schema: Schema) -> None:
    queue = open_queue(empty_schema.url, role="read", create=False)
    try:
        with pytest.raises(QueueNotFound) as caught:
            queue.status()
        assert str(caught.value) == (
            f"no evq tables in {queue.location}"
            " (run `evq migrate`, or start a worker, to create them)"
        )
    finally:
        queue.close()


def test_tables_of_a_newer_evq_are_refused_by_a_read_and_by_migrate_and_left_as_they_are(
    pg: Schema,
) -> None:
    newer = SCHEMA_VERSION + 1
    pg.rows("UPDATE evq_version SET version = %s", (newer,))
    for create in (False, True):
        queue = open_queue(pg.url, role="read" if not create else "work", create=create)
        try:
            with pytest.raises(StorageError) as caught:
                queue.check() if create else queue.status()
            assert str(caught.value) == (
                f"the queue at {queue.location} was written by a newer evq (tables version"
                f" {newer}, this evq knows {SCHEMA_VERSION}): upgrade evq to use it"
            )
        finally:
            queue.close()
    # `evq migrate`'s own step, as Django's migration runs it too.
    with psycopg.connect(pg.url, autocommit=True) as conn, pytest.raises(StorageError) as caught:
        schema.migrate(conn, "the database 'default'")
    assert str(caught.value).startswith(
        "the queue at the database 'default' was written by a newer evq"
    )
    assert pg.rows("SELECT version FROM evq_version") == [(newer,)]


def test_a_read_of_tables_of_an_older_evq_says_to_run_migrate(pg: Schema) -> None:
    as_version_1(pg)
    queue = open_queue(pg.url, role="read", create=False)
    try:
        with pytest.raises(StorageError) as caught:
            queue.events()
        assert str(caught.value) == (
            f"the evq tables in {queue.location} are of an older evq (version 1, this evq"
            f" writes {SCHEMA_VERSION}): run `evq migrate` first"
        )
    finally:
        queue.close()


def test_migrate_returns_the_version_it_found_none_as_0(empty_schema: Schema) -> None:
    with psycopg.connect(empty_schema.url, autocommit=True) as conn:
        assert schema.migrate(conn, "here") == 0
        assert schema.migrate(conn, "here") == SCHEMA_VERSION
        as_version_1(empty_schema)
        assert schema.migrate(conn, "here") == 1
        assert schema.migrate(conn, "here") == SCHEMA_VERSION
    assert empty_schema.rows("SELECT version FROM evq_version") == [(SCHEMA_VERSION,)]


def test_dropping_the_tables_leaves_the_applications_and_a_schema_that_starts_again_empty(
    pg: Schema,
) -> None:
    """`drop_within` (Django's `migrate evq zero`) drops every table of evq's, only those, in
    the caller's transaction; `migrate` then makes a queue that starts from nothing."""
    pg.rows("CREATE TABLE app_order (id integer)")
    pg.rows("INSERT INTO app_order VALUES (42)")
    queue = open_queue(pg.url)
    try:
        queue.publish([prepare("order.paid", payload={}, now=time.time())])
    finally:
        queue.close()
    tables = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    evq_tables = {name for (name,) in pg.rows(tables)} - {"app_order"}
    assert {"evq_event", "evq_delivery", "evq_version"} <= evq_tables

    with psycopg.connect(pg.url) as conn:
        with conn.cursor() as cursor:
            schema.drop_within(cursor)
        conn.rollback()  # the caller's transaction: nothing happens without its commit
    assert pg.rows("SELECT count(*) FROM evq_event") == [(1,)]
    with psycopg.connect(pg.url) as conn, conn.cursor() as cursor:
        schema.drop_within(cursor)

    assert pg.rows(tables) == [("app_order",)]
    assert pg.rows("SELECT id FROM app_order") == [(42,)]
    with psycopg.connect(pg.url, autocommit=True) as conn:
        assert schema.migrate(conn, "here") == 0
    assert {name for (name,) in pg.rows(tables)} == evq_tables | {"app_order"}
    queue = open_queue(pg.url, role="read", create=False)
    try:
        assert queue.status().published == 0
    finally:
        queue.close()
