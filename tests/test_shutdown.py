"""Graceful shutdown on SIGTERM and SIGINT: running receivers finish or give their delivery
back, prefetched deliveries go back at once, and a second signal stops at once. On every
backend: giving a lease back is the backend's."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from conftest import delivery_states, stored_events
from workers import WorkerProcess, log_lines, wait_until

import evq

APP = ("--app", "tests.apps.reliability", "-q")
BOTH_SIGNALS_BOTH_TYPES = [
    ("thread", signal.SIGTERM),
    ("thread", signal.SIGINT),
    ("process", signal.SIGTERM),
    ("process", signal.SIGINT),
    ("thread", signal.SIGHUP),
    ("process", signal.SIGHUP),
]


def _started(log: Path, event_id: str, attempt: int = 1) -> bool:
    return [event_id, "slow:start", str(attempt)] in [line[:3] for line in log_lines(log)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("worker_type", "signum"), BOTH_SIGNALS_BOTH_TYPES)
def test_a_stop_signal_lets_the_running_receiver_finish(
    queue_url: str, tmp_path: Path, worker_type: str, signum: int
) -> None:
    log = tmp_path / "calls.log"
    event_id = evq.publish("slow.work", payload={"seconds": 1.5})
    with WorkerProcess(tmp_path / "evq", *APP, "--worker-type", worker_type) as worker:
        wait_until(lambda: _started(log, event_id))
        assert worker.stop(signum) == 0, worker.stderr
    assert [line[1] for line in log_lines(log)] == ["slow:start", "slow:done"]
    assert delivery_states(queue_url) == {"done": 1}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("worker_type", "signum"), BOTH_SIGNALS_BOTH_TYPES)
def test_after_the_shutdown_timeout_the_lease_goes_back_for_another_worker_at_once(
    queue_url: str, tmp_path: Path, worker_type: str, signum: int
) -> None:
    log = tmp_path / "calls.log"
    event_id = evq.publish("slow.work", payload={"seconds": 30})
    # A lease of 10 minutes: the second worker can only take the delivery because it was given back.
    options = (*APP, "--worker-type", worker_type, "--lease", "10m")
    with WorkerProcess(tmp_path / "evq", *options, "--shutdown-timeout", "0.3s") as worker:
        wait_until(lambda: _started(log, event_id))
        stopped_at = time.time()
        assert worker.stop(signum) == 0, worker.stderr
    ((delivery,),) = [event.deliveries for event in stored_events(queue_url)]
    assert (delivery.state, delivery.attempts, delivery.worker) == ("pending", 1, None)
    assert delivery.due_at is not None
    # On a server the due time is the server's clock: allow a second of difference.
    assert stopped_at - 1 <= delivery.due_at <= time.time() + 1
    assert [(a.attempt, a.outcome) for a in delivery.history] == [(1, "interrupted")]

    with WorkerProcess(tmp_path / "evq", *options) as second:
        wait_until(lambda: _started(log, event_id, attempt=2), timeout=30)
        second.kill_group()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_prefetched_deliveries_that_never_started_are_given_back_on_shutdown(
    queue_url: str, tmp_path: Path, worker_type: str
) -> None:
    log = tmp_path / "calls.log"
    ids = evq.publish_many({"name": "slow.work", "payload": {"seconds": 30}} for _ in range(5))
    options = (*APP, "--worker-type", worker_type, "--lease", "10m", "--shutdown-timeout", "0.3s")
    with WorkerProcess(tmp_path / "evq", *options) as worker:
        wait_until(lambda: log_lines(log))
        assert delivery_states(queue_url) == {"running": 5}  # one runs, four are prefetched
        assert worker.stop() == 0, worker.stderr
    assert len(log_lines(log)) == 1
    assert delivery_states(queue_url) == {"pending": 5}
    # The four that never started get their attempt number back.
    events = stored_events(queue_url)
    attempts = {event.id: event.deliveries[0].attempts for event in events}
    assert sorted(attempts.values()) == [0, 0, 0, 0, 1]
    assert set(attempts) == set(ids)
    assert [e.deliveries[0].worker for e in events] == [None] * 5


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("worker_type", "signum"), BOTH_SIGNALS_BOTH_TYPES)
def test_a_second_signal_stops_at_once(
    queue_url: str, tmp_path: Path, worker_type: str, signum: int
) -> None:
    log = tmp_path / "calls.log"
    event_id = evq.publish("slow.work", payload={"seconds": 30})
    options = (*APP, "--worker-type", worker_type, "--shutdown-timeout", "5m")
    with WorkerProcess(tmp_path / "evq", *options) as worker:
        wait_until(lambda: _started(log, event_id))
        worker.wait_ready()
        worker.send(signum)
        time.sleep(0.3)
        assert worker.process.poll() is None, "the first signal waits for the receiver"
        worker.send(signal.SIGINT if signum == signal.SIGTERM else signal.SIGTERM)
        worker.wait(timeout=10)
        assert worker.process.returncode == 0, worker.stderr
        assert "Traceback" not in worker.stderr
    assert [line[1] for line in log_lines(log)] == ["slow:start"]
    # Stopped at once, without waiting for the receiver: its lease is still given back, so that
    # another worker runs the delivery now rather than when the lease expires.
    assert delivery_states(queue_url) == {"pending": 1}


@pytest.mark.timeout(60)
def test_a_thread_that_stops_first_leaves_the_delivery_another_thread_runs_alone(
    queue_url: str, tmp_path: Path
) -> None:
    # Two threads, one idle: it stops at once, and must not give back the lease of the
    # receiver the other one is running (which would then run again).
    log = tmp_path / "calls.log"
    event_id = evq.publish("slow.work", payload={"seconds": 1.5})
    with WorkerProcess(tmp_path / "evq", *APP, "--workers", "2") as worker:
        wait_until(lambda: _started(log, event_id))
        assert worker.stop() == 0, worker.stderr
    assert [line[1] for line in log_lines(log)] == ["slow:start", "slow:done"]
    ((delivery,),) = [event.deliveries for event in stored_events(queue_url)]
    assert (delivery.state, delivery.attempts) == ("done", 1)
    assert [(a.attempt, a.outcome) for a in delivery.history] == [(1, "done")]
