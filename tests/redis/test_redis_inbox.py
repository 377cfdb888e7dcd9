"""The inbox: a publish of one event due now is a single XADD, and what reads the queue moves
inbox entries into the event log first. Every read shows such an event as soon as its publish
returned; the server's clock decides when it is due; entries evq did not write, or wrote twice,
never wedge the queue or deliver twice; and events due now are fanned out in the order they
were published, however they were published."""

from __future__ import annotations

import json
import time

import redis
from contract.steps import OWNER, outcome, publish, take
from redis_server import redis_url_fixture  # noqa: F401

from evq.publisher import prepare
from evq.storage import open_queue
from evq.storage.contract import Routing
from evq.storage.redis.connection import parse_url


def client_of(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.split("?", 1)[0], decode_responses=True)


def inbox_of(url: str) -> str:
    return parse_url(url).base + "inbox"


def test_a_publish_due_now_is_one_stream_entry_and_every_read_sees_its_event(
    redis_url: str,
) -> None:
    client, inbox = client_of(redis_url), inbox_of(redis_url)
    queue = open_queue(redis_url)
    try:
        event_id = publish(queue, "order.paid", at=time.time(), payload={"n": 1})
        # Stored as one entry, not yet in the log.
        (entry,) = client.xrange(inbox)
        assert entry[1]["i"] == event_id and json.loads(entry[1]["p"]) == {"n": 1}
        assert not client.exists(parse_url(redis_url).base + "e:" + event_id)

        status = queue.status()
        assert (status.published, status.awaiting_dispatch) == (1, 1)
        assert status.oldest_due_at is not None and status.oldest_due_at <= time.time()
        assert client.xlen(inbox) == 1  # status only counts it

        (record,) = queue.events()
        assert (record.id, record.name, record.status) == (event_id, "order.paid", "pending")
        assert client.xlen(inbox) == 0  # moved into the log
        assert queue.status().published == 1  # counted once, now from the log
        shown = queue.event(event_id)
        assert shown is not None and json.loads(shown.payload) == {"n": 1}

        (lease,) = take(queue, now=time.time())
        assert (lease.event_id, lease.name) == (event_id, "order.paid")
    finally:
        queue.close()


def test_a_worker_moves_the_inbox_into_the_log_as_it_reads_and_leases_everything(
    redis_url: str,
) -> None:
    queue = open_queue(redis_url)
    try:
        ids = [publish(queue, "order.paid", at=time.time()) for _ in range(5)]
        leases = take(queue, now=time.time(), limit=1000)
        assert [lease.event_id for lease in leases] == ids
        assert client_of(redis_url).xlen(inbox_of(redis_url)) == 0
    finally:
        queue.close()


def test_events_due_now_are_fanned_out_in_publish_order_however_published(
    redis_url: str,
) -> None:
    queue = open_queue(redis_url)
    at = time.time()
    try:
        first = publish(queue, "a", at=at)  # one XADD
        second = publish(queue, "b", at=at, key="k-2")  # the script: a key
        third = queue.publish([prepare(n, payload={}, now=at) for n in ("c", "d")])  # a batch
        fourth = publish(queue, "e", at=at)
        leases = take(queue, now=at + 1, limit=1000)
        assert [lease.event_id for lease in leases] == [first, second, *third, fourth]
    finally:
        queue.close()


def test_an_event_from_a_publisher_whose_clock_is_an_hour_off_is_due_by_the_servers(
    redis_url: str,
) -> None:
    # What a bare XADD from such a publisher holds: its own time, an hour ahead or behind.
    client, inbox = client_of(redis_url), inbox_of(redis_url)
    queue = open_queue(redis_url, role="work")
    try:
        queue.check()
        now = time.time()
        for event_id, clock in (("01AHEAD", now + 3600), ("01BEHIND", now - 3600)):
            client.xadd(inbox, {"i": event_id, "n": "a.b", "p": "{}", "t": repr(clock)})
        leases = take(queue, now=time.time())
        # Both are due now: the one an hour ahead is not held back for an hour.
        assert sorted(lease.event_id for lease in leases) == ["01AHEAD", "01BEHIND"]
        # The time the publisher gave is kept as its publish time.
        published = {lease.event_id: lease.published_at for lease in leases}
        assert published["01AHEAD"] == now + 3600 and published["01BEHIND"] == now - 3600
    finally:
        queue.close()


def test_an_event_from_a_publisher_an_hour_ahead_is_due_now_after_a_read_moved_it_into_the_log(
    redis_url: str,
) -> None:
    # Its publish time, an hour ahead, is no due time: once in the log, it is not waited for.
    client, inbox = client_of(redis_url), inbox_of(redis_url)
    reader, worker = open_queue(redis_url), open_queue(redis_url, role="work")
    try:
        reader.check()
        client.xadd(inbox, {"i": "01AHEAD", "n": "a.b", "p": "{}", "t": repr(time.time() + 3600)})
        assert [record.id for record in reader.events()] == ["01AHEAD"]  # moved into the log
        assert client.xlen(inbox) == 0
        # Due now for a worker asking (a --burst worker stops when nothing is due) and for
        # status, not in an hour.
        due = worker.next_due()
        assert due is not None and due <= time.time()
        oldest = reader.status().oldest_due_at
        assert oldest is not None and oldest <= time.time()

        leases = take(worker, now=time.time())

        assert [lease.event_id for lease in leases] == ["01AHEAD"]
    finally:
        reader.close()
        worker.close()


def test_inbox_entries_evq_did_not_write_or_wrote_twice_never_wedge_or_deliver_twice(
    redis_url: str,
) -> None:
    client, inbox = client_of(redis_url), inbox_of(redis_url)
    queue = open_queue(redis_url, role="work")
    try:
        queue.check()
        client.xadd(inbox, {"x": "no id"})
        client.xadd(inbox, {"i": "01NOTIME", "n": "a.b", "p": "{}", "t": "soon"})
        # An XADD sent again after a broken connection (redis-py retries a broken one).
        for _ in range(2):
            client.xadd(inbox, {"i": "01TWICE", "n": "a.b", "p": "{}", "t": repr(time.time())})
        leases = take(queue, now=time.time() + 1)
        assert sorted(lease.event_id for lease in leases) == ["01NOTIME", "01TWICE"]
        assert client.xlen(inbox) == 0
        # The entry without a time is stamped with its XADD's time, by the server's clock.
        notime = next(lease for lease in leases if lease.event_id == "01NOTIME")
        assert abs(notime.published_at - time.time()) < 60
        assert queue.status().published == 2
        queue.record([outcome(lease, "done", at=time.time()) for lease in leases], owner=OWNER)
        assert take(queue, now=time.time() + 1) == []
    finally:
        queue.close()


def test_a_worker_of_selected_receivers_still_moves_the_inbox(redis_url: str) -> None:
    queue = open_queue(redis_url)
    try:
        event_id = publish(queue, "order.paid", at=time.time())
        # It runs "mine" only, and fans out to "theirs" too.
        routing = Routing(
            subscriptions=(("**", "app:mine"), ("**", "app:theirs")),
            lease_seconds={"app:mine": 30.0},
            selected=frozenset({"app:mine"}),
        )
        leases = queue.lease(routing, owner=OWNER, limit=10, now=time.time()).leases
        assert [(lease.event_id, lease.receiver) for lease in leases] == [(event_id, "app:mine")]
        assert client_of(redis_url).xlen(inbox_of(redis_url)) == 0
        (record,) = queue.events()
        assert record.counts.get("pending") == 1  # "theirs", left for another worker
    finally:
        queue.close()


def test_a_read_moves_an_inbox_of_more_than_two_batches_into_the_log_to_its_last_entry(
    redis_url: str,
) -> None:
    # Two full batches of the `ingest` script and one more entry: a read that stopped a batch
    # early, or one entry early, would leave events it must see in the inbox.
    from evq.storage.redis.publishing import INGEST_BATCH

    client, inbox = client_of(redis_url), inbox_of(redis_url)
    queue = open_queue(redis_url)
    try:
        queue.check()
        at = repr(time.time())
        pipe = client.pipeline(transaction=False)
        for n in range(2 * INGEST_BATCH + 1):
            pipe.xadd(inbox, {"i": f"01BULK{n:06d}", "n": "order.paid", "p": "{}", "t": at})
        pipe.execute()

        queue.events(limit=1)
        assert client.xlen(inbox) == 0
        assert queue.status().published == 2 * INGEST_BATCH + 1
    finally:
        queue.close()
