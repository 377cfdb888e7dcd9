"""Publishing: the ids a publish returns, what is stored, idempotency keys and delays."""

from __future__ import annotations

import json
import time

import pytest

from contract.steps import OWNER, outcome, publish, routing_for, take
from evq.publisher import prepare
from evq.storage.contract import Queue


def test_publish_returns_the_ids_in_order_and_stores_every_event_as_given(queue: Queue) -> None:
    at = time.time() - 60
    events = [
        prepare("order.created", payload={"n": 1}, now=at),
        prepare("order.paid", payload={"n": 2}, key="order-2", now=at + 1),
        prepare("user.created", payload={"n": 3}, delay=30, now=at + 2),
    ]

    ids = queue.publish(events, now=at)

    assert ids == [event.id for event in events]
    for event in events:
        record = queue.event(event.id, now=at + 3)
        assert record is not None
        assert (record.id, record.name, record.key) == (event.id, event.name, event.key)
        assert json.loads(record.payload) == json.loads(event.payload)
        assert record.published_at == pytest.approx(event.published_at, abs=1e-3)
        # Not fanned out yet: due when its delay ends.
        assert record.due_at == pytest.approx(event.due_at, abs=1e-3)
        assert record.dispatched_at is None
        assert record.deliveries == ()


def test_publishing_nothing_stores_nothing(queue: Queue) -> None:
    assert queue.publish([]) == []
    assert queue.status().published == 0
    assert queue.events() == []


def test_a_seen_idempotency_key_returns_the_first_id_and_stores_nothing(queue: Queue) -> None:
    at = time.time() - 60
    first = publish(queue, "order.paid", at=at, key="order-42", payload={"n": 1})
    again = publish(queue, "order.paid", at=at + 1, key="order-42", payload={"n": 2})
    other = publish(queue, "order.paid", at=at + 2, key="order-43", payload={"n": 3})

    assert again == first
    assert other != first
    assert [record.id for record in queue.events(limit=None)] == [other, first]
    record = queue.event(first)
    assert record is not None
    assert json.loads(record.payload) == {"n": 1}
    assert record.key == "order-42"
    assert queue.status().published == 2


def test_a_key_repeated_within_one_publish_is_stored_once(queue: Queue) -> None:
    at = time.time() - 60
    events = [
        prepare("order.paid", payload={"n": 1}, key="k1", now=at),
        prepare("order.paid", payload={"n": 2}, now=at),
        prepare("order.paid", payload={"n": 3}, key="k1", now=at),
        prepare("order.paid", payload={"n": 4}, now=at),  # after the repeat: still stored
    ]

    ids = queue.publish(events, now=at)

    assert ids == [events[0].id, events[1].id, events[0].id, events[3].id]
    stored = [events[0].id, events[1].id, events[3].id]
    assert sorted(record.id for record in queue.events(limit=None)) == sorted(stored)
    # Delivered once as well.
    assert sorted(lease.event_id for lease in take(queue, now=at)) == sorted(stored)


def test_a_delayed_event_is_scheduled_and_not_leased_before_it_is_due(queue: Queue) -> None:
    at = time.time() - 7200
    delayed = publish(queue, "report.due", at=at, delay=3600)

    record = queue.event(delayed, now=at + 1)
    assert record is not None and record.status == "scheduled"
    status = queue.status(now=at + 1)
    assert (status.awaiting_dispatch, status.delayed, status.scheduled) == (1, 1, 0)

    # A worker fans it out at once, to a delivery due when the delay ends.
    assert take(queue, now=at + 1) == []
    status = queue.status(now=at + 1)
    assert (status.awaiting_dispatch, status.delayed, status.scheduled) == (0, 0, 1)
    record = queue.event(delayed, now=at + 1)
    assert record is not None and record.status == "scheduled"
    (delivery,) = record.deliveries
    assert delivery.state == "scheduled"
    assert delivery.due_at == pytest.approx(at + 3600, abs=1e-3)

    assert take(queue, now=at + 3599) == []
    (lease,) = take(queue, now=at + 3600)
    assert lease.event_id == delayed
    assert lease.published_at == pytest.approx(at, abs=1e-3)  # when published, not when due


def test_an_event_not_fanned_out_yet_is_pending_from_its_due_time_and_scheduled_before(
    queue: Queue,
) -> None:
    at = float(int(time.time()) - 7200)  # whole seconds: every backend stores them exactly
    now_due = publish(queue, "report.now", at=at)
    delayed = publish(queue, "report.later", at=at, delay=60)

    def status(event_id: str, now: float) -> str | None:
        record = queue.event(event_id, now=now)
        return None if record is None else record.status

    def listed(state: str, now: float) -> list[str]:
        return [event.id for event in queue.events(status=state, now=now)]

    assert (status(now_due, at + 1), status(delayed, at + 1)) == ("pending", "scheduled")
    assert (listed("pending", at + 1), listed("scheduled", at + 1)) == ([now_due], [delayed])
    # Due at exactly now: pending (a worker would lease it), no longer scheduled.
    assert status(delayed, at + 60) == "pending"
    assert sorted(listed("pending", at + 60)) == sorted([delayed, now_due])
    assert listed("scheduled", at + 60) == []


def test_status_counts_an_event_not_fanned_out_yet_as_delayed_only_before_its_due_time(
    queue: Queue,
) -> None:
    at = float(int(time.time()) - 7200)  # whole seconds: every backend stores them exactly
    publish(queue, "report.now", at=at)
    publish(queue, "report.later", at=at, delay=60)

    def counts(now: float) -> tuple[int, int, float | None]:
        status = queue.status(now=now)
        return status.awaiting_dispatch, status.delayed, status.oldest_due_at

    # Both wait for a worker since they were published, at exactly now; one is delayed.
    assert counts(at) == (2, 1, at)
    assert counts(at + 59) == (2, 1, at)
    # Due at exactly now: no longer delayed.
    assert counts(at + 60) == (2, 0, at)


# Keys are compared exactly, byte for byte of their UTF-8: no case folding, no Unicode
# normalisation, no trimming. Each pair below is two different keys.
DISTINCT_KEYS = [
    pytest.param("Order-42", "order-42", id="case"),
    pytest.param("ORDER-42", "order-42", id="upper-case"),
    pytest.param("caf\u00e9", "cafe\u0301", id="nfc-vs-nfd"),
    pytest.param("\ufb01le-7", "file-7", id="nfkc-ligature"),
    pytest.param("order-42", "order-42 ", id="trailing-space"),
    pytest.param("order-42", " order-42", id="leading-space"),
    pytest.param("stra\u00dfe", "strasse", id="casefold"),
]


@pytest.mark.parametrize(("first_key", "second_key"), DISTINCT_KEYS)
def test_idempotency_keys_are_compared_exactly(
    queue: Queue, first_key: str, second_key: str
) -> None:
    at = time.time() - 60
    first = publish(queue, "order.paid", at=at, key=first_key, payload={"n": 1})
    second = publish(queue, "order.paid", at=at + 1, key=second_key, payload={"n": 2})

    assert second != first
    # Each key still finds its own event, and only its own.
    assert publish(queue, "order.paid", at=at + 2, key=first_key) == first
    assert publish(queue, "order.paid", at=at + 3, key=second_key) == second
    assert queue.status().published == 2
    for event_id, key, n in ((first, first_key, 1), (second, second_key, 2)):
        record = queue.event(event_id)
        assert record is not None
        assert record.key == key  # stored as given
        assert json.loads(record.payload) == {"n": n}
    assert sorted(lease.event_id for lease in take(queue, now=at + 4)) == sorted([first, second])


@pytest.mark.parametrize(("first_key", "second_key"), DISTINCT_KEYS)
def test_idempotency_keys_within_one_publish_are_compared_exactly(
    queue: Queue, first_key: str, second_key: str
) -> None:
    at = time.time() - 60
    events = [
        prepare("order.paid", payload={"n": 1}, key=first_key, now=at),
        prepare("order.paid", payload={"n": 2}, key=second_key, now=at),
        prepare("order.paid", payload={"n": 3}, key=first_key, now=at),
    ]

    ids = queue.publish(events, now=at)

    assert ids == [events[0].id, events[1].id, events[0].id]
    assert sorted(record.key or "" for record in queue.events(limit=None)) == sorted(
        [first_key, second_key]
    )


def test_status_counts_each_event_published_once_however_many_leases_ran(queue: Queue) -> None:
    at = time.time() - 60
    publish(queue, "order.paid", at=at)
    (lease,) = take(queue, now=at)
    queue.record([outcome(lease, "retry", at=at + 1, retry_at=at + 2)], owner=OWNER)

    # A lease with a retry due and no event left to fan out.
    (again,) = take(queue, now=at + 3)

    assert again.delivery_id == lease.delivery_id
    status = queue.status(now=at + 4)
    assert (status.published, status.awaiting_dispatch) == (1, 0)


def test_a_lease_of_no_deliveries_leases_none_and_makes_no_dead_letters(queue: Queue) -> None:
    # A worker whose every slot is busy still records its outcomes through a lease of 0.
    at = time.time() - 60
    event_id = publish(queue, "order.paid", at=at)

    batch = queue.lease(routing_for(), owner=OWNER, limit=0, now=at)

    assert (batch.leases, batch.dead_lettered) == ([], 0)
    assert [lease.event_id for lease in take(queue, now=at)] == [event_id]
