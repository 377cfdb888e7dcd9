"""Reading the event log on Redis: the log is read a page of ids at a time, forward and
backward, and a replay's cursor holds with a time range; values evq did not write are shown as
damaged, never as a crash; a stopped worker leaves nothing behind; and a failed read says
what it was doing."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from contract.steps import RECEIVER, finish, publish, routing_for, take
from redis_server import redis_url_fixture  # noqa: F401

from evq.errors import StorageError
from evq.storage import open_queue, rules
from evq.storage.contract import AttemptRecord, EventSelection
from evq.storage.redis import inspecting
from evq.storage.redis.connection import parse_url


def client_of(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.split("?", 1)[0], decode_responses=True)


def test_the_log_is_listed_and_replayed_across_pages_without_gaps_or_repeats(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inspecting, "PAGE", 3)  # seven events: two full pages and one more
    queue = open_queue(redis_url)
    try:
        at = time.time() - 60
        ids = [publish(queue, "order.created", at=at + n) for n in range(7)]
        queue.lease(routing_for(), owner="w", limit=0, now=at + 7)  # fan out

        assert [event.id for event in queue.events(limit=None, now=at + 8)] == ids[::-1]
        pending = queue.events(status="pending", limit=None, now=at + 8)
        assert [event.id for event in pending] == ids[::-1]
        assert rules.replay(queue, EventSelection(since=0), batch_size=7) == 7
        # Each event once more: its delivery and its replay.
        listed = queue.events(limit=None)
        assert [(event.id, sum(event.counts.values())) for event in listed] == [
            (event_id, 2) for event_id in ids[::-1]
        ]
    finally:
        queue.close()


def test_a_replay_with_a_time_range_goes_on_after_its_cursor(redis_url: str) -> None:
    queue = open_queue(redis_url)
    try:
        at = time.time() - 60
        ids = [publish(queue, "order.created", at=at + n) for n in range(3)]
        queue.lease(routing_for(), owner="w", limit=0, now=at + 3)
        selection = EventSelection(since=at - 1)

        def step(after: str | None) -> tuple[int, str | None]:
            return queue.replay_step(
                selection, receiver=None, after=after, batch_size=2, now=at + 4, dry_run=True
            )

        count, cursor = step(None)
        assert (count, cursor) == (2, ids[1])
        assert step(cursor) == (1, None)
    finally:
        queue.close()


def test_a_delivery_and_attempt_evq_did_not_write_are_shown_as_dead_and_damaged(
    redis_url: str,
) -> None:
    queue = open_queue(redis_url)
    client, base = client_of(redis_url), parse_url(redis_url).base
    try:
        at = time.time() - 60
        event_id = publish(queue, "order.created", at=at)
        (lease,) = take(queue, now=at)
        finish(queue, [lease], "done", at=at + 1)
        client.hset(base + "d:" + lease.delivery_id, mapping={"state": "lost", "attempt": "x"})
        client.hset(base + "h:" + lease.delivery_id, "1", "not json")

        record = queue.event(event_id, now=at + 2)
        (listed,) = queue.events(now=at + 2)

        assert record is not None
        (delivery,) = record.deliveries
        assert (delivery.receiver, delivery.state, delivery.attempts) == (RECEIVER, "dead", 0)
        assert delivery.history == (
            AttemptRecord(
                attempt=1,
                outcome="damaged",
                worker=None,
                started_at=None,
                finished_at=0.0,
                error="not json",
            ),
        )
        assert record.counts["dead"] == listed.counts["dead"] == 1
        assert (record.status, listed.status) == ("dead", "dead")
    finally:
        queue.close()


def test_a_stopped_worker_leaves_no_key_behind(redis_url: str) -> None:
    queue = open_queue(redis_url)
    client, base = client_of(redis_url), parse_url(redis_url).base
    try:
        queue.worker_seen("w1", hostname="h", pid=1, started_at=time.time(), info="{}")
        queue.worker_seen("w2", hostname="h", pid=2, started_at=time.time(), info="{}")
        queue.worker_stopped("w1")

        assert client.hkeys(base + "workers") == ["w2"]
        assert client.zrange(base + "workers_seen", 0, -1) == ["w2"]
    finally:
        queue.close()


def test_a_failed_read_says_what_it_was_reading(redis_url: str) -> None:
    queue = open_queue(redis_url)
    client, base = client_of(redis_url), parse_url(redis_url).base
    try:
        at = time.time() - 60
        event_id = publish(queue, "order.created", at=at)
        queue.lease(routing_for(), owner="w", limit=0, now=at)
        client.set(base + "stats", "not a hash")
        with pytest.raises(StorageError, match=r"failed to read the statistics: .*WRONGTYPE"):
            queue.finished_per_minute(minutes=1, now=at)
        client.set(base + "ed:" + event_id, "not a list")
        with pytest.raises(StorageError, match=r"failed to read the event log: .*WRONGTYPE"):
            queue.events(now=at)
        with pytest.raises(StorageError, match=r"failed to read an event: .*WRONGTYPE"):
            queue.event(event_id, now=at)
    finally:
        queue.close()


@pytest.mark.parametrize(
    ("key", "read", "doing"),
    [
        ("names", lambda q: q.events(EventSelection(name="order.*")), "read the event log"),
        ("log", lambda q: q.events(), "read the event log"),
        ("dead", lambda q: q.events(status="dead"), "read the event log"),
        (
            "workers",
            lambda q: q.worker_seen("w", hostname="h", pid=1, started_at=0, info="{}"),
            "record a worker",
        ),
        ("workers_seen", lambda q: q.worker_stopped("w"), "forget a worker"),
    ],
)
def test_a_failed_read_or_write_of_an_index_says_what_it_was_doing(
    redis_url: str, key: str, read: Any, doing: str
) -> None:
    queue = open_queue(redis_url)
    client, base = client_of(redis_url), parse_url(redis_url).base
    try:
        publish(queue, "order.created", at=time.time() - 60)
        assert len(queue.events()) == 1  # in the log, out of the inbox
        client.delete(base + key)
        client.set(base + key, "not an index")
        with pytest.raises(StorageError, match=rf"failed to {doing}: .*WRONGTYPE"):
            read(queue)
    finally:
        queue.close()
