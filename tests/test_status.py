"""`evq status`: counts, oldest wait, rate and workers, for people, scripts and health checks,
on every backend."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import run_evq, start_evq, stored_events, without_warnings
from contract.steps import every_state
from terminal import run_in_terminal

from evq.cli import cli
from evq.storage import Queue, open_queue


@pytest.fixture
def queue(queue_url: str) -> Iterator[Queue]:
    handle = open_queue(queue_url)
    yield handle
    handle.close()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def check_status_document(document: dict[str, Any]) -> None:
    """The documented fields of `evq status --json`, with their types."""
    assert set(document) == {
        "queue",
        "time",
        "events",
        "deliveries",
        "oldest_pending_since",
        "oldest_pending_age_seconds",
        "deliveries_per_second",
        "delivered_last_minute",
        "failed_last_minute",
        "workers",
        "warnings",
    }
    assert isinstance(document["queue"], str)
    assert all(isinstance(warning, str) for warning in document["warnings"])
    assert isinstance(document["time"], str)
    assert set(document["events"]) == {"published", "awaiting_dispatch", "delayed"}
    assert set(document["deliveries"]) == {"pending", "scheduled", "running", "retrying", "dead"}
    for count in [*document["events"].values(), *document["deliveries"].values()]:
        assert isinstance(count, int)
    assert document["oldest_pending_since"] is None or isinstance(
        document["oldest_pending_since"], str
    )
    assert document["oldest_pending_age_seconds"] is None or isinstance(
        document["oldest_pending_age_seconds"], float
    )
    assert isinstance(document["deliveries_per_second"], float)
    for worker in document["workers"]:
        assert set(worker) == {"id", "hostname", "pid", "started_at", "seen_at", "info"}
        assert isinstance(worker["pid"], int)
        assert isinstance(worker["info"], dict)


def test_status_json_counts_deliveries_in_every_state(queue: Queue) -> None:
    every_state(queue, at=time.time())

    result = invoke("status", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    check_status_document(document)
    # The delayed event is not fanned out yet: it awaits dispatch, and is delayed.
    assert document["events"] == {"published": 6, "awaiting_dispatch": 1, "delayed": 1}
    assert document["deliveries"] == {
        "pending": 1,
        "scheduled": 0,
        "running": 1,
        "retrying": 1,
        "dead": 1,
    }
    # The pending delivery has been due for about 10 s; done, dead and retry finished 10 s ago.
    assert 5 < document["oldest_pending_age_seconds"] < 60
    assert document["delivered_last_minute"] == 1
    assert document["failed_last_minute"] == 2
    assert document["deliveries_per_second"] == 0.05


def test_status_piped_prints_one_name_and_value_per_line(queue: Queue) -> None:
    every_state(queue, at=time.time())

    result = run_evq("status")

    assert result.returncode == 0, result.stderr
    values = dict(line.split("\t") for line in result.stdout.splitlines())
    assert values["published"] == "6"
    assert values["dead"] == "1"
    assert values["retrying"] == "1"
    assert values["delayed"] == "1"
    assert float(values["oldest_pending_age_seconds"]) > 5
    assert "\x1b[" not in result.stdout


def test_status_on_a_terminal_draws_a_summary_for_people(queue: Queue) -> None:
    every_state(queue, at=time.time())

    result = run_in_terminal("status")

    assert result.returncode == 0, result.stdout
    assert "6 published" in result.stdout
    assert "1 dead" in result.stdout
    assert "Oldest wait" in result.stdout
    assert "deliveries/s over the last minute" in result.stdout


def test_status_lists_only_workers_seen_in_the_last_30_seconds(queue_path: Path) -> None:
    # On SQLite, whose heartbeat's time a test can move back; the rule is `rules`' own.
    queue = open_queue(str(queue_path))
    queue.worker_seen(
        "fresh", hostname="h1", pid=1, started_at=time.time() - 60, info='{"receivers": ["m:f"]}'
    )
    queue.worker_seen("stale", hostname="h2", pid=2, started_at=time.time() - 600, info="{}")
    with sqlite3.connect(queue_path) as conn:
        conn.execute("UPDATE evq_worker SET seen_at = seen_at - 300 WHERE id = 'stale'")

    result = invoke("status", "--json")

    workers = json.loads(result.stdout)["workers"]
    assert [worker["id"] for worker in workers] == ["fresh"]
    assert workers[0]["info"] == {"receivers": ["m:f"]}
    check_status_document(json.loads(result.stdout))
    piped = invoke("status").stdout.splitlines()
    assert [line.split("\t")[:2] for line in piped if line.startswith("worker")] == [
        ["worker", "fresh"]
    ]


def test_status_check_exits_0_on_a_healthy_queue(queue: Queue) -> None:
    queue.check()  # an empty queue, made as a worker makes it

    result = invoke("status", "--check")

    assert result.exit_code == 0
    assert result.stdout.startswith("ok")


def test_status_check_exits_1_with_a_reason_when_there_are_dead_letters(
    queue: Queue,
) -> None:
    every_state(queue, at=time.time())

    result = run_evq("status", "--check")

    assert result.returncode == 1
    assert without_warnings(result.stderr) == "unhealthy: 1 dead letter (see `evq dlq list`)\n"
    assert result.stdout == ""


def test_status_check_exits_1_when_a_delivery_waited_longer_than_max_age(
    queue: Queue,
) -> None:
    every_state(queue, at=time.time())
    assert queue.purge([letter.id for letter in queue.dead_letters()]) == 1

    assert invoke("status", "--check", "--max-age", "5m").exit_code == 0
    result = invoke("status", "--check", "--max-age", "2s")

    assert result.exit_code == 1
    assert "the oldest pending delivery has waited" in result.stderr
    assert len(without_warnings(result.stderr).splitlines()) == 1


def test_status_check_with_json_prints_the_document_too(queue: Queue) -> None:
    every_state(queue, at=time.time())

    result = invoke("status", "--check", "--json")

    assert result.exit_code == 1
    check_status_document(json.loads(result.stdout))


def test_status_of_a_missing_queue_exits_2_and_creates_no_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"

    result = run_evq("status", "--check", "--url", str(missing))

    assert result.returncode == 2
    assert result.stderr.startswith("Error: no queue at")
    assert not missing.exists()


def test_status_watch_piped_prints_a_block_per_interval_until_interrupted(
    queue: Queue,
) -> None:
    every_state(queue, at=time.time())
    process = start_evq("status", "--watch", "--interval", "0.1")
    assert process.stdout is not None
    blocks, lines = 0, 0
    while blocks < 2:
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else ""
        lines += 1
        if line == "\n":
            blocks += 1

    process.send_signal(signal.SIGINT)

    assert process.wait(timeout=30) == 0
    assert lines >= 2 * 10


def test_status_watch_json_prints_one_document_per_line(queue: Queue) -> None:
    queue.check()  # an empty queue, made as a worker makes it
    process = start_evq("status", "--watch", "--json", "--interval", "0.1")
    assert process.stdout is not None
    documents = [json.loads(process.stdout.readline()) for _ in range(2)]
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    for document in documents:
        check_status_document(document)


def test_status_watch_and_check_together_are_a_usage_error(queue: Queue, queue_url: str) -> None:
    queue.check()  # an empty queue, made as a worker makes it

    result = invoke("status", "--watch", "--check")

    assert result.exit_code == 2
    assert stored_events(queue_url) == []
