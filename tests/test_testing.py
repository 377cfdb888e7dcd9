"""`evq.testing` without pytest's plugin: a test queue, what was published to it, and its
deliveries run in this process on a clock the test moves."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import evq
import evq.config
import evq.publisher
from evq.storage import open_queue
from evq.testing import DeliveryFailed, TestQueue, use_queue
from evq.worker import WorkerOptions, create_consumer

calls: list[tuple[str, str, int]] = []


def bill(event: evq.Event, /) -> None:
    calls.append(("bill", event.name, event.attempt))


def ship(event: evq.Event, /) -> None:
    calls.append(("ship", event.name, event.attempt))
    evq.publish("order.shipped", payload={"order": event.payload["order"]})


def charge(event: evq.Event, /) -> None:
    calls.append(("charge", event.name, event.attempt))
    if event.attempt < 3:
        raise ValueError("card declined")


def refuse(event: evq.Event, /) -> None:
    raise KeyError("no such order")


@pytest.fixture(autouse=True)
def _fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Outside a test queue, events go to a file of this test's own.
    monkeypatch.setenv("EVQ_URL", str(tmp_path / "outside.db"))
    evq.config.reset()
    calls.clear()
    yield
    evq.config.reset()
    for handle in evq.publisher._queues.values():
        handle.close()
    evq.publisher._queues.clear()


def test_publish_goes_to_the_test_queue_and_published_lists_it_in_order() -> None:
    with use_queue() as queue:
        first = evq.publish("order.created", payload={"order": 1})
        evq.publish_many(
            [
                {"name": "user.created", "payload": {"user": 7}},
                {"name": "order.paid", "payload": {"order": 1}},
            ]
        )

        assert [(e.name, e.payload) for e in queue.published()] == [
            ("order.created", {"order": 1}),
            ("user.created", {"user": 7}),
            ("order.paid", {"order": 1}),
        ]
        assert queue.published()[0].id == first
        assert [e.name for e in queue.published("order.*")] == ["order.created", "order.paid"]
        assert queue.url.startswith("memory://")


def test_after_the_block_publish_goes_where_it_went_before_and_the_queue_is_gone(
    tmp_path: Path,
) -> None:
    with use_queue() as queue:
        evq.publish("order.created", payload={"order": 1})
        url = queue.url

    evq.publish("order.created", payload={"order": 2})

    outside = open_queue(str(tmp_path / "outside.db"))
    assert [r.payload for r in outside.events()] == ['{"order":2}']
    assert open_queue(url).events() == []  # dropped: a new, empty queue of that name


def test_assert_published_returns_the_matches_and_lists_what_was_published_otherwise() -> None:
    with use_queue() as queue:
        evq.publish("order.created", payload={"order": 1})
        evq.publish("order.paid", payload={"order": 2})

        found = queue.assert_published("order.paid", payload={"order": 2})
        assert [e.payload for e in found] == [{"order": 2}]
        queue.assert_published("order.*", count=2)
        queue.assert_not_published("user.*")

        with pytest.raises(AssertionError) as failure:
            queue.assert_published("order.paid", payload={"order": 1})
        assert str(failure.value) == (
            "expected an event order.paid with payload {'order': 1}, found 0;"
            " 2 event(s) were published:\n"
            '  order.created {"order": 1}\n'
            '  order.paid {"order": 2}'
        )
        with pytest.raises(AssertionError, match=r"expected 1 event\(s\) order.\*, found 2"):
            queue.assert_published("order.*", count=1)
        with pytest.raises(AssertionError, match=r"expected no event order\.created"):
            queue.assert_not_published("order.created")


def test_assert_published_on_an_empty_queue_says_nothing_was_published() -> None:
    with use_queue() as queue, pytest.raises(AssertionError, match=r"; nothing was published$"):
        queue.assert_published("order.paid")


seen_headers: list[dict[str, str]] = []


def remember_headers(event: evq.Event, /) -> None:
    seen_headers.append(dict(event.headers))


def test_headers_reach_published_events_attempts_and_receivers() -> None:
    seen_headers.clear()
    subscriptions = [evq.subscribe("order.paid", receiver=remember_headers)]
    with use_queue(subscriptions=subscriptions) as queue:
        evq.publish("order.paid", payload={}, headers={"correlationid": "c-1"})

        (published,) = queue.published()
        (attempt,) = queue.deliver()

        assert published.headers["correlationid"] == "c-1"
        assert attempt.event.headers["correlationid"] == "c-1"
        assert seen_headers[0]["correlationid"] == "c-1"


def test_deliver_fans_out_and_runs_what_receivers_publish_too() -> None:
    subscriptions = [
        evq.subscribe("order.*", receiver=bill),
        evq.subscribe("order.paid", receiver=ship),
    ]
    with use_queue(subscriptions=subscriptions) as queue:
        evq.publish("order.paid", payload={"order": 1})

        attempts = queue.deliver()

        assert [(a.receiver, a.event.name, a.outcome) for a in attempts] == [
            ("test_testing:bill", "order.paid", "done"),
            ("test_testing:ship", "order.paid", "done"),
            ("test_testing:bill", "order.shipped", "done"),
        ]
        assert sorted(calls) == [
            ("bill", "order.paid", 1),
            ("bill", "order.shipped", 1),
            ("ship", "order.paid", 1),
        ]
        assert queue.deliver() == []  # each delivery runs once
        assert queue.storage.status().pending == 0


def test_only_the_chosen_subscriptions_are_delivered_to() -> None:
    evq.subscribe("order.*", receiver=bill)
    evq.subscribe("order.paid", receiver=ship)
    with use_queue(subscriptions=[bill]) as queue:
        evq.publish("order.paid", payload={"order": 1})
        assert [a.receiver for a in queue.deliver()] == ["test_testing:bill"]
    with use_queue() as queue:  # by default, every registered subscription
        evq.publish("order.created", payload={"order": 2})
        assert [a.receiver for a in queue.deliver()] == ["test_testing:bill"]


def test_a_receiver_without_a_subscription_cannot_be_chosen() -> None:
    with pytest.raises(evq.InvalidInput, match="receiver test_testing:bill has no subscription"):
        TestQueue(subscriptions=[bill])


def test_a_retry_waits_for_the_clock_and_runs_when_it_is_moved_past_its_delay() -> None:
    retrying = evq.subscribe("order.paid", receiver=charge, retry_delay=60, jitter=False)
    with use_queue(subscriptions=[retrying]) as queue:
        evq.publish("order.paid", payload={"order": 1})

        first = queue.deliver(check=False)
        assert [(a.outcome, a.event.attempt, a.error) for a in first] == [
            ("retry", 1, "ValueError: card declined")
        ]
        assert first[0].retry_at == pytest.approx(queue.clock() + 60, abs=5)
        assert queue.deliver() == []  # not due yet
        assert queue.storage.status().retrying == 1

        queue.clock.advance(59)
        assert queue.deliver() == []
        queue.clock.advance(1)
        assert [a.outcome for a in queue.deliver(check=False)] == ["retry"]  # 120 s next
        queue.clock.advance(120)
        assert [(a.outcome, a.event.attempt) for a in queue.deliver()] == [("done", 3)]


def test_skip_delays_runs_retries_until_the_delivery_is_a_dead_letter() -> None:
    failing = evq.subscribe("order.paid", receiver=refuse, retries=2, retry_delay=600, jitter=False)
    with use_queue(subscriptions=[failing]) as queue:
        evq.publish("order.paid", payload={"order": 1})

        attempts = queue.deliver(skip_delays=True, check=False)

        assert [a.outcome for a in attempts] == ["retry", "retry", "dead"]
        [letter] = queue.dead_letters()
        assert letter.receiver == "test_testing:refuse"
        assert letter.error == "KeyError: 'no such order' (gave up after 3 failed attempts)"
        # The clock moved past both retries' delays (10 minutes, then 20); nothing slept.
        assert queue.clock.offset == pytest.approx(1800, abs=60)


def test_a_delayed_event_is_delivered_once_the_clock_reaches_it() -> None:
    with use_queue(subscriptions=[evq.subscribe("report.due", receiver=bill)]) as queue:
        evq.publish("report.due", payload={}, delay=600)
        assert queue.deliver() == []
        queue.clock.advance(600)
        assert [a.outcome for a in queue.deliver()] == ["done"]


def test_a_failing_receiver_raises_with_its_traceback_after_every_outcome_is_recorded() -> None:
    subscriptions = [
        evq.subscribe("order.paid", receiver=refuse, retries=0),
        evq.subscribe("order.paid", receiver=bill),
    ]
    with use_queue(subscriptions=subscriptions) as queue:
        evq.publish("order.paid", payload={"order": 1})

        with pytest.raises(DeliveryFailed) as failure:
            queue.deliver()

        message = str(failure.value)
        assert message.startswith("1 of 2 delivery attempts failed:\n\norder.paid ")
        assert "-> test_testing:refuse (attempt 1): dead: KeyError: 'no such order'" in message
        assert "Traceback (most recent call last):" in message
        assert 'raise KeyError("no such order")' in message  # the receiver's own line
        assert [a.outcome for a in failure.value.attempts] == ["dead", "done"]
        assert ("bill", "order.paid", 1) in calls
        assert len(queue.dead_letters()) == 1


def test_a_sqlite_file_can_be_the_test_queue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'test.db'}"
    with use_queue(url, subscriptions=[evq.subscribe("order.*", receiver=bill)]) as queue:
        evq.publish("order.created", payload={"order": 1})
        assert [a.outcome for a in queue.deliver()] == ["done"]
    assert (tmp_path / "test.db").exists()  # a file the test named is kept


def test_a_worker_in_this_process_shares_a_memory_queue_with_publishing_threads() -> None:
    # The memory backend under the real worker: 4 threads publish while nothing runs, then a
    # burst worker with 4 threads delivers; every event reaches each receiver exactly once.
    evq.subscribe("order.*", receiver=bill)
    evq.config.configure(url="memory://shared-by-threads")

    def publish_some(start: int) -> None:
        for n in range(start, start + 50):
            evq.publish("order.created", payload={"order": n})

    publishers = [threading.Thread(target=publish_some, args=(n * 50,)) for n in range(4)]
    for thread in publishers:
        thread.start()
    for thread in publishers:
        thread.join()

    create_consumer(WorkerOptions(url="memory://shared-by-threads", workers=4, burst=True)).run()

    assert sorted(calls) == sorted(("bill", "order.created", 1) for _ in range(200))
    status = open_queue("memory://shared-by-threads").status()
    assert (status.published, status.pending, status.running) == (200, 0, 0)
    from evq.storage.memory import drop

    drop("memory://shared-by-threads")


def test_bad_patterns_urls_and_clock_moves_are_refused() -> None:
    with use_queue() as queue:
        assert queue.published(name_pattern="order.*") == []
        with pytest.raises(evq.InvalidInput, match="pattern"):
            queue.published("order..paid")
        with pytest.raises(evq.InvalidInput, match="a clock only moves forward"):
            queue.clock.advance(-1)
    with pytest.raises(evq.InvalidInput) as refused:
        open_queue("memory://a b")
    assert str(refused.value) == (
        "invalid in-memory queue URL 'memory://a b': use memory:// or memory://NAME"
        " (letters, digits, _ . -)"
    )


def test_a_memory_queue_is_not_found_where_it_must_already_exist() -> None:
    from evq.errors import QueueNotFound

    with pytest.raises(QueueNotFound, match="no in-memory queue 'memory://nowhere'"):
        open_queue("memory://nowhere", create=False)


def test_deliver_with_no_subscription_refuses_rather_than_deliver_to_nobody() -> None:
    from evq.errors import NoSubscriptions

    with use_queue() as queue:
        evq.publish("order.created", payload={"order": 1})
        with pytest.raises(NoSubscriptions, match="no subscriptions to deliver to"):
            queue.deliver()
        evq.subscribe("order.*", receiver=bill)  # registered late: the event still waits
        assert [a.receiver for a in queue.deliver()] == ["test_testing:bill"]
