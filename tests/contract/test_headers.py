"""Event headers: stored with the event on every backend, handed to every attempt (retries,
redrives and replays included), and shown by inspection."""

from __future__ import annotations

import json
import time

from contract.steps import OWNER, finish, outcome, publish, take
from evq.publisher import prepare, prepare_many
from evq.storage import rules
from evq.storage.contract import EventSelection, Queue

HEADERS = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "n": "ü"}


def stored(text: str | None) -> dict[str, str]:
    assert text is not None
    value: dict[str, str] = json.loads(text)
    return value


def test_headers_are_stored_and_shown_with_the_event(queue: Queue) -> None:
    at = time.time() - 60
    with_headers = publish(queue, "order.paid", at=at, headers=HEADERS)
    without = publish(queue, "order.paid", at=at)

    record = queue.event(with_headers)
    assert record is not None
    assert stored(record.headers) == HEADERS
    plain = queue.event(without)
    assert plain is not None and plain.headers is None
    listed = {event.id: event.headers for event in queue.events(EventSelection())}
    assert stored(listed[with_headers]) == HEADERS
    assert listed[without] is None


def test_headers_of_an_event_published_now_are_stored(queue: Queue) -> None:
    """One event published now, due now and without a key: Redis's quickest path (one XADD to
    its inbox) stores the headers as the others do."""
    [event_id] = queue.publish([prepare("order.paid", payload={}, headers=HEADERS)])
    record = queue.event(event_id)
    assert record is not None
    assert stored(record.headers) == HEADERS


def test_headers_of_a_batch_are_stored_per_event(queue: Queue) -> None:
    [events] = prepare_many(
        [
            {"name": "a.b", "payload": {}, "headers": {"corr": "1"}},
            {"name": "a.b", "payload": {}},
            {"name": "a.b", "payload": {}, "headers": {"corr": "3"}},
        ]
    )
    ids = queue.publish(events)
    found = [queue.event(event_id) for event_id in ids]
    assert [None if r is None or r.headers is None else stored(r.headers) for r in found] == [
        {"corr": "1"},
        None,
        {"corr": "3"},
    ]


def test_every_attempt_gets_the_headers_retries_redrives_and_replays_too(queue: Queue) -> None:
    at = time.time() - 600
    event_id = publish(queue, "order.paid", at=at, headers=HEADERS)

    [first] = take(queue, now=at)
    assert stored(first.headers) == HEADERS
    queue.record([outcome(first, "retry", at=at + 1, retry_at=at + 2)], owner=OWNER, now=at + 1)
    [retry] = take(queue, now=at + 3)
    assert retry.attempt == 2 and stored(retry.headers) == HEADERS
    finish(queue, [retry], "dead", at=at + 4)
    [letter] = queue.dead_letters()
    assert stored(letter.headers) == HEADERS

    assert queue.redrive([letter.id]) == 1
    [redriven] = take(queue, now=time.time() + 1)
    assert stored(redriven.headers) == HEADERS
    finish(queue, [redriven], "done", at=time.time() + 2)

    assert rules.replay(queue, EventSelection(), now=time.time()) == 1
    [replayed] = take(queue, now=time.time() + 3)
    assert replayed.replay and replayed.event_id == event_id
    assert stored(replayed.headers) == HEADERS


def test_an_event_without_headers_leases_without_any(queue: Queue) -> None:
    at = time.time() - 60
    publish(queue, "order.paid", at=at)
    [lease] = take(queue, now=at)
    assert lease.headers is None


def test_a_duplicate_key_keeps_the_first_events_headers(queue: Queue) -> None:
    at = time.time() - 60
    event = prepare("order.paid", payload={}, key="k-1", headers={"corr": "a"}, now=at)
    again = prepare("order.paid", payload={}, key="k-1", headers={"corr": "b"}, now=at)
    first, second = queue.publish([event, again], now=at)
    assert first == second
    record = queue.event(first)
    assert record is not None and stored(record.headers) == {"corr": "a"}
