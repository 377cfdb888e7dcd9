"""The transactional outbox on PostgreSQL: `publish(..., connection=conn)` on the
application's psycopg 3 or psycopg2 connection commits with its data or not at all, and evq
never commits, rolls back, or changes the connection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg2
import pytest
from conftest import calls, run_evq

import evq
from evq.errors import OutboxUnsupported, QueueNotFound, StorageError
from postgres.conftest import Schema


def _psycopg3(url: str) -> Any:
    return psycopg.connect(url)


def _psycopg2(url: str) -> Any:
    return psycopg2.connect(url)


@pytest.fixture(params=["psycopg", "psycopg2"])
def connect(request: pytest.FixtureRequest) -> Callable[[str], Any]:
    return _psycopg3 if request.param == "psycopg" else _psycopg2


@pytest.fixture
def orders(pg: Schema) -> Iterator[Schema]:
    pg.rows("CREATE TABLE orders (id integer PRIMARY KEY, status text NOT NULL)")
    pg.rows("INSERT INTO orders VALUES (7, 'new')")
    yield pg


def _execute(conn: Any, sql: str) -> None:
    cursor = conn.cursor()
    cursor.execute(sql)
    cursor.close()


def _deliver() -> None:
    result = run_evq("worker", "--burst", "--app", "tests.apps.recorder", "-q")
    assert result.returncode == 0, result.stderr


def test_an_event_published_in_a_committed_transaction_is_delivered(
    orders: Schema, connect: Callable[[str], Any]
) -> None:
    conn = connect(orders.url)
    try:
        _execute(conn, "UPDATE orders SET status = 'paid' WHERE id = 7")
        event_id = evq.publish("order.paid", payload={"order_id": 7}, connection=conn)
        # Not committed by evq: nobody else sees the event (nor the order) yet.
        assert orders.rows("SELECT count(*) FROM evq_event") == [(0,)]
        assert orders.rows("SELECT status FROM orders") == [("new",)]
        conn.commit()
    finally:
        conn.close()

    assert orders.rows("SELECT id FROM evq_event") == [(event_id,)]
    _deliver()
    assert calls(orders.log) == {(event_id, r): 1 for r in ("bill", "ship", "audit")}


def test_an_event_published_in_a_rolled_back_transaction_is_never_delivered(
    orders: Schema, connect: Callable[[str], Any]
) -> None:
    conn = connect(orders.url)
    try:
        _execute(conn, "UPDATE orders SET status = 'paid' WHERE id = 7")
        evq.publish("order.paid", payload={"order_id": 7}, connection=conn)
        conn.rollback()
    finally:
        conn.close()

    _deliver()
    assert orders.rows("SELECT count(*) FROM evq_event") == [(0,)]
    assert calls(orders.log) == {}


def test_evq_changes_nothing_about_the_connection(pg: Schema) -> None:
    with psycopg.connect(pg.url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        conn.execute("SELECT 1")
        before = (conn.autocommit, conn.isolation_level, conn.info.transaction_status)
        evq.publish("order.paid", payload={}, connection=conn)
        after = (conn.autocommit, conn.isolation_level, conn.info.transaction_status)
        assert after == before == (False, psycopg.IsolationLevel.SERIALIZABLE, 2)  # INTRANS
        (level,) = conn.execute("SHOW transaction_isolation").fetchone() or ("",)
        assert level == "serializable"
        conn.rollback()
    assert pg.rows("SELECT count(*) FROM evq_event") == [(0,)]


def test_an_autocommit_connection_stores_at_once(pg: Schema) -> None:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        event_id = evq.publish("order.paid", payload={}, key="k-1", connection=conn)
        assert evq.publish("order.paid", payload={}, key="k-1", connection=conn) == event_id
    assert pg.rows("SELECT id FROM evq_event") == [(event_id,)]


def test_without_evq_tables_the_outbox_names_evq_migrate_and_creates_nothing(
    empty_schema: Schema, connect: Callable[[str], Any]
) -> None:
    conn = connect(empty_schema.url)
    try:
        with pytest.raises(QueueNotFound, match=r"run `evq migrate`"):
            evq.publish("order.paid", payload={}, connection=conn)
        # The application's transaction is not broken by evq's check.
        _execute(conn, "SELECT 1")
        conn.rollback()
    finally:
        conn.close()
    assert empty_schema.rows(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (empty_schema.name,)
    ) == [(0,)]


def test_another_kind_of_connection_is_refused_naming_the_backend(pg: Schema) -> None:
    import sqlite3

    with pytest.raises(OutboxUnsupported, match="psycopg 3 or psycopg2 connection"):
        evq.publish("order.paid", payload={}, connection=sqlite3.connect(":memory:"))


def test_tables_of_an_older_evq_are_not_upgraded_inside_your_transaction(
    orders: Schema, connect: Callable[[str], Any]
) -> None:
    orders.rows("ALTER TABLE evq_event DROP COLUMN headers")
    orders.rows("UPDATE evq_version SET version = 1")
    conn = connect(orders.url)
    try:
        with pytest.raises(StorageError, match=r"older evq .* run `evq migrate` first"):
            evq.publish("order.paid", payload={}, connection=conn)
    finally:
        conn.close()
    assert orders.rows("SELECT version FROM evq_version") == [(1,)]
