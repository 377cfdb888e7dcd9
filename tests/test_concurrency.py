"""Several publishing processes and several workers on one queue at the same time (on every
backend), and threads racing to open one SQLite file."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, calls, delivery_states, evq_env
from workers import WorkerProcess, rows, wait_until

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
