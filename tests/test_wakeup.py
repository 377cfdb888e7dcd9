"""An idle worker's wake-up: commits by other processes are noticed, nothing else wakes it."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import run_evq
from workers import WorkerProcess, log_lines, wait_until

import evq
from evq.wakeup import ChangeWatcher


def test_a_commit_by_another_process_wakes_the_watcher(queue_path: Path) -> None:
    evq.publish("a.b", payload={})  # creates the file and its log
    watcher = ChangeWatcher(str(queue_path))
    assert watcher.uses_inotify == sys.platform.startswith("linux")
    assert watcher.wait(0.2) is False  # nothing happened

    woke: list[bool] = []
    waiting = threading.Thread(target=lambda: woke.append(watcher.wait(30)))
    waiting.start()
    assert run_evq("publish", "a.b").returncode == 0
    waiting.join(30)
    assert woke == [True]
    watcher.close()


def test_without_inotify_the_watcher_polls(queue_path: Path) -> None:
    evq.publish("a.b", payload={})
    watcher = ChangeWatcher(str(queue_path))
    watcher._inotify = None  # as on a platform without inotify
    evq.publish("a.b", payload={})
    assert watcher.wait(1) is True
    assert watcher.wait(0.01) is False
    watcher.close()


@pytest.mark.timeout(60)
def test_an_idle_worker_delivers_a_new_event(queue_path: Path) -> None:
    with WorkerProcess(queue_path, "--app", "tests.apps.recorder", "-q"):
        time.sleep(1.5)  # idle long enough for any back-off to have grown
        event_id = evq.publish("order.created", payload={})
        wait_until(lambda: len(log_lines(queue_path.parent / "calls.log")) == 3, timeout=10)
    assert {line[0] for line in log_lines(queue_path.parent / "calls.log")} == {event_id}
