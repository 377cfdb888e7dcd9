"""A worker's steps on Redis alone: a step the server refuses, or that meets a key of the wrong
type, fails in one line naming the step."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from contract.steps import OWNER, outcome, publish, routing_for, take
from redis_server import redis_url_fixture, scripts_refused  # noqa: F401

from evq.errors import StorageError
from evq.storage import open_queue
from evq.storage.contract import Lease, Queue
from evq.storage.redis.connection import parse_url


@pytest.fixture
def no_scripts(tmp_path: Path) -> Iterator[tuple[Queue, str, Lease]]:
    """A queue holding one running delivery, on a server that refuses scripts
    (`scripts_refused`); the URL's location; and the lease."""

    def one_running(owner: Queue) -> Lease:
        publish(owner, "order.created", at=time.time())
        (lease,) = take(owner, now=time.time())
        return lease

    with scripts_refused(tmp_path, one_running) as refused:
        yield refused


def test_a_step_of_a_worker_the_server_refuses_fails_in_one_line_naming_it(
    no_scripts: tuple[Queue, str, Lease],
) -> None:
    queue, where, lease = no_scripts
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("read the queue", lambda: queue.lease(routing_for(), owner=OWNER, limit=10)),
        ("read the queue", lambda: queue.next_due()),
        (
            "record outcomes",
            lambda: queue.record([outcome(lease, "done", at=time.time())], owner=OWNER),
        ),
        ("renew leases", lambda: queue.renew([(lease, time.time() + 60)])),
        ("count running deliveries", lambda: queue.running_count("test-")),
    ]
    for doing, step in steps:
        with pytest.raises(StorageError) as caught:
            step()
        assert str(caught.value) == (
            f"Redis at {where} failed to {doing}:"
            " this user has no permissions to run the 'evalsha' command"
        )


def test_a_lease_that_meets_a_delivery_of_the_wrong_type_fails_in_one_line_naming_it(
    redis_url: str,
) -> None:
    queue = open_queue(redis_url)
    try:
        publish(queue, "order.created", at=time.time())
        (lease,) = take(queue, now=time.time())
        client = redis.Redis.from_url(redis_url.split("?", 1)[0])
        key = parse_url(redis_url).base + "d:" + lease.delivery_id
        client.delete(key)
        client.set(key, "not a hash")
        client.close()

        with pytest.raises(StorageError) as caught:
            queue.lease(
                routing_for(),
                owner=OWNER,
                limit=10,
                outcomes=[outcome(lease, "done", at=time.time())],
            )

        message = str(caught.value)
        assert message.startswith(
            f"Redis at {parse_url(redis_url).location} failed to lease deliveries: "
        )
        assert "WRONGTYPE Operation against a key holding the wrong kind of value" in message
        assert "\n" not in message
    finally:
        queue.close()
