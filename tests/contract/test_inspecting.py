"""Inspection: the status of the queue, the workers seen, the event log and one event."""

from __future__ import annotations

import time

import pytest

from contract.steps import (
    OWNER,
    every_state,
    finish,
    outcome,
    publish,
    publish_batch,
    routing_for,
    take,
)
from evq.storage import rules
from evq.storage.contract import (
    DELIVERY_STATES,
    EventSelection,
    MinuteCount,
    OutcomeKind,
    Queue,
)

# Status


def test_status_counts_events_and_deliveries_in_every_state(queue: Queue) -> None:
    at = time.time()
    every_state(queue, at=at)

    status = queue.status(now=at)

    assert status.time == at
    # The delayed event is not fanned out yet: it awaits dispatch, and is delayed.
    assert (status.published, status.awaiting_dispatch, status.delayed) == (6, 1, 1)
    counts = (status.pending, status.scheduled, status.running, status.retrying, status.dead)
    assert counts == (1, 0, 1, 1, 1)
    # The pending delivery has been due since at - 10; nothing has waited longer.
    assert status.oldest_due_at == pytest.approx(at - 10, abs=1e-3)
    # Done, dead and retry all finished at - 10.
    assert (status.delivered_last_minute, status.failed_last_minute) == (1, 2)
    assert queue.status(now=at + 120).delivered_last_minute == 0


def test_status_adds_up_the_deliveries_of_a_state_however_they_are_stored(queue: Queue) -> None:
    # Retrying is stored as pending after a failure, due now or later; running is stored as
    # running, on a first attempt or after a failure: each state's count adds up every way.
    at = float(int(time.time()) - 600)
    for n in range(4):
        publish(queue, "order.created", at=at + n)
    first, second, third, _still_running = take(queue, now=at + 5)
    retries = [(first, at + 8), (second, at + 500), (third, at + 8)]
    queue.record(
        [outcome(lease, "retry", at=at + 6, retry_at=when) for lease, when in retries],
        owner=OWNER,
        now=at + 6,
    )
    (again,) = take(queue, now=at + 9, limit=1)  # a retry running; the fourth's first attempt
    assert again.delivery_id in (first.delivery_id, third.delivery_id)

    status = queue.status(now=at + 10)

    assert (status.retrying, status.running, status.pending, status.scheduled) == (2, 2, 0, 0)


def test_throughput_counts_every_outcome_of_a_batch_in_the_second_it_finished(
    queue: Queue,
) -> None:
    at = float(int(time.time()) - 600)
    for n in range(6):
        publish(queue, "order.created", at=at + n)
    leases = take(queue, now=at + 6)
    kinds = ["done", "done", "done", "retry", "dead", "done"]
    finished = [at + 10.1, at + 10.5, at + 10.9, at + 10.2, at + 10.7, at + 11.3]
    queue.record(
        [
            outcome(lease, kind, at=when, retry_at=at + 3600 if kind == "retry" else None)
            for lease, kind, when in zip(leases, kinds, finished, strict=True)
        ],
        owner=OWNER,
        now=at + 12,
    )

    status = queue.status(now=at + 12)
    assert (status.delivered_last_minute, status.failed_last_minute) == (4, 2)
    # Only whole seconds that are over count: the second of at + 11 is not, at at + 11.5.
    status = queue.status(now=at + 11.5)
    assert (status.delivered_last_minute, status.failed_last_minute) == (3, 2)


def test_finished_per_minute_counts_the_deliveries_of_each_minute_of_the_last_hour(
    queue: Queue,
) -> None:
    at = time.time()
    every_state(queue, at=at)  # done, dead and retrying finished at at - 10
    publish(queue, "order.created", at=at - 1800)
    finish(queue, take(queue, now=at - 1800), "done", at=at - 1800)

    minutes = queue.finished_per_minute(minutes=60, now=at)

    assert minutes == [
        MinuteCount(float(int(at - 1800) // 60 * 60), 1, 0),
        MinuteCount(float(int(at - 10) // 60 * 60), 1, 2),
    ]
    assert queue.finished_per_minute(minutes=10, now=at) == minutes[1:]
    assert queue.finished_per_minute(minutes=60, now=at + 7200) == []


def test_finished_per_minute_starts_at_the_whole_minute_not_minutes_before_now(
    queue: Queue,
) -> None:
    # Now is half a minute into its minute; the first minute asked for begins 30 s before
    # now minus ten minutes, and a delivery finished in those 30 s is counted in it.
    minute = (int(time.time()) // 60 - 30) * 60
    at = minute + 30.0
    publish(queue, "order.created", at=minute - 600)
    finish(queue, take(queue, now=minute - 600), "done", at=minute - 600 + 5)

    minutes = queue.finished_per_minute(minutes=10, now=at)

    assert minutes == [MinuteCount(float(minute - 600), 1, 0)]
    assert queue.finished_per_minute(minutes=9, now=at) == []


def test_oldest_due_at_is_none_when_nothing_waits(queue: Queue) -> None:
    at = time.time() - 600
    assert queue.status(now=at).oldest_due_at is None
    publish(queue, "report.due", at=at, delay=3600)
    take(queue, now=at)
    assert queue.status(now=at + 1).oldest_due_at is None  # scheduled, not waiting
    assert queue.status(now=at + 1).scheduled == 1
    # An event not fanned out yet has waited since it was published.
    publish(queue, "order.created", at=at + 2)
    assert queue.status(now=at + 5).oldest_due_at == pytest.approx(at + 2, abs=1e-3)


def test_a_delivery_due_exactly_now_is_waiting_since_now(queue: Queue) -> None:
    # Due at `now` is due (pending, not scheduled): it is also the oldest wait, of none yet.
    at = float(int(time.time()) - 600)
    publish(queue, "report.due", at=at - 60, delay=60)
    take(queue, now=at - 60, limit=0)  # fanned out at once: a delivery due at `at`

    status = queue.status(now=at)

    assert (status.pending, status.scheduled) == (1, 0)
    assert status.oldest_due_at == at


def test_published_counts_every_event_before_and_after_dispatch_and_prune(queue: Queue) -> None:
    at = time.time() - 10 * 86400
    for offset in range(3):
        publish(queue, "order.created", at=at + offset)
    assert queue.status().published == 3  # none dispatched yet

    finish(queue, take(queue, now=at + 2), "done", at=at + 2)
    publish(queue, "order.paid", at=at + 3, delay=3600)
    assert queue.status().published == 4

    assert rules.prune(queue, at + 5) == 3
    assert queue.status().published == 4
    assert [event.name for event in queue.events(limit=None)] == ["order.paid"]


def test_status_lists_workers_seen_lately_until_they_stop(queue: Queue) -> None:
    started = time.time() - 60
    queue.worker_seen("w1", hostname="host-a", pid=101, started_at=started, info="{}")
    queue.worker_seen("w2", hostname="host-b", pid=202, started_at=started + 1, info="{}")
    queue.worker_seen(
        "w1", hostname="host-a", pid=101, started_at=started, info='{"receivers": ["m:f"]}'
    )
    now = time.time()

    workers = {worker.id: worker for worker in queue.status(now=now).workers}
    assert set(workers) == {"w1", "w2"}
    w1 = workers["w1"]
    assert (w1.hostname, w1.pid, w1.info) == ("host-a", 101, '{"receivers": ["m:f"]}')
    assert w1.started_at == pytest.approx(started, abs=1e-3)
    assert now - 5 <= w1.seen_at <= now
    # Not seen for longer than the window: no longer listed.
    later = now + rules.WORKER_SEEN_WITHIN_SECONDS + 1
    assert queue.status(now=later).workers == []

    queue.worker_stopped("w1")
    assert [worker.id for worker in queue.status().workers] == ["w2"]


def test_old_statistics_and_workers_gone_for_a_day_are_forgotten(queue: Queue) -> None:
    now = time.time()
    publish(queue, "order.created", at=now - 20)
    finish(queue, take(queue, now=now - 20), "done", at=now - 10)
    queue.worker_seen("w1", hostname="h", pid=1, started_at=now, info="{}")

    queue.forget_old_statistics(now=now)
    assert queue.status(now=now).delivered_last_minute == 1
    assert [worker.id for worker in queue.status(now=now).workers] == ["w1"]

    queue.forget_old_statistics(now=now + rules.FORGET_SECONDS + 60)
    assert queue.status(now=now).delivered_last_minute == 0
    assert queue.status(now=now).workers == []


# The event log


def test_events_are_listed_newest_first_with_their_status_and_counts(queue: Queue) -> None:
    at = time.time()
    states = every_state(queue, at=at)

    events = queue.events(now=at)

    assert [(event.id, event.status) for event in events] == [
        (states.delayed, "scheduled"),
        (states.pending, "pending"),
        (states.running, "running"),
        (states.retrying, "retrying"),
        (states.dead, "dead"),
        (states.done, "done"),
    ]
    for event in events:
        assert set(event.counts) == set(DELIVERY_STATES)
        assert event.deliveries == ()  # only `event()` fills them
    done = events[-1]
    assert done.counts["done"] == 1 and sum(done.counts.values()) == 1
    assert events[4].counts["dead"] == 1
    assert sum(events[0].counts.values()) == 0  # not fanned out yet
    assert (events[0].due_at is not None, events[0].dispatched_at) == (True, None)
    assert (done.due_at, done.dispatched_at is not None) == (None, True)


def test_events_with_a_status_are_those_with_a_delivery_in_that_state(queue: Queue) -> None:
    at = time.time()
    states = every_state(queue, at=at)
    expected = {
        "done": states.done,
        "dead": states.dead,
        "retrying": states.retrying,
        "running": states.running,
        "pending": states.pending,
        "scheduled": states.delayed,
    }
    for status, event_id in expected.items():
        assert [event.id for event in queue.events(status=status, now=at)] == [event_id], status


def test_an_event_fanned_out_before_its_delay_ended_is_listed_as_scheduled(queue: Queue) -> None:
    at = time.time() - 600
    event_id = publish(queue, "report.due", at=at, delay=3600)
    take(queue, now=at)  # fanned out at once; its delivery waits for the delay

    (listed,) = queue.events(now=at + 1)
    record = queue.event(event_id, now=at + 1)

    assert record is not None and listed.dispatched_at is not None
    for found in (listed, record):
        assert found.status == "scheduled"
        assert found.counts == {**rules.zero_counts(), "scheduled": 1}
    assert [event.id for event in queue.events(status="scheduled", now=at + 1)] == [event_id]
    assert queue.events(status="pending", now=at + 1) == []


def test_an_events_counts_add_up_its_deliveries_in_the_same_state(queue: Queue) -> None:
    # Two retrying deliveries, one due again already and one later, and two done: each count
    # adds up every delivery in its state, in the log and in the event alone.
    at = float(int(time.time()) - 600)
    event_id = publish(queue, "order.created", at=at)
    routing = routing_for("shop:bill", "shop:ship", "shop:mail", "shop:audit")
    leases = sorted(take(queue, now=at, routing=routing), key=lambda lease: lease.receiver)
    audit, bill, mail, ship = leases
    queue.record(
        [
            outcome(bill, "retry", at=at + 1, retry_at=at + 5),
            outcome(ship, "retry", at=at + 1, retry_at=at + 500),
            outcome(mail, "done", at=at + 1),
            outcome(audit, "done", at=at + 1),
        ],
        owner=OWNER,
        now=at + 1,
    )
    expected = {**rules.zero_counts(), "retrying": 2, "done": 2}

    (listed,) = queue.events(now=at + 10)
    record = queue.event(event_id, now=at + 10)

    assert listed.counts == expected
    assert record is not None and record.counts == expected
    assert (listed.status, record.status) == ("retrying", "retrying")


def test_a_pattern_matches_capitals_and_hyphens_in_names_literally(queue: Queue) -> None:
    at = time.time() - 60
    upper = publish(queue, "Shop-EU.order.created", at=at)
    lower = publish(queue, "shop-eu.order.created", at=at + 1)
    other = publish(queue, "Shop-US.order.created", at=at + 2)

    def ids(pattern: str) -> list[str]:
        return [event.id for event in queue.events(EventSelection(name=pattern), limit=None)]

    assert ids("Shop-EU.**") == [upper]
    assert ids("shop-eu.*.created") == [lower]
    assert ids("*.order.created") == [other, lower, upper]
    assert ids("Shop-*.**") == []


def test_events_are_selected_by_name_pattern_time_range_and_limit(queue: Queue) -> None:
    at = time.time()
    states = every_state(queue, at=at)

    def ids(selection: EventSelection | None = None, limit: int | None = None) -> list[str]:
        return [event.id for event in queue.events(selection, limit=limit, now=at)]

    assert ids(EventSelection(name="order.*")) == [states.retrying, states.dead, states.done]
    assert ids(EventSelection(name="order.paid")) == [states.dead]
    assert ids(EventSelection(name="**")) == ids()
    assert len(ids()) == 6
    assert ids(EventSelection(since=at - 35, until=at - 15)) == [states.running, states.retrying]
    assert ids(limit=2) == [states.delayed, states.pending]
    old = publish(queue, "order.created", at=at - 3 * 86400)
    assert ids(EventSelection(until=at - 2 * 86400)) == [old]
    assert ids(EventSelection(name="order.created", since=at - 60)) == [states.done]


def test_since_and_until_compare_the_publish_time_exactly_within_a_millisecond(
    queue: Queue,
) -> None:
    at = 1_700_000_000.0005
    before = publish(queue, "order.created", at=at - 0.0002)
    exact = publish(queue, "order.created", at=at)
    after = publish(queue, "order.created", at=at + 0.0002)

    def ids(selection: EventSelection) -> set[str]:
        return {event.id for event in queue.events(selection, limit=None)}

    assert ids(EventSelection(since=at)) == {after, exact}
    assert ids(EventSelection(until=at)) == {before}
    assert ids(EventSelection(since=at - 0.0002, until=at + 0.0002)) == {exact, before}
    assert ids(EventSelection(since=0, until=4e12)) == {after, exact, before}


def test_pages_of_events_follow_the_before_cursor_without_gaps_or_repeats(
    queue: Queue,
) -> None:
    at = time.time() - 60
    # A batch shares one publish time: a cursor on the time alone would skip some of it.
    publish_batch(queue, "order.created", 7, at=at)
    publish(queue, "user.created", at=at + 1)
    every_id = [event.id for event in queue.events(limit=None)]
    assert len(every_id) == 8

    for state in (None, "pending"):
        pages: list[list[str]] = []
        before: str | None = None
        while True:
            page = [
                event.id
                for event in queue.events(
                    EventSelection(before=before), status=state, limit=3, now=at + 2
                )
            ]
            if not page:
                break
            pages.append(page)
            before = page[-1]
        assert [len(page) for page in pages] == [3, 3, 2]
        assert [i for page in pages for i in page] == every_id
    orders = [e.id for e in queue.events(EventSelection(name="order.*"), limit=None)]
    assert [e.id for e in queue.events(EventSelection(name="order.*", before=orders[2]))] == (
        orders[3:]
    )


def test_one_event_comes_with_every_delivery_and_its_history(queue: Queue) -> None:
    at = time.time() - 600
    event_id = publish(queue, "order.created", at=at, key="order-1")
    leases = take(queue, now=at, routing=routing_for("shop:bill", "shop:ship"))
    bill = next(lease for lease in leases if lease.receiver == "shop:bill")
    queue.record([outcome(bill, "retry", at=at + 1, retry_at=at + 2)], owner=OWNER, now=at)
    (again,) = take(queue, now=at + 2, routing=routing_for("shop:bill", "shop:ship"))
    queue.record([outcome(again, "done", at=at + 3)], owner="w2", now=at)

    record = queue.event(event_id, now=at + 4)

    assert record is not None
    assert (record.id, record.name, record.key, record.status) == (
        event_id,
        "order.created",
        "order-1",
        "running",
    )
    assert (record.counts["done"], record.counts["running"]) == (1, 1)
    deliveries = {delivery.receiver: delivery for delivery in record.deliveries}
    assert set(deliveries) == {"shop:bill", "shop:ship"}
    done = deliveries["shop:bill"]
    assert done.id == bill.delivery_id
    assert (done.state, done.attempts, done.failures, done.replay) == ("done", 2, 1, False)
    assert done.created_at == pytest.approx(at, abs=1e-3)
    assert done.finished_at == pytest.approx(at + 3, abs=1e-3)
    assert (done.due_at, done.worker) == (None, None)
    assert [(a.attempt, a.outcome, a.worker, a.error) for a in done.history] == [
        (1, "retry", OWNER, "ValueError: card declined"),
        (2, "done", "w2", None),
    ]
    assert done.history[1].started_at == pytest.approx(at + 2.75, abs=1e-3)
    running = deliveries["shop:ship"]
    assert (running.state, running.attempts, running.worker) == ("running", 1, OWNER)
    assert running.started_at == pytest.approx(at, abs=1e-3)
    assert running.due_at == pytest.approx(at + 30, abs=1e-3)  # when its lease expires
    assert running.history == ()


def test_an_unknown_event_is_none(queue: Queue) -> None:
    publish(queue, "order.created", at=time.time())
    assert queue.event("01NOSUCHEVENT0000000000000") is None


def test_status_lists_workers_in_the_order_they_started_each_with_its_latest_heartbeat(
    queue: Queue,
) -> None:
    started = time.time() - 60
    queue.worker_seen("w-a", hostname="host-a", pid=1, started_at=started + 1, info='{"n": 1}')
    queue.worker_seen("w-b", hostname="host-b", pid=2, started_at=started, info='{"n": 2}')
    (first,) = [w for w in queue.status().workers if w.id == "w-a"]
    time.sleep(0.01)  # so that the clock has moved on for the next heartbeat
    queue.worker_seen("w-a", hostname="host-a", pid=1, started_at=started + 1, info='{"n": 3}')

    workers = queue.status().workers
    # Started first, listed first, whatever their ids.
    assert [(w.id, w.info) for w in workers] == [("w-b", '{"n": 2}'), ("w-a", '{"n": 3}')]
    assert workers[1].seen_at > first.seen_at  # the later heartbeat moved it on


def test_a_worker_that_was_never_seen_or_is_gone_can_stop(queue: Queue) -> None:
    queue.worker_stopped("never-seen")
    queue.worker_seen("w1", hostname="h", pid=1, started_at=time.time(), info="{}")
    queue.worker_stopped("w1")
    queue.worker_stopped("w1")  # twice: already forgotten
    assert queue.status().workers == []


def finish_each(
    queue: Queue, base: float, finished: list[tuple[float, OutcomeKind]], *, now: float
) -> None:
    """Publish one event per (time, kind) of `finished` ten seconds before `base`, lease them
    all, and record each outcome at its time (a retry due an hour after `base`), with the
    worker's clock at `now`."""
    for n in range(len(finished)):
        publish(queue, "order.created", at=base - 10 + n / 100)
    leases = take(queue, now=base - 5)
    queue.record(
        [
            outcome(lease, kind, at=at, retry_at=base + 3600 if kind == "retry" else None)
            for lease, (at, kind) in zip(leases, finished, strict=True)
        ],
        owner=OWNER,
        now=now,
    )


def test_finished_per_minute_counts_every_second_of_the_window_and_adds_them_up(
    queue: Queue,
) -> None:
    base = float((int(time.time()) // 60 - 100) * 60)  # a whole minute, 100 minutes ago
    finish_each(
        queue,
        base,
        [
            (base - 1, "done"),  # the second before the window
            (base, "done"),  # its first second
            (base + 5, "done"),
            (base + 10.5, "retry"),
            (base + 20, "dead"),
            (base + 30, "done"),
            (base + 90, "done"),  # the second of `now`
        ],
        now=base + 90,
    )

    # At 30 s into the minute after `base`: that minute and the one before it.
    assert queue.finished_per_minute(minutes=1, now=base + 90.5) == [
        MinuteCount(base, 3, 2),
        MinuteCount(base + 60, 1, 0),
    ]
    # The last minute of status is the 60 whole seconds before now's, the first included.
    status = queue.status(now=base + 60)
    assert (status.delivered_last_minute, status.failed_last_minute) == (3, 2)


def test_finished_per_minute_without_now_reads_the_clock(queue: Queue) -> None:
    now = time.time()
    publish(queue, "order.created", at=now - 2)
    finish(queue, take(queue, now=now - 2), "done", at=now - 1)
    assert [m.delivered for m in queue.finished_per_minute(minutes=1)] == [1]


def test_a_pattern_matching_two_names_lists_the_events_of_both_newest_first(
    queue: Queue,
) -> None:
    at = time.time() - 60
    created = publish(queue, "order.created", at=at)
    paid = publish(queue, "order.paid", at=at + 1)
    publish(queue, "user.created", at=at + 2)
    again = publish(queue, "order.created", at=at + 3)

    listed = queue.events(EventSelection(name="order.*"), limit=None, now=at + 4)

    assert [event.id for event in listed] == [again, paid, created]


def test_events_with_a_status_and_a_name_are_only_those_of_that_name(queue: Queue) -> None:
    at = time.time()
    states = every_state(queue, at=at)

    def ids(name: str, status: str) -> list[str]:
        selection = EventSelection(name=name)
        return [event.id for event in queue.events(selection, status=status, now=at)]

    assert ids("order.paid", "dead") == [states.dead]
    assert ids("order.created", "dead") == []
    assert ids("user.*", "pending") == [states.pending]
    assert ids("order.**", "pending") == []
    assert ids("order.shipped", "retrying") == [states.retrying]
    assert ids("user.deleted", "running") == []


def test_finished_per_minute_counts_each_outcome_in_the_second_and_minute_it_finished(
    queue: Queue,
) -> None:
    # A failure in the last second of a minute is that minute's, and a delivery finished
    # after `now` (a worker's clock ahead) is not counted yet.
    base = float((int(time.time()) // 60 - 100) * 60)  # a whole minute, 100 minutes ago
    finish_each(
        queue,
        base,
        [
            (base + 59, "dead"),  # the last second of the minute `base`
            (base + 59.5, "done"),
            (base + 60, "done"),  # the second of `now`
            (base + 61, "done"),  # after `now`
        ],
        now=base + 61,
    )

    assert queue.finished_per_minute(minutes=1, now=base + 60.5) == [
        MinuteCount(base, 1, 1),
        MinuteCount(base + 60, 1, 0),
    ]
