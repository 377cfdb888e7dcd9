"""The SQLite backend's watcher: a commit by any process wakes it within milliseconds."""

from __future__ import annotations

import sqlite3
import sys
import threading
from pathlib import Path

from conftest import run_evq

import evq
from evq.storage import open_queue
from evq.storage.sqlite.wakeup import ChangeWatcher


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
    if watcher._inotify is not None:
        watcher._inotify.close()
    watcher._inotify = None  # as on a platform without inotify
    evq.publish("a.b", payload={})
    assert watcher.wait(1) is True
    assert watcher.wait(0.01) is False
    watcher.close()


def test_the_queue_gives_a_watcher_when_it_can_wake_workers(queue_path: Path) -> None:
    queue = open_queue(str(queue_path))
    queue.publish([])
    assert queue.capabilities.wakeup
    watcher = queue.watch()
    assert watcher is not None
    try:
        assert watcher.wait(0.05) is False
        evq.publish("a.b", payload={})
        assert watcher.wait(5) is True
    finally:
        watcher.close()


def test_a_write_to_the_log_that_is_not_a_commit_does_not_wake_the_watcher(
    queue_path: Path,
) -> None:
    evq.publish("a.b", payload={})
    watcher = ChangeWatcher(str(queue_path))
    writer = sqlite3.connect(queue_path, isolation_level=None)
    try:
        # A long transaction of another connection: with a cache of one page, its pages spill to
        # the log before it commits, which inotify reports as a write like any other.
        log = Path(f"{queue_path}-wal")
        size = log.stat().st_size
        writer.execute("PRAGMA cache_size = 1")
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("CREATE TABLE scratch (data BLOB)")
        for _ in range(50):
            writer.execute("INSERT INTO scratch VALUES (?)", (bytes(4000),))
        assert log.stat().st_size > size  # written, not committed

        assert watcher.wait(5) is False  # nothing to read yet: no wake-up

        writer.execute("COMMIT")
        assert watcher.wait(30) is True
    finally:
        writer.close()
        watcher.close()


def test_a_watcher_made_before_the_queue_exists_makes_it_and_wakes_on_the_first_publish(
    queue_path: Path,
) -> None:
    assert not queue_path.exists()
    watcher = ChangeWatcher(str(queue_path))  # as a worker started before any publish
    try:
        assert queue_path.exists()
        assert watcher.wait(0.05) is False
        evq.publish("a.b", payload={})
        assert watcher.wait(30) is True
    finally:
        watcher.close()
