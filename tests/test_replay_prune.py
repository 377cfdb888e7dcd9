"""`evq replay` (deliver past events again) and retention (`evq prune`, and the worker's own)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import calls, run_evq, start_evq
from queue_states import Subscribers, every_state, finish, publish, rows, take

from evq.cli import cli
from evq.publisher import prepare
from evq.storage.sqlite import EventSelection, SqliteQueue

DAY = 86400.0
AUDIT = "tests.apps.recorder:audit"


@pytest.fixture
def queue(queue_path: Path) -> SqliteQueue:
    return SqliteQueue(str(queue_path))


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def count(path: Path, table: str) -> int:
    return int(rows(path, f"SELECT count(*) FROM {table}")[0][0])  # type: ignore[call-overload]


# Replay


def test_replay_of_a_time_range_to_one_receiver_delivers_those_events_again(
    queue: SqliteQueue, queue_path: Path
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

    delivered = calls(queue_path.parent / "calls.log")
    assert delivered[(middle, "audit")] == 2
    assert delivered[(old, "audit")] == delivered[(new, "audit")] == 1
    assert delivered[(middle, "bill")] == delivered[(middle, "ship")] == 1
    shown = json.loads(invoke("show", middle, "--json").stdout)
    replays = [d for d in shown["deliveries"] if d["replay"]]
    assert [(d["receiver"], d["state"]) for d in replays] == [(AUDIT, "done")]


def test_replay_backfills_a_receiver_that_never_had_the_event(queue: SqliteQueue) -> None:
    at = time.time() - 60
    event = publish(queue, "order.created", at=at)
    finish(queue, take(queue, now=at), "done", at=at)

    created = queue.replay(EventSelection(name="order.*"), receiver="shop:new_receiver")

    assert created == 1
    record = queue.event(event)
    assert record is not None
    assert [(d["receiver"], d["state"], d["replay"]) for d in record["delivery_list"]] == [
        ("tests.apps.states:handle", "done", False),
        ("shop:new_receiver", "pending", True),
    ]


def test_replay_without_receiver_goes_to_every_receiver_that_had_the_event(
    queue: SqliteQueue,
) -> None:
    at = time.time() - 60
    publish(queue, "order.created", at=at)
    router = Subscribers(["shop:bill", "shop:ship"])
    finish(queue, take(queue, now=at, router=router), "done", at=at)

    assert invoke("replay", "--name", "order.created", "--dry-run").stdout == (
        "Would create 2 replay deliveries.\n"
    )
    result = invoke("replay", "--name", "order.created", "--json")

    assert json.loads(result.stdout) == {"deliveries": 2, "dry_run": False}
    # Again one per receiver, however many deliveries (replays included) it had.
    assert queue.replay(EventSelection(name="order.created")) == 2


def test_replay_skips_events_not_dispatched_yet(queue: SqliteQueue) -> None:
    every_state(queue, at=time.time())

    # Five dispatched events with one delivery each; the delayed one is not dispatched.
    assert queue.replay_count(EventSelection(since=0)) == 5
    assert queue.replay_count(EventSelection(since=0), receiver="shop:other") == 5


def test_replay_without_a_selection_is_refused_unless_all_is_given(queue: SqliteQueue) -> None:
    every_state(queue, at=time.time())

    refused = run_evq("replay", "--receiver", AUDIT)
    assert refused.returncode == 2
    assert "--all" in refused.stderr
    allowed = invoke("replay", "--all", "--dry-run")
    assert (allowed.exit_code, allowed.stdout) == (0, "Would create 5 replay deliveries.\n")


def test_replay_to_a_receiver_without_module_name_exits_2(queue: SqliteQueue) -> None:
    every_state(queue, at=time.time())

    result = run_evq("replay", "--all", "--receiver", "audit")

    assert result.returncode == 2
    assert result.stderr.startswith("Error: invalid receiver 'audit'")


# Retention


def test_prune_deletes_only_old_events_whose_deliveries_are_all_done(
    queue: SqliteQueue, queue_path: Path
) -> None:
    now = time.time()
    # Built oldest last: a lease at a later time would take the older unfinished deliveries.
    keyed = queue.publish(
        [prepare("order.created", payload={}, key="order-1", now=now - 11 * DAY)]
    )[0]
    finish(queue, take(queue, now=now - 11 * DAY), "done", at=now - 11 * DAY)
    recent = every_state(queue, at=now)
    old = every_state(queue, at=now - 10 * DAY)

    pruned = queue.prune(now - 7 * DAY, now=now)

    assert pruned == 2
    assert queue.event(old.done) is None
    assert queue.event(keyed) is None
    for kept in (old.dead, old.retrying, old.running, old.pending, old.delayed, recent.done):
        assert queue.event(kept) is not None
    # Kept: 5 recent deliveries, and the old dead, retrying, running, pending and delayed ones
    # (an event with a delay is fanned out at once, to a delivery due when the delay ends).
    assert count(queue_path, "evq_delivery") == 10
    assert count(queue_path, "evq_attempt") == 5
    # The idempotency key went with its event: it can be published again.
    assert queue.publish([prepare("order.created", payload={}, key="order-1")]) != [keyed]


def test_prune_walks_past_events_it_must_keep_from_batch_to_batch(queue: SqliteQueue) -> None:
    at = time.time() - 10 * DAY
    kept = []
    for index in range(5):
        publish(queue, "order.created", at=at + index)
        finish(queue, take(queue, now=at + index), "done", at=at + index)
        kept.append(publish(queue, "order.paid", at=at + index + 0.5))
        finish(queue, take(queue, now=at + index + 0.5), "dead", at=at + index + 0.5)

    assert queue.prunable_count(time.time()) == 5
    assert queue.prune(time.time(), batch_size=2) == 5

    assert [e["id"] for e in queue.events(limit=None)] == kept[::-1]
    assert queue.prunable_count(time.time()) == 0


def test_prune_forgets_old_statistics_and_workers_gone_for_a_day(
    queue: SqliteQueue, queue_path: Path
) -> None:
    now = time.time()
    queue.worker_seen("gone", started_at=now - 3 * DAY, info="{}")
    queue.conn.execute("UPDATE evq_worker SET seen_at = ?", (now - 2 * DAY,))
    queue.worker_seen("alive", started_at=now, info="{}")
    queue.conn.execute(
        "INSERT INTO evq_stat VALUES (?, 1, 0), (?, 1, 0)", (int(now - 2 * DAY), int(now))
    )

    queue.prune(now - 7 * DAY, now=now)

    assert rows(queue_path, "SELECT id FROM evq_worker") == [("alive",)]
    assert rows(queue_path, "SELECT second FROM evq_stat") == [(int(now),)]


def test_prune_command_dry_run_then_prune(queue: SqliteQueue) -> None:
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
    queue: SqliteQueue, queue_path: Path
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
