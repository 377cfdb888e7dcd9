"""Transactional publish (the outbox) and idempotent publish."""

from __future__ import annotations

import fractions
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import calls, evq_env, run_evq

import evq
import evq.publisher
from evq.errors import OutboxUnsupported, PayloadTooLarge


def open_app_db(path: Path) -> sqlite3.Connection:
    evq.publisher.queue().publish([])  # evq's tables exist before the app's transactions
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, status TEXT)")
    conn.commit()
    return conn


def test_an_event_published_in_a_committed_transaction_is_delivered(queue_path: Path) -> None:
    conn = open_app_db(queue_path)
    with conn:
        conn.execute("INSERT INTO orders (status) VALUES ('paid')")
        event_id = evq.publish("order.paid", payload={"order": 1}, connection=conn)
    conn.close()

    assert run_evq("worker", "--burst", "--app", "tests.apps.recorder").returncode == 0
    assert set(calls(queue_path.parent / "calls.log")) == {
        (event_id, "bill"),
        (event_id, "ship"),
        (event_id, "audit"),
    }


def test_an_event_whose_transaction_rolled_back_is_never_delivered(queue_path: Path) -> None:
    conn = open_app_db(queue_path)
    with pytest.raises(RuntimeError), conn:
        conn.execute("INSERT INTO orders (status) VALUES ('paid')")
        evq.publish("order.paid", payload={"order": 1}, connection=conn)
        raise RuntimeError("the application failed after publishing")
    assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM evq_event").fetchone()[0] == 0
    conn.close()

    assert run_evq("worker", "--burst", "--app", "tests.apps.recorder").returncode == 0
    assert not calls(queue_path.parent / "calls.log")


def test_evq_never_commits_the_callers_transaction(queue_path: Path) -> None:
    conn = open_app_db(queue_path)
    conn.execute("INSERT INTO orders (status) VALUES ('paid')")
    evq.publish("order.paid", payload={}, connection=conn)
    assert conn.in_transaction
    other = sqlite3.connect(queue_path)
    assert other.execute("SELECT count(*) FROM evq_event").fetchone()[0] == 0
    conn.rollback()
    conn.close()
    other.close()


def test_an_event_committed_just_before_a_crash_is_delivered(queue_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sqlite3, sys
        import evq
        conn = sqlite3.connect({str(queue_path)!r})
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
        conn.commit()
        with conn:
            conn.execute("INSERT INTO orders DEFAULT VALUES")
            event_id = evq.publish("order.paid", payload={{}}, connection=conn)
        print(event_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    process = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=evq_env()
    )
    assert process.returncode == -signal.SIGKILL
    event_id = process.stdout.strip()

    assert run_evq("worker", "--burst", "--app", "tests.apps.recorder").returncode == 0
    assert set(calls(queue_path.parent / "calls.log")) == {
        (event_id, "bill"),
        (event_id, "ship"),
        (event_id, "audit"),
    }


def test_publishing_with_a_seen_key_returns_the_first_id_and_stores_nothing(
    queue_path: Path,
) -> None:
    first = evq.publish("order.paid", payload={"n": 1}, key="order-42-paid")
    second = evq.publish("order.paid", payload={"n": 2}, key="order-42-paid")
    other = evq.publish("order.paid", payload={"n": 3}, key="order-43-paid")
    assert second == first
    assert other != first
    with sqlite3.connect(queue_path) as conn:
        assert conn.execute("SELECT count(*) FROM evq_event").fetchone()[0] == 2


def test_the_cli_key_option_is_idempotent_too(queue_path: Path) -> None:
    first = run_evq("publish", "order.paid", "--key", "k1")
    second = run_evq("publish", "order.paid", "--key", "k1", "--json")
    assert first.returncode == second.returncode == 0
    assert '"stored": false' in second.stdout
    assert first.stdout.strip() in second.stdout


def test_publish_many_validates_everything_before_storing_anything(queue_path: Path) -> None:
    with pytest.raises(evq.InvalidInput, match="event 2"):
        evq.publish_many(
            [
                {"name": "a.b", "payload": {}},
                {"name": "bad name", "payload": {}},
            ]
        )
    ids = evq.publish_many([{"name": "a.b", "payload": {"i": i}} for i in range(2500)])
    assert len(set(ids)) == 2500
    with sqlite3.connect(queue_path) as conn:
        assert conn.execute("SELECT count(*) FROM evq_event").fetchone()[0] == 2500


class LooksLikeAName:
    """Equal to a good name, and hashed like it, but not a string: sqlite3 cannot store it."""

    def __hash__(self) -> int:
        return hash("a.b")

    def __eq__(self, other: object) -> bool:
        return other == "a.b"


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ({"name": "a.b", "payload": {"t": (1,)}}, evq.InvalidInput, "event 26: payload['t']"),
        ({"name": "a b"}, evq.InvalidInput, "event 26: invalid event name"),
        ({"name": "a.b", "key": ""}, evq.InvalidInput, "event 26: an idempotency key"),
        ({"name": "a.b", "delay": "soon"}, evq.InvalidInput, "event 26: delay must be a number"),
        ({"name": "a.b", "delay": -1}, evq.InvalidInput, "event 26: delay must be zero or more"),
        ({"name": "a.b", "payload": {"x": "y" * 300}}, PayloadTooLarge, "event 26: payload is"),
        ("a.b", evq.InvalidInput, "event 26: expected an object"),
        ({"name": LooksLikeAName()}, evq.InvalidInput, "event 26: event name must be a string"),
        ({"name": "a.b", "key": LooksLikeAName()}, evq.InvalidInput, "event 26: an idempotency"),
        ({"name": "a.b", "delay": 10**400}, evq.InvalidInput, "event 26: delay must be a finite"),
        ({"name": "a.b", "delay": float("inf")}, evq.InvalidInput, "delay must be a finite"),
        ({"name": "a.b", "delay": True}, evq.InvalidInput, "event 26: delay must be a number"),
        # One event with two problems: the payload is reported, as it is checked first.
        ({"name": "a.b", "payload": {"t": (1,)}, "key": 5}, evq.InvalidInput, "26: payload['t']"),
    ],
)
def test_publish_many_names_the_first_bad_event_in_any_batch(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch, bad: object, error: type, message: str
) -> None:
    monkeypatch.setenv("EVQ_MAX_PAYLOAD", "200")
    evq.config.reset()
    events: list[object] = [{"name": "a.b", "payload": {"i": i}} for i in range(40)]
    events[25] = bad
    events[27] = events[33] = {"name": "bad name"}  # later bad events are not the ones reported
    with pytest.raises(error, match=re.escape(message)):
        evq.publish_many(events, batch_size=10)  # type: ignore[arg-type]
    assert not queue_path.exists()  # checked before the queue is even opened


def test_publish_many_keeps_keys_and_delays_per_event(queue_path: Path) -> None:
    ids = evq.publish_many(
        [
            {"name": "a.b", "payload": {"n": 1}, "key": "k1", "delay": 60},
            {"name": "a.c"},
            {"name": "a.b", "payload": {"n": 2}, "key": "k1"},
        ]
    )
    assert ids[0] == ids[2] != ids[1]
    with sqlite3.connect(queue_path) as conn:
        rows = conn.execute(
            "SELECT name, payload, key, due_at - published_at FROM evq_event ORDER BY seq"
        ).fetchall()
    assert rows == [("a.b", '{"n":1}', "k1", 60.0), ("a.c", "{}", None, 0.0)]
    with pytest.raises(evq.InvalidInput, match="batch_size must be at least 1"):
        evq.publish_many([{"name": "a.b"}], batch_size=0)
    fraction = evq.publish_many([{"name": "a.b", "delay": fractions.Fraction(1, 2)}])
    with sqlite3.connect(queue_path) as conn:
        (delay,) = conn.execute(
            "SELECT due_at - published_at FROM evq_event WHERE id = ?", fraction
        ).fetchone()
    assert delay == 0.5


class NotSqlite3:
    """A connection of another driver, to a database evq cannot write into."""


@pytest.mark.parametrize("connection", [object(), NotSqlite3()])
def test_publishing_within_a_connection_the_backend_cannot_use_is_refused(
    queue_path: Path, connection: object
) -> None:
    kind = type(connection)
    with pytest.raises(OutboxUnsupported) as info:
        evq.publish("order.paid", payload={}, connection=connection)

    assert f"{kind.__module__}.{kind.__qualname__}" in str(info.value)
    assert "sqlite3" in str(info.value)  # what would work
    assert isinstance(info.value, evq.InvalidInput)
    assert evq.publisher.queue().status().published == 0


def test_the_outbox_refuses_a_foreign_connection_through_the_queue_too(queue_path: Path) -> None:
    queue = evq.publisher.queue()
    assert "sqlite3" in queue.capabilities.outbox
    event = evq.publisher.prepare("order.paid", payload={})

    with pytest.raises(OutboxUnsupported, match=r"builtins\.object"):
        queue.publish_within(object(), [event])

    assert queue.event(event.id) is None


def test_a_connection_to_another_file_is_refused_and_nothing_is_written_there(
    queue_path: Path, tmp_path: Path
) -> None:
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    with pytest.raises(OutboxUnsupported, match="not to the queue file") as info, conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        evq.publish("order.paid", payload={}, connection=conn)
    assert str(other) in str(info.value)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert not any(name.startswith("evq_") for name in tables)
    conn.close()
    assert evq.publisher.queue().status().published == 0


def test_a_connection_through_a_link_to_the_queue_file_is_the_queue(
    queue_path: Path, tmp_path: Path
) -> None:
    evq.publisher.queue().publish([])
    link = tmp_path / "link.db"
    link.symlink_to(queue_path)
    conn = sqlite3.connect(link)
    with conn:
        event_id = evq.publish("order.paid", payload={}, connection=conn)
    conn.close()
    assert evq.publisher.queue().event(event_id) is not None
