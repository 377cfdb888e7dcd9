"""An idle worker on Redis blocks reading the queue's streams and wakes on a publish by
another process, at almost no CPU. (How fast it wakes is measured, not asserted: the latency
section of benchmarks/redis.py.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from contract.steps import publish, take
from redis_server import RedisServer, redis_url_fixture  # noqa: F401

from evq.storage import open_queue


def test_a_watcher_blocked_in_a_wait_wakes_on_a_publish_and_not_before(redis_url: str) -> None:
    worker, publisher = open_queue(redis_url, role="work"), open_queue(redis_url)
    watcher = worker.watch()
    assert watcher is not None
    try:
        watcher.wait(0.1)  # learns where the streams end
        assert watcher.wait(0.2) is False  # nothing published: it times out
        for _ in range(5):
            sent: list[float] = []

            def publish_later(sent: list[float] = sent) -> None:
                sent.append(time.monotonic())
                publish(publisher, "a.b", at=time.time())

            timer = threading.Timer(0.2, publish_later)
            timer.start()
            # Woken by the publish: a watcher that missed it would wait the whole minute and
            # say False; one that woke without it would find nothing sent yet.
            assert watcher.wait(60) is True
            assert sent
            timer.join()
    finally:
        watcher.close()
        worker.close()
        publisher.close()


def test_an_idle_watcher_uses_almost_no_cpu(redis_url: str) -> None:
    queue = open_queue(redis_url, role="work")
    watcher = queue.watch()
    assert watcher is not None
    try:
        watcher.wait(0.1)
        cpu, wall = time.process_time(), time.monotonic()
        while time.monotonic() - wall < 2:
            watcher.wait(0.5)
        assert (time.process_time() - cpu) / 2 < 0.02
    finally:
        watcher.close()
        queue.close()


def test_work_added_while_no_one_waits_wakes_the_next_wait_and_only_that_one(
    redis_url: str,
) -> None:
    worker, publisher = open_queue(redis_url, role="work"), open_queue(redis_url)
    watcher = worker.watch()
    assert watcher is not None
    try:
        watcher.wait(0.1)  # learns where the streams end
        # Published between two waits (the worker was busy): into the inbox, and a delayed
        # event, which the script announces on the wake-up stream.
        publish(publisher, "a.b", at=time.time())
        assert watcher.wait(0.001) is True
        take(worker, now=time.time())  # the worker takes it from the inbox
        assert watcher.wait(0.2) is False  # seen: no second wake-up for it
        publish(publisher, "a.b", at=time.time(), delay=3600)
        assert watcher.wait(0.001) is True
        assert watcher.wait(0.2) is False
    finally:
        watcher.close()
        worker.close()
        publisher.close()


def test_a_watcher_started_after_work_was_announced_says_maybe_once_then_only_for_new_work(
    redis_url: str,
) -> None:
    worker, publisher = open_queue(redis_url, role="work"), open_queue(redis_url)
    publish(publisher, "a.b", at=time.time(), delay=3600)  # announced on the wake-up stream
    publish(publisher, "a.b", at=time.time())  # in the inbox
    watcher = worker.watch()
    assert watcher is not None
    try:
        # Work may have come before it knew where the streams ended: maybe.
        assert watcher.wait(0.1) is True
        # The entries that were there already wake it no more.
        assert watcher.wait(0.2) is False
        publish(publisher, "a.b", at=time.time())
        assert watcher.wait(5) is True
    finally:
        watcher.close()
        worker.close()
        publisher.close()


def test_a_watcher_that_loses_its_server_says_maybe_and_watches_again_once_it_is_back(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path, "--save", "")
    server.start()
    url = server.url + "?prefix=p"
    worker, publisher = open_queue(url, role="work"), open_queue(url)
    watcher = worker.watch()
    assert watcher is not None
    try:
        assert watcher.wait(0.1) is True  # learns where the streams end
        server.kill()
        # Maybe: the worker looks, and its outage handling takes over.
        assert watcher.wait(0.2) is True
        server.start()
        assert watcher.wait(0.2) is True  # work may have come while it could not watch
        assert watcher.wait(0.2) is False
        publish(publisher, "a.b", at=time.time())
        assert watcher.wait(5) is True
    finally:
        watcher.close()
        worker.close()
        publisher.close()
        server.kill()
