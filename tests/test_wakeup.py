"""An idle worker's wake-up: a commit wakes it at once, and it lets go of its watcher when it
stops. (The SQLite watcher itself: `tests/sqlite/test_wakeup.py`.)"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
from pathlib import Path

import pytest
from workers import WorkerProcess, log_lines, wait_until

import evq
import evq.publisher
from evq.worker import WorkerOptions, create_consumer


@pytest.mark.timeout(60)
def test_an_idle_worker_delivers_a_new_event(queue_url: str, tmp_path: Path) -> None:
    # On every backend: each wakes its idle workers its own way.
    with WorkerProcess(tmp_path / "evq", "--app", "tests.apps.recorder", "-q"):
        time.sleep(1.5)  # idle long enough for any back-off to have grown
        event_id = evq.publish("order.created", payload={})
        wait_until(lambda: len(log_lines(tmp_path / "calls.log")) == 3, timeout=10)
    assert {line[0] for line in log_lines(tmp_path / "calls.log")} == {event_id}


def held_open(queue_path: Path) -> list[str]:
    """What this process holds open of the queue (its file, log and shared memory) and of
    inotify, one entry per descriptor."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(queue_path)) or "inotify" in target:
                found.append(target)
    return sorted(found)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
@pytest.mark.timeout(60)
def test_a_worker_closes_its_watcher_and_its_queue_when_it_stops(queue_path: Path) -> None:
    event_id = evq.publish("order.created", payload={})
    # SQLite keeps a closed connection's descriptor of a file open while another connection of
    # the process holds a lock on that file: close the publisher's, so that the count is exact.
    evq.publisher.queue().close()
    before = held_open(queue_path)
    assert not [target for target in before if target.startswith(str(queue_path))]
    importlib.import_module("tests.apps.recorder")
    consumer = create_consumer(WorkerOptions(url=str(queue_path), burst=True))
    storage = consumer.huey.storage
    watchers: list[object] = []
    change_watcher = storage._change_watcher

    def remember() -> object:
        watcher = change_watcher()
        watchers.append(watcher)
        return watcher

    storage._change_watcher = remember  # type: ignore[method-assign]

    consumer.run()

    assert {line[0] for line in log_lines(queue_path.parent / "calls.log")} == {event_id}
    assert watchers and watchers[0] is not None  # the worker did watch the queue
    assert held_open(queue_path) == before
