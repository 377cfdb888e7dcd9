"""`evq replay` (deliver past events again) and retention (`evq prune`, and the worker's own),
on every backend."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import calls, run_evq, start_evq
from contract.steps import every_state, finish, publish, routing_for, take

from evq.cli import cli
from evq.storage import Queue, open_queue, rules
from evq.storage.contract import EventSelection

DAY = 86400.0
AUDIT = "tests.apps.recorder:audit"


@pytest.fixture
def queue(queue_url: str) -> Iterator[Queue]:
    handle = open_queue(queue_url)
    yield handle
    handle.close()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# Replay


def test_replay_of_a_time_range_to_one_receiver_delivers_those_events_again(
    queue: Queue, tmp_path: Path
) -> None:
    now = time.time()
    old = publish(queue, "order.created", at=now - 7200)
    middle = publish(queue, "order.created", at=now - 3600)
    new = publish(queue, "order.created", at=now)
    assert run_evq("worker", "--burst", "--app", "tests.apps.recorder").returncode == 0

    dry = run_evq("replay", "--since", "90m", "--until", "30m", "--receiver", AUDIT, "--dry-run")
    assert (dry.returncode, dry.stdout) == (0, "Would create 1 replay delivery.\n")
    result = run_evq("replay", "--since", "90m", "--until", "30m", "--receiver", AUDIT)
    assert (result.returncode, result.stdout) == (0, "Created 1 replay delivery.\n")
    assert run_evq("worker", "--burst", "--app", "tests.apps.recorder").returncode == 0

    delivered = calls(tmp_path / "calls.log")
    assert delivered[(middle, "audit")] == 2
    assert delivered[(old, "audit")] == delivered[(new, "audit")] == 1
    assert delivered[(middle, "bill")] == delivered[(middle, "ship")] == 1
    shown = json.loads(invoke("show", middle, "--json").stdout)
    replays = [d for d in shown["deliveries"] if d["replay"]]
    assert [(d["receiver"], d["state"]) for d in replays] == [(AUDIT, "done")]


def test_replay_without_receiver_goes_to_every_receiver_that_had_the_event(
    queue: Queue,
) -> None:
    at = time.time() - 60
    publish(queue, "order.created", at=at)
    routing = routing_for("shop:bill", "shop:ship")
    finish(queue, take(queue, now=at, routing=routing), "done", at=at)

    assert invoke("replay", "--name", "order.created", "--dry-run").stdout == (
        "Would create 2 replay deliveries.\n"
    )
    result = invoke("replay", "--name", "order.created", "--json")

    assert json.loads(result.stdout) == {"deliveries": 2, "dry_run": False}
    # Again one per receiver, however many deliveries (replays included) it had.
    assert rules.replay(queue, EventSelection(name="order.created")) == 2


def test_replay_without_a_selection_is_refused_unless_all_is_given(queue: Queue) -> None:
    every_state(queue, at=time.time())

    refused = run_evq("replay", "--receiver", AUDIT)
    assert refused.returncode == 2
    assert "--all" in refused.stderr
    allowed = invoke("replay", "--all", "--dry-run")
    assert (allowed.exit_code, allowed.stdout) == (0, "Would create 5 replay deliveries.\n")


def test_replay_to_a_receiver_without_module_name_exits_2(queue: Queue) -> None:
    every_state(queue, at=time.time())

    result = run_evq("replay", "--all", "--receiver", "audit")

    assert result.returncode == 2
    assert result.stderr.startswith("Error: invalid receiver 'audit'")


# Retention


def test_prune_command_dry_run_then_prune(queue: Queue) -> None:
    every_state(queue, at=time.time())
    every_state(queue, at=time.time() - 40 * DAY)

    dry = run_evq("prune", "--older-than", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("Would delete 1 finished event published before ")
    result = invoke("prune", "--older-than", "30d", "--json")
    document = json.loads(result.stdout)
    assert set(document) == {"events", "before", "dry_run"}
    assert (document["events"], document["dry_run"]) == (1, False)
    assert isinstance(document["before"], str)
    again = run_evq("prune", "--older-than", "30d")
    assert again.stdout.startswith("Deleted 0 finished events")


def test_prune_of_a_missing_queue_exits_2(tmp_path: Path) -> None:
    result = run_evq("prune", "--url", str(tmp_path / "none.db"))

    assert result.returncode == 2
    assert not (tmp_path / "none.db").exists()


def test_worker_prunes_events_older_than_evq_retention_on_its_own(
    queue: Queue, tmp_path: Path
) -> None:
    old = every_state(queue, at=time.time() - 3 * DAY)
    worker = start_evq("worker", "--app", "tests.apps.recorder", EVQ_RETENTION="2d")
    try:
        deadline = time.monotonic() + 60
        while queue.event(old.done) is not None:
            assert time.monotonic() < deadline, "the worker did not prune"
            assert worker.poll() is None
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    assert queue.event(old.dead) is not None
