"""Retries with backoff and jitter, evq.Retry, dont_retry, timeouts and dead letters.

Each `evq worker --burst` run makes one attempt of every due delivery and exits; the test then
reads the retry time the worker stored, and makes the delivery due at once instead of waiting.
On every backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from backends import make_retries_due
from conftest import run_evq, stored_events
from workers import log_lines

import evq

APP = ("--app", "tests.apps.reliability", "-q")


def _burst(*args: str) -> None:
    result = run_evq("worker", "--burst", *APP, *args)
    assert result.returncode == 0, result.stderr


def _delivery(url: str, receiver: str) -> dict[str, Any]:
    """The one delivery to `receiver`, as `evq show --json` has it (`attempt` is the number of
    attempts made, `history` each attempt's number and outcome)."""
    (delivery,) = [
        d
        for event in stored_events(url)
        for d in event.deliveries
        if d.receiver == f"tests.apps.reliability:{receiver}"
    ]
    return {
        "state": delivery.state,
        "attempt": delivery.attempts,
        "failures": delivery.failures,
        "due_at": delivery.due_at,
        "finished_at": delivery.finished_at,
        "last_error": delivery.last_error,
        "traceback": delivery.traceback,
        "history": [(a.attempt, a.outcome) for a in delivery.history],
    }


def _attempts(log: Path, receiver: str) -> list[int]:
    return [int(line[2]) for line in log_lines(log) if line[1] == receiver]


@pytest.mark.timeout(120)
def test_failed_attempts_are_retried_with_backoff_jitter_and_a_maximum_then_dead_lettered(
    queue_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    evq.publish("fail.always", payload={})
    evq.publish("fail.jitter", payload={})
    evq.publish("retry.ask", payload={})

    # always_fails: retry_delay=10, retry_backoff=3, max_retry_delay=100, no jitter, retries=4.
    # jittery: retry_delay=10, retry_backoff=2, max_retry_delay=30, jitter, retries=4.
    # asks_for_retry: raises evq.Retry(delay=42) on attempts 1 and 2.
    for failures, (exact, jittered) in enumerate(
        [(10, 10), (30, 20), (90, 30), (100, 30)], start=1
    ):
        _burst()
        always = _delivery(queue_url, "always_fails")
        assert always["state"] == "retrying"
        assert (always["attempt"], always["failures"]) == (failures, failures)
        # On a server the times are the server's: the delay counts from when it stored the
        # outcome, a few milliseconds after the worker's `finished_at`.
        assert always["due_at"] - always["finished_at"] == pytest.approx(exact, abs=0.5)
        assert always["last_error"] == f"ValueError: boom on attempt {failures}"
        jitter = _delivery(queue_url, "jittery")
        assert jittered / 2 <= jitter["due_at"] - jitter["finished_at"] <= jittered
        if failures <= 2:
            asked = _delivery(queue_url, "asks_for_retry")
            assert asked["state"] == "retrying"
            assert asked["due_at"] - asked["finished_at"] == pytest.approx(42, abs=0.5)
            assert asked["last_error"] == "Retry: the order is not paid yet"
        make_retries_due(queue_url)

    _burst()
    dead = _delivery(queue_url, "always_fails")
    assert (dead["state"], dead["attempt"], dead["failures"], dead["due_at"]) == (
        "dead",
        5,
        5,
        None,
    )
    assert dead["last_error"] == "ValueError: boom on attempt 5 (gave up after 5 failed attempts)"
    assert "in always_fails" in dead["traceback"]
    assert "ValueError: boom on attempt 5" in dead["traceback"]
    assert _delivery(queue_url, "jittery")["state"] == "dead"
    assert _delivery(queue_url, "asks_for_retry")["state"] == "done"

    assert _attempts(log, "always_fails") == [1, 2, 3, 4, 5]
    assert _attempts(log, "asks_for_retry") == [1, 2, 3]
    history = _delivery(queue_url, "always_fails")["history"]
    assert history == [(1, "retry"), (2, "retry"), (3, "retry"), (4, "retry"), (5, "dead")]


@pytest.mark.timeout(60)
def test_an_error_listed_in_dont_retry_makes_a_dead_letter_at_once(
    queue_url: str, tmp_path: Path
) -> None:
    evq.publish("fail.fatal", payload={})
    _burst()
    dead = _delivery(queue_url, "fatal")
    assert (dead["state"], dead["attempt"]) == ("dead", 1)
    assert dead["last_error"] == "Fatal: cannot ever work"
    assert "raise Fatal" in dead["traceback"]
    assert _attempts(tmp_path / "calls.log", "fatal") == [1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_a_receiver_running_past_its_timeout_fails_the_attempt(
    queue_url: str, tmp_path: Path, worker_type: str
) -> None:
    evq.publish("slow.timeout", payload={"seconds": 20})
    _burst("--worker-type", worker_type)
    dead = _delivery(queue_url, "too_slow")
    assert dead["state"] == "dead"
    assert dead["last_error"] == "timed out after 0.5s"
    assert "DeliveryTimeout" in dead["traceback"]
    receivers = [line[1] for line in log_lines(tmp_path / "calls.log")]
    assert receivers == ["too_slow:start"]
