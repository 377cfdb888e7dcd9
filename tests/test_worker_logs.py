"""`evq worker --log-format json` (or EVQ_LOG_FORMAT=json): every line the worker writes is one
JSON object with a time, a level, a message and the delivery's fields, tracebacks and outages
included."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import run_evq, start_evq
from test_faults import fill, needs_root, publish_orders, small_disk  # noqa: F401 - a fixture
from workers import states, wait_until

import evq
from evq.cli.log_format import JSONFormatter

OUTCOMES = "tests.apps.outcomes"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Parse every line of `text` as JSON (any other line fails the test), checking the fields
    every line has."""
    entries = []
    for line in text.splitlines():
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert TIME.fullmatch(entry["time"]), line
        assert entry["level"] in {"debug", "info", "warning", "error", "critical"}, line
        assert isinstance(entry["message"], str) and entry["message"], line
        assert isinstance(entry["logger"], str) and isinstance(entry["pid"], int), line
        entries.append(entry)
    return entries


@pytest.mark.parametrize(
    ("worker_type", "how"), [("thread", "option"), ("process", "option"), ("thread", "env")]
)
def test_every_line_is_json_with_the_fields_of_each_delivery(
    queue_path: Path, worker_type: str, how: str
) -> None:
    ok = evq.publish("outcome.ok", payload={"n": 0})
    flaky = evq.publish("outcome.flaky", payload={"n": 1})
    bad = evq.publish("outcome.bad", payload={"n": 2})
    evq.publisher.queue().close()
    args = ["worker", "--app", OUTCOMES, "--worker-type", worker_type]
    if how == "option":
        worker = start_evq(*args, "--log-format", "json")
    else:
        worker = start_evq(*args, EVQ_LOG_FORMAT="json")
    wait_until(lambda: states(queue_path) == {"done": 2, "dead": 1}, timeout=60)
    worker.send_signal(signal.SIGTERM)
    stdout, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    assert stdout == ""
    entries = json_lines(stderr)
    assert entries[0]["message"].startswith("evq worker ")
    assert entries[-1]["message"].startswith("stopped after ")
    # Every attempt counted, those the forked process workers ran too.
    assert entries[-1]["message"].endswith(", 4 deliveries")
    deliveries = {(e["event_id"], e["attempt"]): e for e in entries if "event_id" in e}
    assert sorted(deliveries) == sorted([(ok, 1), (flaky, 1), (flaky, 2), (bad, 1)])

    done = deliveries[ok, 1]
    assert done["level"] == "info" and done["outcome"] == "done"
    assert done["event_name"] == "outcome.ok"
    assert done["receiver"] == f"{OUTCOMES}:accept"
    assert done["message"].startswith(f"done outcome.ok {ok} -> {OUTCOMES}:accept (attempt 1)")
    assert isinstance(done["duration_seconds"], float) and done["duration_seconds"] >= 0
    assert "error" not in done and "traceback" not in done

    retry = deliveries[flaky, 1]
    assert retry["level"] == "warning" and retry["outcome"] == "retry"
    assert retry["error"] == "ConnectionError: upstream unavailable for 1"
    assert retry["traceback"].startswith("Traceback (most recent call last):")
    assert retry["traceback"].rstrip().endswith("ConnectionError: upstream unavailable for 1")
    assert retry["retry_in_seconds"] == 0.05
    assert deliveries[flaky, 2]["outcome"] == "done"

    dead = deliveries[bad, 1]
    assert dead["level"] == "error" and dead["outcome"] == "dead"
    assert dead["error"] == "ValueError: cannot parse the order"
    assert "raise ValueError" in dead["traceback"]
    if worker_type == "process":  # the deliveries' lines come from the forked processes
        assert {e["pid"] for e in deliveries.values()} != {entries[0]["pid"]}


def test_plain_lines_stay_the_default(queue_path: Path) -> None:
    evq.publish("outcome.ok", payload={})
    result = run_evq("worker", "--app", OUTCOMES, "--burst")
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert re.match(r"\S+Z INFO evq worker ", first), first


@needs_root
def test_an_outage_and_the_worker_giving_up_are_json_lines_too(
    tmp_path: Path,
    small_disk: Path,  # noqa: F811 - the fixture
) -> None:
    queue = small_disk / "evq.db"
    publish_orders(queue, 3000)
    fill(small_disk, leave_kib=150)
    env = {"EVQ_URL": str(queue), "EVQ_TEST_LOG": str(tmp_path / "calls.log")}
    args = ["--burst", "-q", "--lease", "1s", "--app", "tests.apps.recorder"]
    stuck = run_evq("worker", *args, "--log-format", "json", **env)
    assert stuck.returncode == 1
    entries = json_lines(stuck.stderr)
    outages = [e for e in entries if e["message"].startswith("cannot use the queue")]
    assert outages and outages[0]["level"] == "error" and "disk is full" in outages[0]["message"]
    last = entries[-1]
    assert last["level"] == "critical"
    assert last["message"].startswith("the worker stopped:") and "disk is full" in last["message"]


def test_a_logged_exception_is_a_field_of_its_one_line() -> None:
    logger = logging.getLogger("tests.json")
    record = None
    try:
        raise RuntimeError("boom\nwith a second line")
    except RuntimeError:
        record = logger.makeRecord(
            "tests.json", logging.ERROR, __file__, 1, "failed: %s", ("x\udcff",), sys.exc_info()
        )
    line = JSONFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed: x\udcff"
    assert entry["level"] == "error"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("RuntimeError: boom\nwith a second line")
