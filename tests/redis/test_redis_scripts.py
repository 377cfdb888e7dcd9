"""What only the Redis backend does: one hash tag for every key, atomic scripts that check
their arguments before writing, the server's clock for leases, and leases that no two workers
share."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from contract.steps import OWNER, outcome, publish, routing_for, take
from redis.crc import key_slot
from redis_server import redis_url_fixture  # noqa: F401

from evq.errors import StorageError
from evq.publisher import prepare
from evq.storage import open_queue
from evq.storage.redis import RedisQueue
from evq.storage.redis.connection import _script_text, parse_url


def client_of(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.split("?", 1)[0], decode_responses=True)


def test_every_key_of_a_queue_shares_one_hash_tag_and_slot(redis_url: str) -> None:
    queue = open_queue(redis_url)
    at = time.time() - 60
    event_id = publish(queue, "order.paid", at=at, key="k")
    (lease,) = take(queue, now=at)
    queue.record([outcome(lease, "dead", at=at + 1)], owner=OWNER)
    queue.worker_seen("w", hostname="h", pid=1, started_at=at, info="{}")
    base = parse_url(redis_url).base

    keys = list(
        client_of(redis_url).scan_iter(match=base.replace("{", "\\{").replace("}", "\\}") + "*")
    )

    assert len(keys) > 10
    assert {key_slot(key.encode()) for key in keys} == {key_slot(base.encode())}
    assert f"{base}e:{event_id}" in keys
    queue.close()


def test_two_prefixes_on_one_server_are_two_queues(redis_url: str) -> None:
    other = redis_url.replace("prefix=", "prefix=other-")
    first, second = open_queue(redis_url), open_queue(other)
    try:
        publish(first, "order.paid", at=time.time())
        assert (first.status().published, second.status().published) == (1, 0)
    finally:
        first.close()
        second.close()
        from backends import drop_redis_prefix

        drop_redis_prefix(other)


def test_a_malformed_batch_stores_nothing_although_redis_never_rolls_back(
    redis_url: str,
) -> None:
    queue = open_queue(redis_url)
    assert isinstance(queue, RedisQueue)
    good = ["e1", "order.paid", "{}", "1.0", "1.0", ""]
    bad = ["e2", "order.paid", "{}", "1.0", "not-a-time", ""]
    with pytest.raises(StorageError, match="malformed"):
        queue._connection.run("publish", [repr(time.time()), *good, *bad], doing="publish")
    assert queue.status().published == 0
    assert queue.events() == []


def test_leases_and_their_expiry_follow_the_servers_clock_not_the_workers(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = open_queue(redis_url)
    publish(queue, "order.paid", at=time.time() - 10)
    real_time = time.time
    # This worker's clock is an hour ahead of the server's.
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)

    # The server keeps every time on its own clock; `next_due` comes back on the worker's.
    (lease,) = queue.lease(routing_for(lease_seconds=30), owner=OWNER, limit=10).leases
    expiry = queue.next_due()
    assert expiry is not None and abs(expiry - (time.time() + 30)) < 5
    running = parse_url(redis_url).base + "due:running"
    server_expiry = float(client_of(redis_url).zscore(running, lease.delivery_id) or 0)
    assert abs(server_expiry - (real_time() + 30)) < 5

    # It renews "until its clock's now + 30 s": the server keeps 30 s from its own now.
    assert queue.renew([(lease, time.time() + 30)]) == 1
    renewed = queue.next_due()
    assert renewed is not None and abs(renewed - (time.time() + 30)) < 5

    # A retry "in 60 s" by its clock is due 60 s from the server's now, not an hour later.
    queue.record([outcome(lease, "retry", at=time.time(), retry_at=time.time() + 60)], owner=OWNER)
    due = queue.next_due()
    assert due is not None and abs(due - (time.time() + 60)) < 5


def test_concurrent_workers_never_lease_the_same_delivery(redis_url: str) -> None:
    queue = open_queue(redis_url)
    queue.publish([prepare("order.paid", payload={"n": n}) for n in range(300)])
    taken: list[tuple[str, int]] = []
    lock = threading.Lock()

    def work(owner: str) -> None:
        handle = open_queue(redis_url)
        routing = routing_for("shop:bill", "shop:ship")
        while True:
            batch = handle.lease(routing, owner=owner, limit=7)
            if not batch.leases and batch.next_due is None:
                break
            with lock:
                taken.extend((lease.delivery_id, lease.attempt) for lease in batch.leases)
            handle.record(
                [outcome(lease, "done", at=time.time()) for lease in batch.leases], owner=owner
            )
        handle.close()

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(taken) == 600
    assert len({delivery_id for delivery_id, _ in taken}) == 600
    assert {attempt for _, attempt in taken} == {1}
    status = queue.status()
    assert (status.pending, status.running, status.dead) == (0, 0, 0)
    # Counted by the second in which each finished, once that second is over.
    assert queue.status(now=time.time() + 2).delivered_last_minute == 600


def test_a_script_the_server_forgot_is_loaded_again(redis_url: str) -> None:
    queue = open_queue(redis_url)
    publish(queue, "order.paid", at=time.time())
    client_of(redis_url).script_flush()
    publish(queue, "order.paid", at=time.time())
    assert queue.status().published == 2


def test_publish_within_a_transaction_is_refused_in_one_line(redis_url: str) -> None:
    import evq
    from evq.errors import OutboxUnsupported

    with pytest.raises(OutboxUnsupported) as caught:
        evq.publish("order.paid", payload={}, connection=object())
    message = str(caught.value)
    assert "\n" not in message and "Redis" in message and "outbox" in message
    # Code that holds the handle (an integration's) is refused by the backend itself, with
    # what to do instead; nothing is stored.
    queue = open_queue(redis_url)
    event = prepare("order.paid", payload={})
    with pytest.raises(OutboxUnsupported) as refused:
        queue.publish_within(object(), [event])
    assert str(refused.value) == (
        "the Redis backend cannot publish inside your database transaction (there is no"
        " transactional outbox on Redis): publish after your commit, with an idempotency"
        " key, or keep an outbox table of your own and publish from it"
    )
    assert queue.event(event.id) is None


def test_a_script_is_loaded_with_the_shared_definitions_it_uses_and_no_others() -> None:
    # Redis runs a script's whole text on every call: publish must not define lease's helpers.
    publish_text = _script_text("publish")
    assert "local function skew_from(" in publish_text
    assert "local function wake(" in publish_text
    assert "local function due_in(" not in publish_text
    assert "local function new_deliveries(" not in publish_text
    # Through another definition: status uses next_due, which uses first_due and SELECTED_SCAN.
    status_text = _script_text("status")
    assert "local function first_due(" in status_text
    assert "local SELECTED_SCAN = " in status_text
    # Each definition comes before the script, once, in lib.lua's order.
    assert status_text.count("local function next_due(") == 1
    assert status_text.index("local function first_due(") < status_text.index(
        "local function next_due("
    )
