"""An idle worker's wake-up: a commit wakes it at once, and it lets go of its watcher when it
stops. (The SQLite watcher itself: `tests/sqlite/test_wakeup.py`.)"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import run_evq
from workers import WorkerProcess, log_lines, wait_until

import evq
import evq.publisher
from evq.storage import open_queue
from evq.worker import LeasedStorage, WorkerOptions, create_consumer


@pytest.mark.timeout(60)
def test_an_idle_worker_delivers_a_new_event(queue_url: str, tmp_path: Path) -> None:
    # On every backend: each wakes its idle workers its own way.
    with WorkerProcess(tmp_path / "evq", "--app", "tests.apps.recorder", "-q"):
        time.sleep(1.5)  # idle long enough for any back-off to have grown
        event_id = evq.publish("order.created", payload={})
        wait_until(lambda: len(log_lines(tmp_path / "calls.log")) == 3, timeout=10)
    assert {line[0] for line in log_lines(tmp_path / "calls.log")} == {event_id}


class StoppedClock:
    """A clock that stands still, so that an idle worker's wait never reaches its deadline: only
    a wake-up can end it. `waited` is set once one wait has read it a few times, that is, once
    its watcher has come back empty-handed more than once: the wait is really waiting."""

    def __init__(self) -> None:
        self.readings = 0
        self.waited = threading.Event()

    def __call__(self) -> float:
        self.readings += 1
        if self.readings >= 4:
            self.waited.set()
        return 1_000_000.0


def idle_until_leased(
    storage: LeasedStorage, clock: StoppedClock, stop: threading.Event
) -> list[str]:
    """A worker's loop when there is nothing to do: look for work, and wait for some; return
    the event ids of the first leases it gets (none if `stop` is set first). (A watcher may
    wake it once with a "maybe", as Redis's does when it subscribes.)"""
    while not stop.is_set():
        batch = storage.queue.lease(storage.receivers.routing, owner=storage.owner, limit=10)
        if batch.leases:
            return [lease.event_id for lease in batch.leases]
        clock.readings = 0
        storage.wait_for_work(stop)
    return []


@pytest.mark.timeout(180)
def test_an_idle_worker_wakes_on_a_commit_and_not_before(queue_url: str) -> None:
    # On every backend whose queue another process reaches (`queue_url`), each waking its
    # idle workers its own way.
    # The worker's wait runs on a clock that stands still: its deadline never comes, so if a
    # commit did not wake it, it would wait for ever and the bounded join below fails. No
    # timing window decides the outcome: only whether the wake-up happened.
    importlib.import_module("tests.apps.recorder")
    queue = open_queue(queue_url)
    queue.check()  # the queue exists before the worker watches it
    queue.close()
    storage = create_consumer(WorkerOptions(url=queue_url)).huey.storage
    assert isinstance(storage, LeasedStorage)
    assert storage.queue.capabilities.wakeup
    clock = StoppedClock()
    storage.clock = clock
    stop = threading.Event()
    leased: set[str] = set()

    def idle_worker() -> None:
        leased.update(idle_until_leased(storage, clock, stop))

    published: set[str] = set()
    # Twice: a worker that was woken once waits, and is woken, just the same the next time.
    for _ in range(2):
        clock.waited.clear()
        waiting = threading.Thread(target=idle_worker)
        waiting.start()
        try:
            # Nothing committed: the wait goes on, round after round of its watcher.
            assert clock.waited.wait(60), "the idle wait never waited"
            assert waiting.is_alive() and leased == published

            result = run_evq("publish", "order.created", "--payload", "{}", EVQ_URL=queue_url)
            assert result.returncode == 0, result.stderr
            published.add(result.stdout.strip())

            waiting.join(60)
            assert not waiting.is_alive(), "a commit by another process did not wake the worker"
        finally:
            if waiting.is_alive():
                stop.set()
            waiting.join(60)
        assert leased == published
    storage.close()


@pytest.mark.timeout(180)
def test_two_idle_threads_of_one_worker_wait_together_and_a_commit_wakes_them(
    queue_path: Path,
) -> None:
    # One thread watches the queue; the other naps until it is done (a worker with --workers 2).
    importlib.import_module("tests.apps.recorder")
    evq.publish("order.created", payload={})  # the queue and its log exist
    storage = create_consumer(WorkerOptions(url=str(queue_path))).huey.storage
    assert isinstance(storage, LeasedStorage)
    storage.queue.lease(storage.receivers.routing, owner=storage.owner, limit=10)  # idle now
    clock = StoppedClock()
    storage.clock = clock
    stop = threading.Event()
    leased = threading.Event()
    failures: list[BaseException] = []

    def idle_thread() -> None:
        try:
            while not stop.is_set():
                batch = storage.queue.lease(
                    storage.receivers.routing, owner=storage.owner, limit=10
                )
                if batch.leases:
                    leased.set()
                storage.wait_for_work(stop)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=idle_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert clock.waited.wait(60), "the idle wait never waited"
        assert failures == [] and not leased.is_set()

        result = run_evq("publish", "order.created", "--payload", "{}")
        assert result.returncode == 0, result.stderr

        assert leased.wait(60), "a commit by another process did not wake the worker"
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert not any(thread.is_alive() for thread in threads)
    storage.close()


class SettableClock(StoppedClock):
    """A stopped clock the test can move on."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000_000.0

    def __call__(self) -> float:
        super().__call__()
        return self.now


@pytest.mark.timeout(180)
def test_an_idle_worker_wakes_when_its_next_delivery_falls_due_without_a_commit(
    queue_path: Path,
) -> None:
    # The worker knows when its next delivery (a retry, a delayed event) is due: its wait ends
    # then, however long its own deadline, with no commit to wake it. The clock only moves when
    # the test moves it, so the wait cannot end on time by chance.
    importlib.import_module("tests.apps.recorder")
    evq.publish("order.created", payload={}, delay=60)
    storage = create_consumer(WorkerOptions(url=str(queue_path))).huey.storage
    assert isinstance(storage, LeasedStorage)
    assert storage.dequeue_message() is None  # fanned out; nothing due for a minute
    clock = SettableClock()
    clock.now = time.time()
    storage.clock = clock
    stop = threading.Event()
    moved = threading.Event()
    early: list[None] = []
    failures: list[BaseException] = []

    def idle_wait() -> None:
        try:
            # One wait may end before the clock moves: woken by the lease's own commit.
            while not moved.is_set():
                storage.wait_for_work(stop, max_wait=3600)
                if not moved.is_set():
                    early.append(None)
        except BaseException as exc:
            failures.append(exc)

    waiting = threading.Thread(target=idle_wait)
    waiting.start()
    try:
        assert clock.waited.wait(60), "the idle wait never waited"
        assert waiting.is_alive() and failures == []

        moved.set()
        clock.now += 61  # the delivery is due now (the wait's own deadline is an hour away)

        waiting.join(60)
        assert not waiting.is_alive(), "the wait went on past the next delivery's due time"
    finally:
        stop.set()
        waiting.join(60)
    assert failures == []
    assert len(early) <= 1
    storage.close()


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
