"""Publishing on Redis, where it can fail: an error names the queue and what evq was doing,
in one line, whether it came from the one XADD of a publish due now or from the script that
moves the inbox into the log."""

from __future__ import annotations

import pytest
import redis
from redis_server import redis_url_fixture  # noqa: F401

from evq.errors import StorageError
from evq.publisher import prepare
from evq.storage import open_queue
from evq.storage.redis.connection import parse_url

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"


def test_a_failed_publish_and_a_failed_read_of_the_inbox_say_so_in_one_line(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url.split("?", 1)[0], decode_responses=True)
    address = parse_url(redis_url)
    queue = open_queue(redis_url)
    try:
        queue.check()
        client.set(address.base + "inbox", "not a stream")  # every XADD to it fails

        with pytest.raises(StorageError) as published:
            queue.publish([prepare("order.paid", payload={})])
        assert str(published.value) == f"Redis at {address.location} failed to publish: {WRONGTYPE}"
        # With a key, the publish is the script's, which fails on the same XADD.
        with pytest.raises(StorageError) as scripted:
            queue.publish([prepare("order.paid", payload={}, key="order-42")])
        message = str(scripted.value)
        assert message.startswith(
            f"Redis at {address.location} failed to publish: {WRONGTYPE} script: "
        )
        assert "\n" not in message

        with pytest.raises(StorageError) as read:
            queue.events()
        message = str(read.value)
        assert message.startswith(
            f"Redis at {address.location} failed to read the inbox: {WRONGTYPE} script: "
        )
        assert "\n" not in message
    finally:
        queue.close()
