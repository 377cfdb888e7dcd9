"""Retention: pruning deletes old events once every delivery of theirs is done."""

from __future__ import annotations

import time

from contract.steps import every_state, finish, publish, routing_for, take
from evq.publisher import prepare
from evq.storage import rules
from evq.storage.contract import Queue

DAY = 86400.0


def test_prune_deletes_only_old_events_whose_deliveries_are_all_done(queue: Queue) -> None:
    now = time.time()
    # Built oldest last: a lease at a later time would take the older unfinished deliveries.
    keyed = publish(queue, "order.created", at=now - 11 * DAY, key="order-1")
    finish(queue, take(queue, now=now - 11 * DAY), "done", at=now - 11 * DAY)
    nobody = publish(queue, "audit.logged", at=now - 11 * DAY + 1)
    take(queue, now=now - 11 * DAY + 1, routing=routing_for(pattern="order.*"))  # no delivery
    recent = every_state(queue, at=now)
    old = every_state(queue, at=now - 10 * DAY)
    # Published long ago but not fanned out yet: it was never delivered.
    undispatched = publish(queue, "report.due", at=now - 9 * DAY)

    assert rules.prune(queue, now - 7 * DAY, dry_run=True, now=now) == 3
    assert queue.event(old.done) is not None  # a dry run deletes nothing
    assert rules.prune(queue, now - 7 * DAY, now=now) == 3

    for pruned in (old.done, keyed, nobody):
        assert queue.event(pruned) is None
    kept = [old.dead, old.retrying, old.running, old.pending, old.delayed, undispatched]
    kept += [recent.done, recent.dead, recent.retrying, recent.running, recent.pending]
    for event_id in kept:
        record = queue.event(event_id)
        assert record is not None, event_id
        # With its delivery (if it was fanned out) and its history.
        not_dispatched = event_id in (old.delayed, undispatched)
        assert len(record.deliveries) == (0 if not_dispatched else 1), event_id
    assert {event.id for event in queue.events(limit=None)} == {*kept, recent.delayed}
    assert rules.prune(queue, now - 7 * DAY, now=now) == 0
    # The idempotency key went with its event: it can be published again.
    assert queue.publish([prepare("order.created", payload={}, key="order-1")]) != [keyed]


def test_prune_takes_an_event_published_a_moment_before_the_cutoff(queue: Queue) -> None:
    at = float(int(time.time() - DAY))
    event_id = publish(queue, "order.created", at=at)
    finish(queue, take(queue, now=at), "done", at=at + 0.1)

    assert rules.prune(queue, at) == 0  # published at the cutoff: not before it
    assert rules.prune(queue, at + 0.5) == 1
    assert queue.event(event_id) is None


def test_prune_keeps_an_event_until_its_last_delivery_is_done(queue: Queue) -> None:
    # Three receivers: every delivery is looked at, not only the first ones.
    at = time.time() - 10 * DAY
    event_id = publish(queue, "order.created", at=at)
    leases = take(queue, now=at, routing=routing_for("shop:bill", "shop:ship", "shop:mail"))
    assert len(leases) == 3
    finish(queue, leases[:2], "done", at=at + 1)

    assert rules.prune(queue, at + DAY, dry_run=True) == 0
    assert rules.prune(queue, at + DAY) == 0
    finish(queue, leases[2:], "done", at=at + 2)
    assert rules.prune(queue, at + DAY, dry_run=True) == 1
    assert rules.prune(queue, at + DAY) == 1
    assert queue.event(event_id) is None


def test_pruning_walks_past_events_it_must_keep_from_batch_to_batch(queue: Queue) -> None:
    # Dead letters at the head of the log must not stop each bounded walk before it reaches
    # the finished events behind them.
    at = time.time() - 10 * DAY
    kept = []
    for index in range(4):
        kept.append(publish(queue, "order.paid", at=at + index))
        finish(queue, take(queue, now=at + index), "dead", at=at + index)
    for index in range(4, 10):
        publish(queue, "order.created", at=at + index)
        finish(queue, take(queue, now=at + index), "done", at=at + index)

    assert rules.prune_steps(queue, time.time(), batch_size=3, dry_run=True) == (6, None)
    # Two steps of three: four dead letters and two finished events looked at, no more.
    total, after = rules.prune_steps(queue, time.time(), batch_size=3, max_batches=2, dry_run=True)
    assert (total, after is not None) == (2, True)
    total, after = rules.prune_steps(queue, time.time(), batch_size=3, max_batches=1)
    assert (total, after is not None) == (0, True)  # three dead letters looked at
    steps = 1
    while after is not None:
        pruned, after = rules.prune_steps(
            queue, time.time(), after=after, batch_size=3, max_batches=1
        )
        total += pruned
        steps += 1
        assert steps < 10
    assert total == 6
    assert [event.id for event in queue.events(limit=None)] == kept[::-1]
    assert rules.prune(queue, time.time(), batch_size=2) == 0


def test_events_published_after_everything_was_pruned_are_still_fanned_out(
    queue: Queue,
) -> None:
    at = time.time() - DAY
    for round_ in range(3):
        ids = [
            publish(queue, "order.created", at=at + round_, payload={"round": round_})
            for _ in range(3)
        ]
        leases = take(queue, now=at + round_)
        assert sorted(lease.event_id for lease in leases) == sorted(ids)
        finish(queue, leases, "done", at=at + round_)
        assert rules.prune(queue, time.time()) == 3
        assert queue.events(limit=None) == []


def test_a_dry_run_of_prune_changes_nothing_not_even_old_statistics(queue: Queue) -> None:
    # Deliveries finished two days ago: their statistics are what a real prune may drop.
    at = float(int(time.time() - 2 * DAY))
    publish(queue, "order.created", at=at)
    finish(queue, take(queue, now=at), "done", at=at + 1)
    before = queue.finished_per_minute(minutes=5, now=at + 60)
    assert sum(minute.delivered for minute in before) == 1

    assert rules.prune(queue, time.time() - 7 * DAY, dry_run=True, now=time.time()) == 0

    assert queue.finished_per_minute(minutes=5, now=at + 60) == before


def test_prune_keeps_an_event_published_exactly_at_the_cutoff(queue: Queue) -> None:
    at = float(int(time.time()) - 10 * DAY)  # whole seconds: every backend stores them exactly
    old = publish(queue, "order.created", at=at - 1)
    edge = publish(queue, "order.created", at=at)
    finish(queue, take(queue, now=at), "done", at=at + 1)

    assert rules.prune(queue, at) == 1

    assert queue.event(old) is None
    assert queue.event(edge) is not None
