"""Replay: deliver stored events again, as new deliveries marked as replays."""

from __future__ import annotations

import time

from contract.steps import RECEIVER, every_state, finish, publish, routing_for, take
from evq.ids import new_event_ids
from evq.storage import rules
from evq.storage.contract import DeliveryRecord, EventSelection, NewEvent, Queue

BILL_AND_SHIP = routing_for("shop:bill", "shop:ship")


def deliveries(queue: Queue, event_id: str) -> tuple[DeliveryRecord, ...]:
    record = queue.event(event_id)
    assert record is not None, event_id
    return record.deliveries


def receivers(queue: Queue, event_id: str) -> list[tuple[str, str, bool]]:
    """Each delivery of the event: its receiver, state and whether it is a replay."""
    return sorted((d.receiver, d.state, d.replay) for d in deliveries(queue, event_id))


def test_a_replay_goes_to_every_receiver_that_had_the_event_once(queue: Queue) -> None:
    at = time.time() - 60
    event_id = publish(queue, "order.created", at=at)
    other = publish(queue, "order.paid", at=at)
    finish(queue, take(queue, now=at, routing=BILL_AND_SHIP), "done", at=at + 1)

    assert rules.replay(queue, EventSelection(name="order.created")) == 2

    assert receivers(queue, event_id) == [
        ("shop:bill", "done", False),
        ("shop:bill", "pending", True),
        ("shop:ship", "done", False),
        ("shop:ship", "pending", True),
    ]
    assert [d.replay for d in deliveries(queue, other)] == [False, False]
    # Again one per receiver, however many deliveries (replays included) it had.
    assert rules.replay(queue, EventSelection(name="order.created")) == 2
    leases = take(queue, now=time.time(), routing=BILL_AND_SHIP)
    assert len(leases) == 4
    assert {(lease.event_id, lease.replay, lease.attempt) for lease in leases} == {
        (event_id, True, 1)
    }


def test_replayed_deliveries_are_due_at_the_time_the_replay_ran(queue: Queue) -> None:
    at = float(int(time.time()) - 3600)  # whole seconds: every backend stores them exactly
    event_id = publish(queue, "order.created", at=at)
    finish(queue, take(queue, now=at), "done", at=at + 1)

    assert rules.replay(queue, EventSelection(name="order.created"), now=at + 100) == 1

    (replayed,) = [d for d in deliveries(queue, event_id) if d.replay]
    assert replayed.due_at is not None
    assert abs(replayed.due_at - (at + 100)) < 1e-3
    assert take(queue, now=at + 99) == []
    assert [lease.event_id for lease in take(queue, now=at + 100)] == [event_id]


def test_a_replay_to_a_receiver_backfills_one_that_never_had_the_event(queue: Queue) -> None:
    at = time.time() - 60
    event_id = publish(queue, "order.created", at=at)
    finish(queue, take(queue, now=at), "done", at=at)

    created = rules.replay(queue, EventSelection(name="order.*"), receiver="shop:new_receiver")

    assert created == 1
    assert receivers(queue, event_id) == [
        ("shop:new_receiver", "pending", True),
        (RECEIVER, "done", False),
    ]


def test_a_dry_run_counts_what_a_replay_would_create_and_creates_nothing(queue: Queue) -> None:
    at = time.time()
    states = every_state(queue, at=at)
    before = receivers(queue, states.done)

    # Five dispatched events with one delivery each; the delayed one is not dispatched yet
    # (it will be delivered anyway), so it is skipped.
    everything = EventSelection(since=0)
    assert rules.replay(queue, everything, dry_run=True) == 5
    assert rules.replay(queue, everything, receiver="shop:other", dry_run=True) == 5
    assert receivers(queue, states.done) == before
    assert queue.status(now=at).pending == 1

    assert rules.replay(queue, everything, now=at + 1) == 5
    assert queue.status(now=at + 1).pending == 6
    delayed = queue.event(states.delayed)
    assert delayed is not None and delayed.deliveries == ()


def test_a_replay_selects_events_by_name_and_time_range(queue: Queue) -> None:
    at = time.time() - 7200
    old = publish(queue, "order.created", at=at)
    middle = publish(queue, "order.created", at=at + 3600)
    new = publish(queue, "order.created", at=at + 7000)
    user = publish(queue, "user.created", at=at + 3600)
    finish(queue, take(queue, now=at + 7000), "done", at=at + 7001)

    selection = EventSelection(name="order.*", since=at + 1800, until=at + 5400)
    assert rules.replay(queue, selection, dry_run=True) == 1
    assert rules.replay(queue, selection) == 1

    replayed = {
        event_id
        for event_id in (old, middle, new, user)
        if any(d.replay for d in deliveries(queue, event_id))
    }
    assert replayed == {middle}


def test_a_replay_goes_batch_by_batch_and_misses_no_event(queue: Queue) -> None:
    at = time.time() - 60
    for n in range(7):
        publish(queue, "order.created", at=at + n)
    queue.lease(routing_for(), owner="w", limit=0, now=at + 7)  # fan out: 7 deliveries
    selection = EventSelection(since=0)

    assert rules.replay(queue, selection, batch_size=2, dry_run=True) == 7
    assert rules.replay(queue, selection, batch_size=2) == 7
    assert rules.replay(queue, selection, receiver="shop:other", batch_size=3) == 7
    assert rules.replay(queue, selection, batch_size=7, dry_run=True) == 14
    replays = [
        d.receiver
        for event in queue.events(limit=None)
        for d in deliveries(queue, event.id)
        if d.replay
    ]
    assert sorted(replays) == sorted([RECEIVER] * 7 + ["shop:other"] * 7)


def test_a_replay_walks_past_more_than_a_page_of_events_not_dispatched_yet(queue: Queue) -> None:
    # Six hundred delayed events not fanned out yet, whose ids sort before an event already
    # delivered (their publisher's clock was behind): a backend reading the log a page at a
    # time must go on past pages with nothing to replay in them.
    at = time.time() - 60
    *delayed, last = new_event_ids(601)
    queue.publish(
        [NewEvent(id=last, name="order.created", payload="{}", published_at=at, due_at=at)], now=at
    )
    finish(queue, take(queue, now=at), "done", at=at + 1)
    queue.publish(
        [
            NewEvent(id=i, name="report.due", payload="{}", published_at=at, due_at=at + 3600)
            for i in delayed
        ],
        now=at,
    )

    assert rules.replay(queue, EventSelection(since=0), dry_run=True) == 1
    assert rules.replay(queue, EventSelection(since=0)) == 1
    assert receivers(queue, last) == [(RECEIVER, "done", False), (RECEIVER, "pending", True)]


def test_a_replayed_delivery_is_created_when_the_replay_ran(queue: Queue) -> None:
    at = float(int(time.time()) - 3600)
    event_id = publish(queue, "order.created", at=at)
    finish(queue, take(queue, now=at), "done", at=at + 1)

    assert rules.replay(queue, EventSelection(name="order.created"), now=at + 100) == 1

    (replayed,) = [d for d in deliveries(queue, event_id) if d.replay]
    assert abs(replayed.created_at - (at + 100)) < 1e-3
