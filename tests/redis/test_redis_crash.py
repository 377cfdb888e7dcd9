"""Crashes lose nothing on Redis: workers SIGKILLed at random moments mid-backlog (thread and
process workers), and three worker processes sharing one backlog deliver each delivery once."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from conftest import calls, run_evq
from redis_server import redis_url_fixture  # noqa: F401
from workers import WorkerProcess, group_pids, wait_until

from evq.publisher import prepare
from evq.storage import open_queue

LEASE = "2s"
RECEIVERS = ("bill", "ship", "audit")


def _publish_backlog(url: str, count: int) -> set[tuple[str, str]]:
    queue = open_queue(url)
    try:
        ids = queue.publish([prepare("order.created", payload={"n": n}) for n in range(count)])
    finally:
        queue.close()
    return {(event_id, receiver) for event_id in ids for receiver in RECEIVERS}


def _unfinished(url: str) -> int:
    queue = open_queue(url)
    try:
        s = queue.status()
    finally:
        queue.close()
    return s.awaiting_dispatch + s.pending + s.scheduled + s.running + s.retrying + s.dead


def _leases_held(url: str) -> set[int]:
    """The pids of the processes that hold a lease now (from the deliveries' lease owners,
    `...:<pid>`)."""
    queue = open_queue(url)
    try:
        running = queue.events(status="running", limit=None)
        records = [queue.event(e.id) for e in running]
    finally:
        queue.close()
    return {
        int(d.worker.rsplit(":", 1)[1])
        for record in records
        if record is not None
        for d in record.deliveries
        if d.state == "running" and d.worker
    }


def _worker(tmp_path: Path, worker_type: str, workers: str = "2") -> WorkerProcess:
    return WorkerProcess(
        tmp_path / "evq.db",
        "--app",
        "tests.apps.recorder",
        "--workers",
        workers,
        "--worker-type",
        worker_type,
        "--lease",
        LEASE,
        "--quiet",
        name="chaos",
        EVQ_TEST_SLEEP="0.003",
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_workers_killed_at_random_moments_lose_no_delivery(
    redis_url: str, tmp_path: Path, worker_type: str
) -> None:
    expected = _publish_backlog(redis_url, 300)
    rng = random.Random(3)
    workers = [_worker(tmp_path, worker_type) for _ in range(2)]
    try:
        for kill in range(6):
            if kill == 0:
                # The first kill lands while deliveries are leased, however fast the machine:
                # both workers frozen, one that holds leases is killed.
                wait_until(lambda: _leases_held(redis_url), timeout=60)
                for worker in workers:
                    os.killpg(worker.pid, signal.SIGSTOP)
                owners = _leases_held(redis_url)
                chosen = [i for i in range(2) if group_pids(workers[i].pid) & owners]
            else:
                time.sleep(rng.uniform(0.3, 1.5))
                chosen = rng.sample(range(2), rng.choice((1, 1, 2)))
            for index in chosen or [0]:
                workers[index].kill_group()
                workers[index] = _worker(tmp_path, worker_type)
            for worker in workers:
                os.killpg(worker.pid, signal.SIGCONT)
        wait_until(lambda: _unfinished(redis_url) == 0, timeout=240)
        for worker in workers:
            assert worker.stop() == 0, worker.stderr
    finally:
        for worker in workers:
            worker.kill_group()
    burst = run_evq("worker", "--burst", "--app", "tests.apps.recorder", "--lease", LEASE, "-q")
    assert burst.returncode == 0, burst.stderr

    counted = calls(tmp_path / "calls.log")
    lost = expected - set(counted)
    duplicates = sum(count - 1 for count in counted.values())
    print(f"\n{worker_type} workers on Redis: {len(lost)} lost, {duplicates} duplicates")
    assert not lost
    assert set(counted) == expected
    # The kills landed while deliveries were leased: otherwise this tested nothing.
    queue = open_queue(redis_url)
    histories = [queue.event(event_id) for event_id in {e for e, _ in expected}]
    queue.close()
    assert any(
        attempt.outcome == "lost"
        for record in histories
        if record is not None
        for d in record.deliveries
        for attempt in d.history
    )


@pytest.mark.timeout(300)
def test_three_worker_processes_drain_one_backlog_delivering_each_delivery_once(
    redis_url: str, tmp_path: Path
) -> None:
    expected = _publish_backlog(redis_url, 400)
    workers = [_worker(tmp_path, "thread", workers="2") for _ in range(3)]
    try:
        wait_until(lambda: _unfinished(redis_url) == 0, timeout=240)
        for worker in workers:
            assert worker.stop() == 0, worker.stderr
    finally:
        for worker in workers:
            worker.kill_group()
    counted = calls(tmp_path / "calls.log")
    assert set(counted) == expected
    assert set(counted.values()) == {1}
    pids = {line.split()[3] for line in (tmp_path / "calls.log").read_text().splitlines()}
    assert len(pids) == 3  # every worker took part
