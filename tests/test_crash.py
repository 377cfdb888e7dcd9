"""Crashes lose nothing: workers SIGKILLed at random moments, expired leases, heartbeats."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from conftest import calls, run_evq
from workers import WorkerProcess, group_pids, log_lines, rows, states, wait_until

import evq

LEASE = "2s"  # short, so that expiry comes quickly; not so short a busy heartbeat misses it


def _publish_backlog(count: int) -> list[str]:
    # order.created matches bill (order.*), ship (order.**) and audit (**): 3 receivers each.
    return evq.publish_many({"name": "order.created", "payload": {"n": n}} for n in range(count))


def _start_chaos_worker(queue_path: Path, worker_type: str) -> WorkerProcess:
    return WorkerProcess(
        queue_path,
        "--app",
        "tests.apps.recorder",
        "--workers",
        "2",
        "--worker-type",
        worker_type,
        "--lease",
        LEASE,
        "--quiet",
        name="chaos",
        EVQ_TEST_SLEEP="0.003",
    )


def _running(queue_path: Path) -> int:
    return int(rows(queue_path, "SELECT count(*) FROM evq_delivery WHERE state = 'running'")[0][0])


def _leases_held(queue_path: Path, worker: WorkerProcess) -> int:
    """How many deliveries a worker (any process of its group) holds leased now."""
    pids = group_pids(worker.pid)
    owners = rows(queue_path, "SELECT lease_owner FROM evq_delivery WHERE state = 'running'")
    return sum(1 for (owner,) in owners if owner and int(owner.rsplit(":", 1)[1]) in pids)


def _chaos(queue_path: Path, worker_type: str, *, events: int, kills: int, seed: int) -> None:
    ids = _publish_backlog(events)
    expected = {(event_id, r) for event_id in ids for r in ("bill", "ship", "audit")}
    rng = random.Random(seed)
    workers = [_start_chaos_worker(queue_path, worker_type) for _ in range(2)]
    held_when_killed = 0
    try:
        for kill in range(kills):
            if kill == 0:
                # The first kill lands while deliveries are leased, however fast the machine.
                wait_until(lambda: _running(queue_path), timeout=60)
            else:
                time.sleep(rng.uniform(0.3, 1.5))
            # Freeze both workers, see which leases each holds, then SIGKILL one worker (or
            # both, at random; the first time, those holding leases) with its children, and
            # restart it.
            for worker in workers:
                os.killpg(worker.pid, signal.SIGSTOP)
            held = [_leases_held(queue_path, worker) for worker in workers]
            chosen = [i for i in range(2) if held[i]] if kill == 0 else []
            chosen = chosen or rng.sample(range(2), rng.choice((1, 1, 2)))
            for index in chosen:
                workers[index].kill_group()
                held_when_killed += held[index]
                workers[index] = _start_chaos_worker(queue_path, worker_type)
            for index in set(range(2)) - set(chosen):
                os.killpg(workers[index].pid, signal.SIGCONT)
        wait_until(lambda: states(queue_path).get("done") == len(expected), timeout=240)
        for worker in workers:
            assert worker.stop() == 0, worker.stderr
            assert "database is locked" not in worker.stderr
    finally:
        for worker in workers:
            worker.kill_group()

    burst = run_evq("worker", "--burst", "--app", "tests.apps.recorder", "--lease", LEASE, "-q")
    assert burst.returncode == 0, burst.stderr

    counted = calls(queue_path.parent / "calls.log")
    lost = expected - set(counted)
    duplicates = sum(count - 1 for count in counted.values())
    print(
        f"\n{worker_type} workers, {kills} kills: {len(expected)} deliveries,"
        f" {len(lost)} lost, {duplicates} duplicates; {held_when_killed} leases held by killed"
        " workers"
    )
    assert not lost
    assert set(counted) == expected
    # The kills landed while deliveries were leased (otherwise this tested nothing), and each
    # delivery a killed worker held was taken back from it.
    assert held_when_killed > 0
    assert rows(queue_path, "SELECT count(*) FROM evq_attempt WHERE outcome = 'lost'")[0][0] > 0
    assert states(queue_path) == {"done": len(expected)}
    assert rows(queue_path, "SELECT count(*) FROM evq_event WHERE due_at IS NOT NULL") == [(0,)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_workers_killed_at_random_moments_lose_no_delivery(
    queue_path: Path, worker_type: str
) -> None:
    _chaos(queue_path, worker_type, events=300, kills=6, seed=3)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_workers_killed_again_and_again_lose_none_of_2000_events_times_3_receivers(
    queue_path: Path, worker_type: str
) -> None:
    _chaos(queue_path, worker_type, events=2000, kills=25, seed=7)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_a_delivery_whose_worker_was_killed_runs_again_after_its_lease_expires(
    queue_path: Path, worker_type: str
) -> None:
    log = queue_path.parent / "calls.log"
    event_id = evq.publish("slow.work", payload={"seconds": 30})
    app = ("--app", "tests.apps.reliability", "--lease", LEASE, "-q")
    with WorkerProcess(queue_path, *app, "--worker-type", worker_type) as first:
        wait_until(lambda: [event_id, "slow:start", "1"] in [line[:3] for line in log_lines(log)])
        first.kill_group()
    assert states(queue_path) == {"running": 1}

    with WorkerProcess(queue_path, *app, "--worker-type", worker_type) as second:
        wait_until(lambda: [event_id, "slow:start", "2"] in [line[:3] for line in log_lines(log)])
        second.kill_group()  # the forked child too: it runs the 30 s receiver

    history = rows(
        queue_path,
        "SELECT attempt, outcome, error FROM evq_attempt ORDER BY attempt",
    )
    assert history[0][:2] == (1, "lost")
    assert "lease expired" in history[0][2]
    # A lost worker is not the receiver's failure: it uses up no retry.
    assert rows(queue_path, "SELECT attempt, failures FROM evq_delivery") == [(2, 0)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_a_receiver_running_longer_than_its_lease_is_not_run_twice(
    queue_path: Path, worker_type: str
) -> None:
    log = queue_path.parent / "calls.log"
    event_id = evq.publish("slow.work", payload={"seconds": 3})
    app = ("--app", "tests.apps.reliability", "--lease", LEASE, "-q", "--worker-type", worker_type)
    with WorkerProcess(queue_path, *app) as first:
        wait_until(lambda: log_lines(log))
        with WorkerProcess(queue_path, *app) as second:
            wait_until(lambda: states(queue_path) == {"done": 1}, timeout=60)
            for worker in (first, second):
                assert worker.stop() == 0, worker.stderr
    assert [line[:3] for line in log_lines(log)] == [
        [event_id, "slow:start", "1"],
        [event_id, "slow:done", "1"],
    ]
    assert rows(queue_path, "SELECT attempt, outcome FROM evq_attempt") == [(1, "done")]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.timeout(60)
def test_process_workers_stop_and_give_leases_back_when_their_parent_is_killed(
    queue_path: Path,
) -> None:
    log = queue_path.parent / "calls.log"
    event_id = evq.publish("slow.work", payload={"seconds": 1})
    evq.publish_many({"name": "slow.work", "payload": {"seconds": 1}} for _ in range(4))
    options = (
        "--app",
        "tests.apps.reliability",
        "-q",
        "--worker-type",
        "process",
        "--lease",
        "10m",
    )
    with WorkerProcess(queue_path, *options) as worker:
        worker.wait_ready()
        children = wait_until(lambda: _children(worker.pid))
        wait_until(lambda: _started(log, event_id))
        worker.send(signal.SIGKILL)
        worker.wait()
        # The orphans ignore SIGTERM and SIGINT; they notice their parent is gone and stop.
        wait_until(lambda: not any(_alive(child) for child in children), timeout=20)
    lines = [line[:3] for line in log_lines(log)]
    assert lines == [[event_id, "slow:start", "1"], [event_id, "slow:done", "1"]]
    assert states(queue_path) == {"done": 1, "pending": 4}


def _started(log: Path, event_id: str) -> bool:
    return [event_id, "slow:start", "1"] in [line[:3] for line in log_lines(log)]


@pytest.mark.timeout(120)
def test_finished_deliveries_waiting_to_be_recorded_are_not_run_again_by_another_worker(
    queue_path: Path,
) -> None:
    # A worker records outcomes together with its next lease: those of a prefetched batch wait
    # until the batch is done, here longer than the lease. Their leases must stay alive.
    log = queue_path.parent / "calls.log"
    ids = evq.publish_many({"name": "slow.work", "payload": {"seconds": 0.4}} for _ in range(8))
    options = ("--app", "tests.apps.reliability", "-q", "--lease", LEASE)
    with WorkerProcess(queue_path, *options) as first:
        wait_until(lambda: states(queue_path) == {"running": 8})
        with WorkerProcess(queue_path, *options) as second:
            wait_until(lambda: states(queue_path) == {"done": 8}, timeout=60)
            for worker in (first, second):
                assert worker.stop() == 0, worker.stderr
    started = [line[0] for line in log_lines(log) if line[1] == "slow:start"]
    assert sorted(started) == sorted(ids)


@pytest.mark.timeout(60)
def test_finished_deliveries_are_recorded_while_slow_ones_behind_them_still_run(
    queue_path: Path,
) -> None:
    # One thread, three slow deliveries prefetched together: the first two outcomes must not
    # wait for the whole batch (a crash would repeat them, and `evq status` would lie).
    log = queue_path.parent / "calls.log"
    ids = [evq.publish("slow.work", payload={"seconds": 1.2}) for _ in range(3)]
    with WorkerProcess(queue_path, "--app", "tests.apps.reliability", "-q"):
        wait_until(
            lambda: sum(1 for line in log_lines(log) if line[1] == "slow:start") == 3, timeout=30
        )
        assert states(queue_path) == {"done": 2, "running": 1}
        done = rows(
            queue_path,
            "SELECT e.id FROM evq_delivery d JOIN evq_event e ON e.seq = d.event_seq"
            " WHERE d.state = 'done' ORDER BY e.id",
        )
        assert [event_id for (event_id,) in done] == sorted(ids)[:2]
