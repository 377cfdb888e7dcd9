"""`evq worker --receiver PATTERN`: a worker runs only the matching receivers and leaves the
others' deliveries to other workers, never as dead letters; `evq list-subscribers` and the
worker's start-up log show the selection; a pattern that matches nothing is bad input."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import calls, run_evq
from workers import rows

import evq

RECORDER = ("--no-entry-points", "--app", "tests.apps.recorder")


def test_a_worker_runs_only_its_receivers_and_leaves_the_others(queue_path: Path) -> None:
    event_id = evq.publish("order.paid", payload={})

    result = run_evq("worker", "--burst", *RECORDER, "--receiver", "tests.apps.recorder:bill")
    assert result.returncode == 0, result.stderr
    assert set(calls(queue_path.parent / "calls.log")) == {(event_id, "bill")}
    assert sorted(rows(queue_path, "SELECT receiver, state FROM evq_delivery")) == [
        ("tests.apps.recorder:audit", "pending"),
        ("tests.apps.recorder:bill", "done"),
        ("tests.apps.recorder:ship", "pending"),
    ]
    assert "running 1 of 3 receivers (--receiver tests.apps.recorder:bill)" in result.stderr
    assert "order.** -> tests.apps.recorder:ship  (not run here)" in result.stderr

    # The others, through the variable, with a wildcard.
    result = run_evq(
        "worker",
        "--burst",
        *RECORDER,
        EVQ_RECEIVER="tests.apps.recorder:s* tests.apps.recorder:au*",
    )
    assert result.returncode == 0, result.stderr
    assert calls(queue_path.parent / "calls.log") == {
        (event_id, "bill"): 1,
        (event_id, "ship"): 1,
        (event_id, "audit"): 1,
    }
    assert rows(queue_path, "SELECT count(*) FROM evq_delivery WHERE state != 'done'") == [(0,)]


def test_a_worker_of_every_receiver_still_dead_letters_unknown_ones(queue_path: Path) -> None:
    # The one rule --receiver changes: only an unselective worker dead-letters deliveries of
    # receivers it does not know (a receiver removed from the code).
    evq.publish("order.paid", payload={})
    assert run_evq("worker", "--burst", *RECORDER, "--receiver", "*:bill").returncode == 0
    result = run_evq("worker", "--burst", "--no-entry-points", "--app", "tests.apps.asyncapp")
    assert result.returncode == 0, result.stderr
    assert sorted(rows(queue_path, "SELECT receiver, state FROM evq_delivery")) == [
        ("tests.apps.recorder:audit", "dead"),
        ("tests.apps.recorder:bill", "done"),
        ("tests.apps.recorder:ship", "dead"),
    ]


def test_a_pattern_that_matches_no_receiver_is_refused(queue_path: Path) -> None:
    evq.publish("order.paid", payload={})
    result = run_evq("worker", "--burst", *RECORDER, "--receiver", "tests.apps.recorder:bil")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines == [
        "Error: --receiver 'tests.apps.recorder:bil' matches none of the loaded receivers"
        " (tests.apps.recorder:audit, tests.apps.recorder:bill, tests.apps.recorder:ship)"
    ]
    assert rows(queue_path, "SELECT count(*) FROM evq_delivery") == [(0,)]

    listed = run_evq("list-subscribers", *RECORDER, "--receiver", "nope:*")
    assert listed.returncode == 2
    assert listed.stderr.startswith("Error: --receiver 'nope:*' matches none")


def test_list_subscribers_shows_which_receivers_a_selection_runs(queue_path: Path) -> None:
    result = run_evq("list-subscribers", *RECORDER, "--receiver", "*:bill", "--json")
    assert result.returncode == 0, result.stderr
    assert {(r["receiver"], r["run"]) for r in json.loads(result.stdout)} == {
        ("tests.apps.recorder:audit", False),
        ("tests.apps.recorder:bill", True),
        ("tests.apps.recorder:ship", False),
    }
    plain = run_evq("list-subscribers", *RECORDER, "--json")
    assert all("run" not in record for record in json.loads(plain.stdout))
