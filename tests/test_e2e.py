"""End to end: `evq publish` and `evq worker --burst` as real processes, on every backend (and
what only a queue file can show, on SQLite)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner
from conftest import ROOT, calls, run_evq, stored_events

import evq
from evq.cli import cli


def test_every_event_reaches_every_matching_receiver_exactly_once(
    queue_url: str, tmp_path: Path
) -> None:
    ids = {}
    for name in ("order.created", "order.paid", "order.item.added", "user.created"):
        result = run_evq("publish", name, "--payload", '{"n": 1}')
        assert result.returncode == 0, result.stderr
        ids[name] = result.stdout.strip()

    result = run_evq("worker", "--burst", "--app", "tests.apps.recorder")
    assert result.returncode == 0, result.stderr

    expected = {
        (ids["order.created"], "bill"),
        (ids["order.created"], "ship"),
        (ids["order.created"], "audit"),
        (ids["order.paid"], "bill"),
        (ids["order.paid"], "ship"),
        (ids["order.paid"], "audit"),
        (ids["order.item.added"], "ship"),
        (ids["order.item.added"], "audit"),
        (ids["user.created"], "audit"),
    }
    counted = calls(tmp_path / "calls.log")
    assert set(counted) == expected
    assert set(counted.values()) == {1}


def test_async_receivers_are_awaited(queue_url: str, tmp_path: Path) -> None:
    ids = {evq.publish("async.ping", payload={"n": n}) for n in range(3)}
    result = run_evq("worker", "--burst", "--app", "tests.apps.asyncapp")
    assert result.returncode == 0, result.stderr
    assert set(calls(tmp_path / "calls.log")) == {(i, "remember") for i in ids}


def test_the_worker_command_through_clirunner(queue_url: str, tmp_path: Path) -> None:
    event_id = evq.publish("order.paid", payload={})
    result = CliRunner().invoke(
        cli, ["worker", "--burst", "--no-entry-points", "--app", "tests.apps.recorder"]
    )
    assert result.exit_code == 0, result.output
    assert set(calls(tmp_path / "calls.log")) == {
        (event_id, "bill"),
        (event_id, "ship"),
        (event_id, "audit"),
    }


def test_a_receiver_name_read_from_the_queue_is_never_imported_or_called(
    queue_path: Path,
) -> None:
    # Someone with write access to the file names a function of their choosing.
    marker = queue_path.parent / "called"
    evq.publish("order.paid", payload={})
    run_evq("worker", "--burst", "--app", "tests.apps.recorder")
    with sqlite3.connect(queue_path) as conn:
        conn.execute(
            "INSERT INTO evq_delivery (event_seq, receiver, state, due_at, created_at)"
            " SELECT seq, 'os:system', 'pending', 0, 0 FROM evq_event"
        )
        conn.execute("UPDATE evq_event SET payload = ?", (json.dumps({"cmd": f"touch {marker}"}),))
    conn.close()
    result = run_evq("worker", "--burst", "--app", "tests.apps.recorder")
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    with sqlite3.connect(queue_path) as conn:
        row = conn.execute(
            "SELECT state, last_error FROM evq_delivery WHERE receiver = 'os:system'"
        ).fetchone()
    conn.close()
    assert row == ("dead", "receiver os:system is not registered with the worker")


def test_the_queue_file_stops_growing_once_old_events_are_pruned(queue_path: Path) -> None:
    # Steady load: publish, deliver, prune what is past retention, again and again. SQLite
    # reuses the pages that pruning frees, so the file settles at the size of one period.
    sizes = []
    for _ in range(4):
        evq.publish_many([{"name": "order.created", "payload": {"n": "x" * 200}}] * 1500)
        assert run_evq("worker", "--burst", "--app", "tests.apps.recorder", "-q").returncode == 0
        assert run_evq("prune", "--older-than", "0s").returncode == 0
        # Measured with every page in the file: the write-ahead log keeps its high-water mark
        # (up to journal_size_limit), which says nothing about pages being reused.
        with contextlib.closing(sqlite3.connect(queue_path)) as conn:
            assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        sizes.append(queue_path.stat().st_size)
    assert sizes[3] <= sizes[1] * 1.05, sizes


def test_an_async_receivers_own_timeout_error_is_reported_as_its_own(queue_url: str) -> None:
    evq.publish("async.upstream", payload={})
    assert run_evq("worker", "--burst", "--app", "tests.apps.asyncapp").returncode == 0
    (event,) = stored_events(queue_url)
    (delivery,) = [d for d in event.deliveries if d.receiver.endswith(":call_upstream")]
    error, details = delivery.last_error, delivery.traceback
    assert details is not None
    assert error == "TimeoutError: the upstream API took too long"
    assert "call_upstream" in details


def test_the_quickstart_example_delivers_to_both_of_its_receivers(
    queue_url: str, tmp_path: Path
) -> None:
    example = str(ROOT / "examples" / "quickstart")
    assert (
        run_evq(
            "publish", "user.created", "--payload", '{"user_id": 42, "email": "ada@example.com"}'
        ).returncode
        == 0
    )
    result = run_evq(
        "worker", "--burst", "--app", "quickstart.subscriptions", PYTHONPATH=f"{example}:{ROOT}"
    )
    assert result.returncode == 0, result.stderr
    assert "[welcome] sending a welcome email to ada@example.com" in result.stdout
    assert "[audit]" in result.stdout and "user.created" in result.stdout
    assert "2 deliveries" in result.stderr
