"""The memory backend's watcher: a write of this process that may bring new work wakes it, and
a wait that no such write ends says so."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from evq.publisher import prepare
from evq.storage import open_queue, rules
from evq.storage.contract import EventSelection, Queue, Routing
from evq.storage.memory import drop

URL = "memory://test-memory-watching"


@pytest.fixture
def queue() -> Iterator[Queue]:
    yield open_queue(URL)
    drop(URL)


@pytest.mark.timeout(60)
def test_a_publish_wakes_the_watcher_once(queue: Queue) -> None:
    watcher = queue.watch()
    assert watcher is not None
    assert watcher.wait(0.05) is False  # nothing written since it was made

    open_queue(URL).publish([prepare("order.created", payload={})])  # another handle

    assert watcher.wait(30) is True
    assert watcher.wait(0.05) is False  # that write was told once
    watcher.close()


@pytest.mark.timeout(60)
def test_a_publish_wakes_a_thread_waiting_on_the_watcher(queue: Queue) -> None:
    watcher = queue.watch()
    assert watcher is not None
    woke: list[bool] = []
    waiting = threading.Thread(target=lambda: woke.append(watcher.wait(3600)), daemon=True)
    waiting.start()
    time.sleep(0.2)  # most likely waiting by now; if not, the write is there when it looks

    queue.publish([prepare("order.created", payload={})])

    # Only the wake-up can end an hour's wait within the bounded join.
    waiting.join(30)
    assert woke == [True]


def test_a_replay_wakes_the_watcher_and_a_dry_run_does_not(queue: Queue) -> None:
    at = time.time() - 60
    queue.publish([prepare("order.created", payload={}, now=at)], now=at)
    routing = Routing(subscriptions=(("**", "shop:bill"),), lease_seconds={"shop:bill": 30.0})
    queue.lease(routing, owner="w", limit=0, now=at)  # fanned out: now it can be replayed
    watcher = queue.watch()
    assert watcher is not None

    assert rules.replay(queue, EventSelection(), dry_run=True) == 1
    assert watcher.wait(0.05) is False  # nothing was written

    assert rules.replay(queue, EventSelection()) == 1
    assert watcher.wait(0.05) is True
