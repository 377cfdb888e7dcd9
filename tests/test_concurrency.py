"""Several publishing processes and several workers on one queue at the same time (on every
backend), and threads racing to open one SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, calls, delivery_states, evq_env
from workers import WorkerProcess, log_lines, rows, wait_until

import evq
from evq.publisher import prepare
from evq.storage import Queue, open_queue

PUBLISHERS = 4
EVENTS_PER_PUBLISHER = 200

# One event at a time, each its own transaction, as an application would publish them.
PUBLISHER = """
import sys
import evq
for n in range(int(sys.argv[1])):
    print(evq.publish("order.created", payload={"publisher": sys.argv[2], "n": n}), flush=True)
"""


@pytest.mark.timeout(180)
def test_four_publishers_and_two_workers_lose_nothing_double_nothing_and_never_lock(
    queue_url: str, tmp_path: Path
) -> None:
    app = ("--app", "tests.apps.recorder", "--workers", "2", "--quiet")
    workers = [
        WorkerProcess(tmp_path / "evq", *app, "--worker-type", kind)
        for kind in ("thread", "process")
    ]
    try:
        publishers = [
            subprocess.Popen(
                [sys.executable, "-c", PUBLISHER, str(EVENTS_PER_PUBLISHER), str(index)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=evq_env(),
                cwd=ROOT,
            )
            for index in range(PUBLISHERS)
        ]
        ids = []
        for publisher in publishers:
            out, err = publisher.communicate(timeout=120)
            assert publisher.returncode == 0, err
            assert "locked" not in err
            ids.extend(out.split())
        assert len(set(ids)) == PUBLISHERS * EVENTS_PER_PUBLISHER

        expected = {(event_id, r) for event_id in ids for r in ("bill", "ship", "audit")}
        log = tmp_path / "calls.log"
        wait_until(lambda: len(calls(log)) == len(expected), timeout=120, interval=0.2)
        for worker in workers:
            assert worker.stop() == 0, worker.stderr
            assert "locked" not in worker.stderr
            assert "Traceback" not in worker.stderr
    finally:
        for worker in workers:
            worker.kill_group()

    counted = calls(log)
    assert set(counted) == expected
    assert set(counted.values()) == {1}, "a delivery ran twice without any crash"
    assert delivery_states(queue_url) == {"done": len(expected)}


@pytest.mark.timeout(120)
def test_threads_racing_to_a_queue_handle_first_use_all_publish(queue_path: Path) -> None:
    # Threads of one process share one connection behind a lock; the first use opens it. Threads
    # racing to that first use must not end up in one transaction ("cannot start a transaction
    # within a transaction").
    open_queue(str(queue_path)).close()
    for _ in range(20):
        handle = open_queue(str(queue_path))
        barrier = threading.Barrier(6)
        failures: list[BaseException] = []

        def publish(
            handle: Queue = handle,
            barrier: threading.Barrier = barrier,
            failures: list[BaseException] = failures,
        ) -> None:
            barrier.wait()
            try:
                for _ in range(3):
                    handle.publish([prepare("order.created", payload={})])
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=publish) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        handle.close()
        assert not failures
    assert rows(queue_path, "SELECT count(*) FROM evq_event") == [(20 * 6 * 3,)]


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


@pytest.mark.timeout(90)
def test_a_process_worker_that_dies_is_replaced_and_deliveries_go_on(queue_path: Path) -> None:
    # A forked process worker killed on its own (the OOM killer, a segfault in an extension):
    # the worker starts another one, which delivers what comes next.
    log = queue_path.parent / "calls.log"
    receivers = ("bill", "ship", "audit")
    options = ("--app", "tests.apps.recorder", "-q", "--worker-type", "process")
    with WorkerProcess(queue_path, *options) as worker:
        first = evq.publish("order.created", payload={})
        wait_until(lambda: calls(log) == {(first, r): 1 for r in receivers})
        (delivering,) = {int(line[3]) for line in log_lines(log)}  # the process that ran them
        assert delivering in _children(worker.pid)
        os.kill(delivering, signal.SIGKILL)
        wait_until(lambda: delivering not in _children(worker.pid))
        second = evq.publish("order.created", payload={})
        wait_until(lambda: all(calls(log)[second, r] for r in receivers), timeout=60)
        assert worker.stop() == 0, worker.stderr
    assert calls(log) == {(event_id, r): 1 for event_id in (first, second) for r in receivers}
