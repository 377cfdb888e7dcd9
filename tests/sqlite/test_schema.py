"""The SQLite file's tables: the dispatch cursor over `seq`, and upgrades of older files."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path

import pytest
from contract.steps import finish, publish, routing_for, take
from workers import rows

import evq
from evq.storage import rules
from evq.storage.sqlite import SqliteQueue
from evq.storage.sqlite.schema import SCHEMA_VERSION, _statements_on, drop_schema


@pytest.fixture
def queue(queue_path: Path) -> SqliteQueue:
    return SqliteQueue(str(queue_path))


def cursor(queue_path: Path) -> int:
    ((value,),) = rows(queue_path, "SELECT value FROM evq_counter WHERE name = 'dispatch_cursor'")
    return int(value)


# A script that makes evq_delivery of a file of the current schema as schemas 1 to 3 had it
# (ids not AUTOINCREMENT), with its rows and one of its indexes: the upgrade must make them all.
CREATE_DELIVERY = _statements_on("evq_delivery")[0]
DELIVERY_BEFORE_4 = (
    "ALTER TABLE evq_delivery RENAME TO newer;"
    f" {CREATE_DELIVERY.replace(' AUTOINCREMENT', '')};"
    " INSERT INTO evq_delivery SELECT * FROM newer; DROP TABLE newer;"
    " CREATE INDEX evq_delivery_due ON evq_delivery (due_at) WHERE due_at IS NOT NULL;"
    " DELETE FROM sqlite_sequence;"
)


def assert_delivery_table_is_of_schema_4(queue_path: Path) -> None:
    """The delivery table is schema 4's: AUTOINCREMENT, with every index of the current one."""
    ((create,),) = rows(queue_path, "SELECT sql FROM sqlite_master WHERE name = 'evq_delivery'")
    assert "AUTOINCREMENT" in create
    assert rows(
        queue_path,
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'evq_delivery'"
        " ORDER BY name",
    ) == [("evq_delivery_dead",), ("evq_delivery_due",), ("evq_delivery_event",)]


def test_a_delayed_event_is_fanned_out_at_once_and_moves_the_cursor(
    queue: SqliteQueue, queue_path: Path
) -> None:
    published = time.time()
    evq.publish("a.b", payload={}, delay=3600)
    evq.publish("a.b", payload={})

    assert len(take(queue, now=time.time())) == 1  # only the one without a delay

    ((due_at,),) = rows(queue_path, "SELECT due_at FROM evq_delivery WHERE state = 'pending'")
    assert published + 3600 <= due_at < time.time() + 3600
    assert rows(queue_path, "SELECT count(*) FROM evq_event WHERE due_at IS NOT NULL") == [(0,)]
    assert cursor(queue_path) == 2


def test_the_cursor_goes_back_to_0_when_every_event_was_pruned(
    queue: SqliteQueue, queue_path: Path
) -> None:
    # SQLite numbers a new row from the highest one left: with every event pruned, the next
    # one starts again from 1, behind where the dispatch cursor had got to.
    evq.publish_many([{"name": "a.b", "payload": {}}] * 3)
    now = time.time()
    finish(queue, take(queue, now=now), "done", at=now)
    assert cursor(queue_path) == 3

    assert rules.prune(queue, time.time() + 60) == 3

    assert cursor(queue_path) == 0
    assert evq.publish("a.b", payload={}) == take(queue, now=time.time())[0].event_id


def test_events_deleted_by_an_older_evq_or_by_hand_do_not_hide_new_ones(
    queue: SqliteQueue, queue_path: Path
) -> None:
    # An older evq prunes without knowing the cursor: a trigger on the table keeps it right.
    evq.publish_many([{"name": "a.b", "payload": {"n": n}} for n in range(3)])
    assert len(take(queue, now=time.time())) == 3
    with contextlib.closing(sqlite3.connect(queue_path, isolation_level=None)) as conn:
        conn.execute("DELETE FROM evq_event WHERE seq >= 2")
    assert cursor(queue_path) == 1

    evq.publish("a.b", payload={"n": "new"})

    leases = take(queue, now=time.time())
    assert [json.loads(lease.payload) for lease in leases] == [{"n": "new"}]


def test_a_queue_file_of_schema_1_is_brought_up_to_date_and_loses_no_event(
    queue_path: Path,
) -> None:
    # Schema 1 found events to fan out through an index on due_at: one fanned out at once,
    # one with a delay not fanned out yet, and behind it one fanned out and one not.
    SqliteQueue(str(queue_path)).publish([])  # a file of the current schema, made older below
    conn = sqlite3.connect(queue_path, isolation_level=None)
    conn.executescript(
        DELIVERY_BEFORE_4
        + "CREATE INDEX evq_event_due ON evq_event (due_at) WHERE due_at IS NOT NULL;"
        "DROP TRIGGER evq_event_newest_deleted;"
        "ALTER TABLE evq_event DROP COLUMN headers;"
        "DELETE FROM evq_counter; PRAGMA user_version = 1;"
    )
    now = time.time()
    for seq, due_at in ((1, None), (2, now - 1), (3, None), (4, now - 1)):
        conn.execute(
            "INSERT INTO evq_event (seq, id, name, payload, published_at, due_at, dispatched_at)"
            " VALUES (?, ?, 'a.b', ?, ?, ?, ?)",
            (
                seq,
                f"id{seq}",
                json.dumps({"seq": seq}),
                now - 5,
                due_at,
                now if due_at is None else None,
            ),
        )
    conn.close()

    queue = SqliteQueue(str(queue_path))
    queue.publish([])  # opens the file, which upgrades it

    assert rows(queue_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(queue_path, "SELECT name FROM sqlite_master WHERE name = 'evq_event_due'") == []
    assert cursor(queue_path) == 1
    leases = take(queue, now=time.time(), routing=routing_for())
    assert sorted(json.loads(lease.payload)["seq"] for lease in leases) == [2, 4]
    assert cursor(queue_path) == 4
    assert rows(queue_path, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == [
        ("evq_event_newest_deleted",)
    ]
    assert_delivery_table_is_of_schema_4(queue_path)


def make_schema_2_file(queue_path: Path) -> None:
    """A queue file as evq wrote it before event headers (schema 2), holding one event."""
    SqliteQueue(str(queue_path)).publish([])
    conn = sqlite3.connect(queue_path, isolation_level=None)
    conn.executescript(
        DELIVERY_BEFORE_4 + "ALTER TABLE evq_event DROP COLUMN headers; PRAGMA user_version = 2;"
    )
    conn.execute(
        "INSERT INTO evq_event (id, name, payload, published_at, due_at)"
        " VALUES ('old1', 'a.b', '{\"n\": 1}', ?, ?)",
        (time.time() - 5, time.time() - 5),
    )
    conn.close()


def test_a_queue_file_of_schema_2_gets_headers_and_keeps_its_events(queue_path: Path) -> None:
    make_schema_2_file(queue_path)

    queue = SqliteQueue(str(queue_path))
    new_id = evq.publish("a.b", payload={"n": 2}, headers={"corr": "x"})

    assert rows(queue_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert_delivery_table_is_of_schema_4(queue_path)
    leases = sorted(take(queue, now=time.time()), key=lambda lease: lease.payload)
    assert [(lease.event_id, lease.headers) for lease in leases] == [
        ("old1", None),
        (new_id, '{"corr":"x"}'),
    ]
    old = queue.event("old1")
    assert old is not None and old.headers is None


def test_a_read_only_queue_file_of_schema_2_can_still_be_inspected(queue_path: Path) -> None:
    from evq.storage.sqlite.schema import read_older

    make_schema_2_file(queue_path)
    # A read-only connection, as `evq show` opens a file it cannot write: no upgrade.
    conn = sqlite3.connect(f"file:{queue_path}?mode=ro", uri=True)
    read_older(conn, 2)

    assert conn.execute("SELECT id, headers FROM evq_event").fetchall() == [("old1", None)]
    assert rows(queue_path, "PRAGMA user_version") == [(2,)]


def make_schema_3_file(queue_path: Path) -> None:
    """A queue file as evq wrote it before delivery ids were never given again (schema 3),
    holding three events fanned out to one receiver, one delivery done."""
    queue = SqliteQueue(str(queue_path))
    evq.publish_many([{"name": "a.b", "payload": {"n": n}} for n in range(3)])
    leases = sorted(take(queue, now=time.time()), key=lambda lease: lease.delivery_id)
    finish(queue, leases[:1], "done", at=time.time())
    queue.close()
    conn = sqlite3.connect(queue_path, isolation_level=None)
    conn.executescript(DELIVERY_BEFORE_4 + "PRAGMA user_version = 3;")
    conn.close()


def test_a_queue_file_of_schema_3_keeps_its_deliveries_and_never_gives_an_id_again(
    queue_path: Path,
) -> None:
    make_schema_3_file(queue_path)
    before = rows(queue_path, "SELECT id, event_seq, state, attempt FROM evq_delivery ORDER BY id")
    assert [state for _, _, state, _ in before] == ["done", "running", "running"]

    queue = SqliteQueue(str(queue_path))
    queue.publish([])  # opens the file for writing: the upgrade

    assert rows(queue_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(
        queue_path, "SELECT id, event_seq, state, attempt FROM evq_delivery ORDER BY id"
    ) == (before)
    assert_delivery_table_is_of_schema_4(queue_path)
    # The newest delivery gone: the next one still gets an id after it.
    newest = before[-1][0]
    with contextlib.closing(sqlite3.connect(queue_path, isolation_level=None)) as conn:
        conn.execute("DELETE FROM evq_delivery WHERE id = ?", (newest,))
    evq.publish("a.b", payload={"n": 3})
    (lease,) = [lease for lease in take(queue, now=time.time()) if lease.payload == '{"n":3}']
    assert int(lease.delivery_id) == newest + 1
    queue.close()


def test_dropping_the_schema_leaves_the_other_tables_and_a_file_that_starts_again_empty(
    queue: SqliteQueue, queue_path: Path
) -> None:
    # What `manage.py migrate evq zero` does in the application's database, in its
    # transaction; a later `migrate` (or a queue opened on the file) makes the tables again.
    now = time.time()
    for n in range(3):
        publish(queue, "a.b", at=now, payload={"n": n})
    assert len(take(queue, now=now)) == 3
    queue.close()
    with contextlib.closing(sqlite3.connect(queue_path, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE app_order (id INTEGER PRIMARY KEY AUTOINCREMENT, total)")
        conn.execute("INSERT INTO app_order (total) VALUES (7)")
        conn.execute("BEGIN")
        drop_schema(conn)
        conn.execute("COMMIT")

    assert rows(queue_path, "SELECT type, name FROM sqlite_master WHERE name LIKE 'evq%'") == []
    assert rows(queue_path, "SELECT name, seq FROM sqlite_sequence") == [("app_order", 1)]
    assert rows(queue_path, "SELECT id, total FROM app_order") == [(1, 7)]
    assert rows(queue_path, "PRAGMA user_version") == [(0,)]

    again = SqliteQueue(str(queue_path))
    new_id = publish(again, "a.b", at=now, payload={"n": "new"})
    assert [(lease.event_id, lease.delivery_id) for lease in take(again, now=now)] == [
        (new_id, "1")
    ]
    assert rows(queue_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    again.close()
