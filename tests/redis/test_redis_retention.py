"""Replay and prune on Redis alone: a step the server refuses or a key of the wrong type fails
in one line naming the step, and an event whose hash was lost is never counted as prunable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from contract.steps import finish, publish, take
from redis_server import redis_url_fixture, scripts_refused  # noqa: F401

from evq.errors import StorageError
from evq.storage import open_queue, rules
from evq.storage.contract import EventSelection, Queue
from evq.storage.redis.connection import parse_url

DAY = 86400.0


def client_of(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.split("?", 1)[0], decode_responses=True)


def finished_long_ago(queue: Queue) -> str:
    """Publish an event ten days ago and deliver it; return its id."""
    at = time.time() - 10 * DAY
    event_id = publish(queue, "order.created", at=at)
    finish(queue, take(queue, now=at), "done", at=at + 1)
    return event_id


@pytest.fixture
def no_scripts(tmp_path: Path) -> Iterator[tuple[Queue, str]]:
    """A queue holding one event delivered ten days ago, on a server that refuses scripts
    (`scripts_refused`); and the URL's location."""
    with scripts_refused(tmp_path, finished_long_ago) as (queue, location, _):
        yield queue, location


def test_a_replay_prune_or_forget_the_server_refuses_fails_in_one_line_naming_it(
    no_scripts: tuple[Queue, str],
) -> None:
    queue, where = no_scripts
    steps = [
        ("replay events", lambda: rules.replay(queue, EventSelection(since=0))),
        ("prune events", lambda: rules.prune(queue, time.time())),
        ("forget statistics", lambda: queue.forget_old_statistics()),
    ]
    for doing, step in steps:
        with pytest.raises(StorageError) as caught:
            step()
        message = str(caught.value)
        assert message == (
            f"Redis at {where} failed to {doing}:"
            " this user has no permissions to run the 'evalsha' command"
        )
    # Reading is allowed: the dry runs count without a script.
    assert rules.replay(queue, EventSelection(since=0), dry_run=True) == 1
    assert rules.prune(queue, time.time(), dry_run=True) == 1


@pytest.mark.parametrize("damaged", ["log", "event"])
def test_a_prune_that_meets_a_key_of_the_wrong_type_fails_in_one_line_naming_the_read(
    redis_url: str, damaged: str
) -> None:
    queue = open_queue(redis_url)
    event_id = finished_long_ago(queue)
    key = parse_url(redis_url).base + ("log" if damaged == "log" else "e:" + event_id)
    client = client_of(redis_url)
    client.delete(key)
    client.set(key, "not a sorted set nor a hash")
    client.close()

    with pytest.raises(StorageError) as caught:
        rules.prune(queue, time.time())

    message = str(caught.value)
    assert message.startswith(
        f"Redis at {parse_url(redis_url).location} failed to read the event log: "
    )
    assert message.endswith("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert "\n" not in message
    queue.close()


def test_an_event_whose_hash_was_lost_is_neither_pruned_nor_counted_by_a_dry_run(
    redis_url: str,
) -> None:
    # The event's hash gone (evicted, or deleted by hand) while its id and its finished
    # delivery stay: nothing says it was fanned out, so it is not finished.
    queue = open_queue(redis_url)
    event_id = finished_long_ago(queue)
    client = client_of(redis_url)
    client.delete(parse_url(redis_url).base + "e:" + event_id)
    client.close()

    assert rules.prune(queue, time.time(), dry_run=True) == 0
    assert rules.prune(queue, time.time()) == 0
    queue.close()


def test_a_replay_skips_a_delivery_whose_hash_is_gone_instead_of_replaying_to_nobody(
    redis_url: str,
) -> None:
    # A dead letter purged between replay's reads (or a hash evicted) leaves its id in the
    # event's list of deliveries: there is no receiver to replay to, as on the SQL backends.
    queue = open_queue(redis_url)
    try:
        at = time.time() - DAY
        event_id = publish(queue, "order.created", at=at)
        (lease,) = take(queue, now=at)
        finish(queue, [lease], "done", at=at + 1)
        client_of(redis_url).delete(parse_url(redis_url).base + "d:" + lease.delivery_id)

        assert rules.replay(queue, EventSelection(name="order.created"), now=time.time()) == 0
        record = queue.event(event_id)
        assert record is not None and record.deliveries == ()
    finally:
        queue.close()
