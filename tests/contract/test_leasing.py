"""Fan-out and leases: who gets a delivery, when a lease expires, and how a lease fences the
outcomes and renewals of the worker that took it."""

from __future__ import annotations

import json
import time

import pytest

from contract.steps import OWNER, RECEIVER, outcome, publish, routing_for, take
from evq.publisher import prepare
from evq.storage import rules
from evq.storage.contract import Lease, Outcome, OutcomeKind, Queue, Routing


def history(queue: Queue, event_id: str) -> list[tuple[int, str]]:
    """The (attempt, outcome) history of an event's one delivery."""
    record = queue.event(event_id)
    assert record is not None
    (delivery,) = record.deliveries
    return [(attempt.attempt, attempt.outcome) for attempt in delivery.history]


def delivery_state(queue: Queue, event_id: str, now: float) -> str:
    record = queue.event(event_id, now=now)
    assert record is not None
    (delivery,) = record.deliveries
    return delivery.state


# Fan-out


def test_an_event_is_fanned_out_to_each_subscribed_receiver_once(queue: Queue) -> None:
    at = time.time() - 60
    routing = Routing(
        subscriptions=(
            ("order.*", "shop:bill"),
            ("order.created", "shop:ship"),
            ("order.**", "shop:bill"),  # a second pattern of the same receiver
            ("user.*", "shop:welcome"),
        ),
        lease_seconds={"shop:bill": 10.0, "shop:ship": 20.0, "shop:welcome": 30.0},
    )
    event_id = publish(queue, "order.created", at=at, payload={"order": 7})

    leases = take(queue, now=at + 1, routing=routing)

    assert sorted((lease.receiver, lease.lease_seconds) for lease in leases) == [
        ("shop:bill", 10.0),
        ("shop:ship", 20.0),
    ]
    for lease in leases:
        assert (lease.event_id, lease.name) == (event_id, "order.created")
        assert json.loads(lease.payload) == {"order": 7}
        assert lease.published_at == pytest.approx(at, abs=1e-3)
        assert (lease.attempt, lease.attempt_base, lease.failures, lease.replay) == (1, 0, 0, False)
    assert len({lease.delivery_id for lease in leases}) == 2
    record = queue.event(event_id)
    assert record is not None
    assert sorted(d.receiver for d in record.deliveries) == ["shop:bill", "shop:ship"]
    assert record.due_at is None
    assert record.dispatched_at == pytest.approx(at + 1, abs=1e-3)
    running = queue.event(event_id, now=at + 2)
    assert running is not None and running.counts["running"] == 2  # one per receiver


def test_an_event_no_one_subscribes_to_is_dispatched_to_no_delivery(queue: Queue) -> None:
    at = time.time() - 60
    event_id = publish(queue, "audit.logged", at=at)

    assert take(queue, now=at, routing=routing_for(pattern="order.*")) == []

    record = queue.event(event_id)
    assert record is not None
    assert record.deliveries == ()
    assert record.due_at is None and record.dispatched_at is not None
    assert queue.status().awaiting_dispatch == 0
    assert queue.next_due() is None


def test_fan_out_waits_for_a_worker_and_goes_at_most_dispatch_limit_events_at_a_time(
    queue: Queue,
) -> None:
    at = time.time() - 60
    for n in range(5):
        publish(queue, "order.created", at=at + n)
    assert queue.status().awaiting_dispatch == 5

    queue.lease(routing_for(), owner=OWNER, limit=0, dispatch_limit=2, now=at + 10)

    status = queue.status()
    assert (status.awaiting_dispatch, status.pending) == (3, 2)


def test_a_lease_that_takes_deliveries_fans_out_at_most_dispatch_limit_events_too(
    queue: Queue,
) -> None:
    # Also the second lease, which a backend may have read the next events ahead for.
    at = time.time() - 60
    ids = [publish(queue, "order.created", at=at + n) for n in range(4)]

    steps = []
    for _ in range(2):
        batch = queue.lease(routing_for(), owner=OWNER, limit=1, dispatch_limit=1, now=at + 10)
        steps.append(([lease.event_id for lease in batch.leases], queue.status().awaiting_dispatch))

    assert steps == [([ids[0]], 3), ([ids[1]], 2)]


# Leases


def test_a_lease_takes_at_most_limit_due_deliveries_oldest_first(queue: Queue) -> None:
    at = time.time() - 60
    ids = [publish(queue, "order.created", at=at + n) for n in range(3)]

    first = take(queue, now=at + 5, limit=2)
    second = take(queue, now=at + 5, limit=2)

    assert [lease.event_id for lease in first] == ids[:2]
    assert [lease.event_id for lease in second] == ids[2:]
    assert take(queue, now=at + 5) == []  # all running
    assert queue.status(now=at + 5).running == 3


def test_outcomes_given_to_lease_are_recorded_before_it_takes_more(queue: Queue) -> None:
    at = time.time() - 60
    first, second = (publish(queue, "order.created", at=at + n) for n in range(2))
    (lease,) = take(queue, now=at + 2, limit=1)

    batch = queue.lease(
        routing_for(),
        owner=OWNER,
        limit=1,
        outcomes=[outcome(lease, "done", at=at + 3)],
        now=at + 3,
    )

    assert [taken.event_id for taken in batch.leases] == [second]
    assert batch.next_due is None  # it took a lease: the worker looks again at once
    assert delivery_state(queue, first, at + 3) == "done"
    record = queue.event(first)
    assert record is not None
    (delivery,) = record.deliveries
    assert [(a.attempt, a.outcome, a.worker) for a in delivery.history] == [(1, "done", OWNER)]


def test_a_lease_takes_deliveries_of_events_published_since_the_last_up_to_its_limit(
    queue: Queue,
) -> None:
    at = time.time() - 60
    routing = routing_for(pattern="order.*")
    first, second = (publish(queue, "order.created", at=at + n) for n in range(2))
    assert [lease.event_id for lease in take(queue, now=at + 2, routing=routing, limit=1)] == [
        first
    ]
    third, fourth = (publish(queue, "order.created", at=at + n) for n in (3, 4))

    batch = queue.lease(routing, owner=OWNER, limit=2, now=at + 5)

    assert [lease.event_id for lease in batch.leases] == [second, third]
    assert batch.next_due is None

    publish(queue, "audit.logged", at=at + 6)  # for no receiver of this worker's
    batch = queue.lease(routing, owner=OWNER, limit=2, now=at + 7)

    assert [lease.event_id for lease in batch.leases] == [fourth]
    assert batch.next_due is None  # it took a lease: the worker looks again at once
    assert queue.status().awaiting_dispatch == 0


def test_a_lease_that_takes_nothing_still_records_the_outcomes_it_is_given(queue: Queue) -> None:
    at = time.time() - 60
    event_id = publish(queue, "order.created", at=at)
    (lease,) = take(queue, now=at)

    batch = queue.lease(
        routing_for(),
        owner=OWNER,
        limit=0,
        outcomes=[outcome(lease, "done", at=at + 1)],
        now=at + 1,
    )

    assert batch.leases == []
    assert delivery_state(queue, event_id, at + 1) == "done"


def test_a_lease_takes_what_is_due_by_the_time_it_is_given_even_ahead_of_the_clock(
    queue: Queue,
) -> None:
    at = time.time()
    event_id = publish(queue, "order.created", at=at)
    (lease,) = take(queue, now=at)
    queue.record([outcome(lease, "retry", at=at + 1, retry_at=at + 3600)], owner=OWNER, now=at)

    assert take(queue, now=at + 3599) == []
    (again,) = take(queue, now=at + 3600)

    assert (again.event_id, again.attempt) == (event_id, 2)


def test_a_lease_expires_and_another_worker_takes_the_delivery_again(queue: Queue) -> None:
    at = time.time() - 600
    event_id = publish(queue, "order.created", at=at)
    (lease,) = take(queue, now=at, routing=routing_for(lease_seconds=10), owner="w1")

    assert take(queue, now=at + 9, owner="w2") == []  # still held
    (again,) = take(queue, now=at + 11, owner="w2")

    assert again.delivery_id == lease.delivery_id
    assert again.attempt == 2
    assert again.failures == 0  # a lost worker uses up none of the receiver's retries
    record = queue.event(event_id, now=at + 11)
    assert record is not None
    (delivery,) = record.deliveries
    assert (delivery.state, delivery.worker) == ("running", "w2")
    assert [(a.attempt, a.outcome, a.worker) for a in delivery.history] == [(1, "lost", "w1")]
    assert delivery.history[0].error == rules.LOST_WORKER_ERROR
    # When the lost attempt started, and when it was found lost.
    assert delivery.history[0].started_at == pytest.approx(at, abs=1e-3)
    assert delivery.history[0].finished_at == pytest.approx(at + 11, abs=1e-3)


def test_deliveries_whose_worker_died_are_taken_back_one_at_a_time(queue: Queue) -> None:
    at = time.time() - 600
    for n in range(3):
        publish(queue, "order.created", at=at + n)
    assert len(take(queue, now=at + 2, routing=routing_for(lease_seconds=10), owner="w1")) == 3
    # w1 dies; its leases expire.
    for _ in range(3):
        assert len(take(queue, now=at + 20, routing=routing_for(lease_seconds=60), owner="w2")) == 1
    assert take(queue, now=at + 20, owner="w2") == []


def test_a_delivery_whose_worker_is_lost_again_and_again_ends_as_a_dead_letter(
    queue: Queue,
) -> None:
    at = time.time() - 3600
    event_id = publish(queue, "order.created", at=at)
    routing = routing_for(lease_seconds=1)
    for attempt in range(1, rules.MAX_LOST_ATTEMPTS + 1):
        (lease,) = take(queue, now=at + 2 * attempt, routing=routing)
        assert (lease.attempt, lease.failures) == (attempt, 0)

    batch = queue.lease(routing, owner=OWNER, limit=10, now=at + 2 * rules.MAX_LOST_ATTEMPTS + 2)

    assert (batch.leases, batch.dead_lettered) == ([], 1)
    (letter,) = queue.dead_letters()
    assert (letter.event_id, letter.attempts, letter.failures) == (
        event_id,
        rules.MAX_LOST_ATTEMPTS,
        0,
    )
    assert letter.error == (
        f"worker lost {rules.MAX_LOST_ATTEMPTS} times while running this delivery"
        " (the receiver may be crashing its worker)"
    )
    assert history(queue, event_id) == [(n, "lost") for n in range(1, rules.MAX_LOST_ATTEMPTS + 1)]

    # Redriven (due now), it is leased again, its lost attempts counted afresh from there.
    assert queue.redrive([letter.id]) == 1
    (lease,) = take(queue, now=time.time() + 1, routing=routing)
    assert lease.attempt == rules.MAX_LOST_ATTEMPTS + 1


def test_failed_attempts_do_not_count_towards_the_lost_worker_limit(queue: Queue) -> None:
    at = time.time() - 3600
    publish(queue, "order.created", at=at)
    routing = routing_for(lease_seconds=1)
    (first,) = take(queue, now=at, routing=routing)
    queue.record([outcome(first, "retry", at=at + 0.5, retry_at=at + 1)], owner=OWNER, now=at)
    # Then the worker is lost on every attempt but one of the limit.
    for attempt in range(2, rules.MAX_LOST_ATTEMPTS + 1):
        (lease,) = take(queue, now=at + 2 * attempt, routing=routing)
        assert (lease.attempt, lease.failures) == (attempt, 1)

    # MAX_LOST_ATTEMPTS attempts, one of them a failure: not yet lost that many times.
    batch = queue.lease(routing, owner=OWNER, limit=10, now=at + 2 * rules.MAX_LOST_ATTEMPTS + 2)

    assert batch.dead_lettered == 0
    assert [lease.attempt for lease in batch.leases] == [rules.MAX_LOST_ATTEMPTS + 1]


def test_a_delivery_lost_behind_due_ones_waits_for_a_lease_of_its_own(queue: Queue) -> None:
    at = time.time() - 600
    lost_event = publish(queue, "order.created", at=at)
    take(queue, now=at, routing=routing_for(lease_seconds=10), owner="w1")  # w1 dies
    due_event = publish(queue, "order.created", at=at + 1)  # due before that lease expired
    queue.lease(routing_for(), owner="w1", limit=0, now=at + 1)  # fanned out, not taken

    first = take(queue, now=at + 20, owner="w2")
    second = take(queue, now=at + 20, owner="w2")

    assert [(lease.event_id, lease.attempt) for lease in first] == [(due_event, 1)]
    assert [(lease.event_id, lease.attempt) for lease in second] == [(lost_event, 2)]


def test_a_lost_delivery_is_leased_alone_even_beside_events_published_since(
    queue: Queue,
) -> None:
    # As above, but the second event is not fanned out yet when the lost one is taken back: a
    # backend that fans out and leases in two steps must still not batch the two together.
    at = time.time() - 600
    lost_event = publish(queue, "order.created", at=at)
    take(queue, now=at, routing=routing_for(lease_seconds=10), owner="w1")  # w1 dies
    due_event = publish(queue, "order.created", at=at + 1)

    batches = [take(queue, now=at + 20, owner="w2") for _ in range(3)]

    leased = sorted((lease.event_id, lease.attempt) for batch in batches for lease in batch)
    assert leased == sorted([(lost_event, 2), (due_event, 1)])
    for batch in batches:
        assert len(batch) <= 1 or lost_event not in [lease.event_id for lease in batch]


def test_a_lost_delivery_is_leased_alone_even_after_a_dead_letter_and_events_published_since(
    queue: Queue,
) -> None:
    # A dead letter uses up the lease's first look at the due deliveries, and the lost one is
    # behind it: a backend that looks again (after fanning out what was published since) must
    # still leave the lost one to a batch of its own.
    at = time.time() - 600
    both = Routing(
        subscriptions=(("order.*", RECEIVER), ("audit.*", "shop:gone")),
        lease_seconds={RECEIVER: 10.0, "shop:gone": 10.0},
    )
    lost = publish(queue, "order.created", at=at)
    waiting = publish(queue, "order.created", at=at + 1)
    publish(queue, "audit.logged", at=at + 2)
    take(queue, now=at + 3, routing=both, owner="w1", limit=1)  # takes `lost`, dies
    since = publish(queue, "order.created", at=at + 20)

    routing = routing_for(pattern="order.*")
    batches = [queue.lease(routing, owner="w2", limit=2, now=at + 30) for _ in range(3)]

    assert [[(lease.event_id, lease.attempt) for lease in batch.leases] for batch in batches] == [
        [(waiting, 1)],
        [(lost, 2)],
        [(since, 1)],
    ]
    assert batches[0].dead_lettered == 1


def test_a_lease_counts_every_dead_letter_it_makes(queue: Queue) -> None:
    at = time.time() - 60
    both = Routing(
        subscriptions=(("order.*", RECEIVER), ("audit.*", "shop:gone")),
        lease_seconds={RECEIVER: 30.0, "shop:gone": 30.0},
    )
    publish(queue, "order.created", at=at)
    waiting = publish(queue, "order.created", at=at + 1)
    for n in (2, 3):
        publish(queue, "audit.logged", at=at + n)
    take(queue, now=at + 4, routing=both, limit=1)  # fans everything out, takes the first
    publish(queue, "order.created", at=at + 5)

    batch = queue.lease(routing_for(pattern="order.*"), owner=OWNER, limit=2, now=at + 6)

    # How many deliveries one lease looks at is the backend's; what it reports, it made.
    assert [lease.event_id for lease in batch.leases] == [waiting]
    letters = queue.dead_letters()
    assert batch.dead_lettered == len(letters) > 0
    assert {letter.receiver for letter in letters} == {"shop:gone"}


def test_a_dead_letter_made_by_a_lease_does_not_stop_it_taking_the_deliveries_after(
    queue: Queue,
) -> None:
    at = time.time() - 60
    publish(queue, "order.created", at=at)
    queue.lease(routing_for("shop:gone"), owner=OWNER, limit=0, now=at)  # fan out only
    taken = publish(queue, "order.created", at=at + 1)

    batch = queue.lease(routing_for("shop:other"), owner=OWNER, limit=10, now=at + 2)

    assert batch.dead_lettered == 1
    assert [(lease.event_id, lease.receiver) for lease in batch.leases] == [(taken, "shop:other")]


def test_a_delivery_to_a_receiver_the_worker_does_not_run_becomes_a_dead_letter(
    queue: Queue,
) -> None:
    at = time.time() - 60
    event_id = publish(queue, "order.created", at=at)
    queue.lease(routing_for("shop:gone"), owner=OWNER, limit=0, now=at)  # fan out only

    batch = queue.lease(routing_for("shop:other"), owner=OWNER, limit=10, now=at + 1)

    assert (batch.leases, batch.dead_lettered) == ([], 1)
    (letter,) = queue.dead_letters()
    assert (letter.event_id, letter.receiver) == (event_id, "shop:gone")
    assert letter.error is not None
    assert "shop:gone" in letter.error and "not registered" in letter.error


# Fencing


def test_the_late_outcome_of_an_expired_lease_changes_nothing(queue: Queue) -> None:
    at = time.time() - 600
    event_id = publish(queue, "order.created", at=at)
    (stale,) = take(queue, now=at, routing=routing_for(lease_seconds=10), owner="w1")
    (current,) = take(queue, now=at + 20, owner="w2")

    for kind in ("done", "retry", "dead"):
        late = outcome(stale, kind, at=at + 21, retry_at=at + 22 if kind == "retry" else None)
        queue.record([late], owner="w1", now=at)

    assert delivery_state(queue, event_id, at + 21) == "running"
    assert queue.dead_letters() == []
    assert history(queue, event_id) == [(1, "lost")]  # not rewritten by the stale worker
    queue.record([outcome(current, "done", at=at + 22)], owner="w2", now=at)
    assert delivery_state(queue, event_id, at + 22) == "done"
    assert history(queue, event_id) == [(1, "lost"), (2, "done")]


def test_a_renewal_extends_a_held_lease_and_a_stale_one_changes_nothing(queue: Queue) -> None:
    at = time.time() - 600
    publish(queue, "order.created", at=at)
    (lease,) = take(queue, now=at, routing=routing_for(lease_seconds=10), owner="w1")

    assert queue.renew([(lease, at + 100)], now=at) == 1
    assert take(queue, now=at + 50, owner="w2") == []  # renewed: still held
    assert queue.next_due() == pytest.approx(at + 100, abs=1e-3)
    (taken,) = take(queue, now=at + 101, routing=routing_for(lease_seconds=10), owner="w2")
    assert taken.attempt == 2

    # w1 wakes up and renews: its lease is no longer held, and w2's is not extended.
    assert queue.renew([(lease, at + 1000)], now=at) == 0
    (third,) = take(queue, now=at + 112, owner="w3")
    assert third.attempt == 3


def test_a_finished_delivery_cannot_be_renewed(queue: Queue) -> None:
    at = time.time() - 60
    publish(queue, "order.created", at=at)
    (lease,) = take(queue, now=at)
    queue.record([outcome(lease, "done", at=at + 1)], owner=OWNER, now=at)

    assert queue.renew([(lease, at + 1000)], now=at) == 0
    assert queue.renew([], now=at) == 0
    assert queue.next_due() is None


# Fencing, kind by kind: the late outcome of an expired lease, recorded alone (with `record`
# or handed to the next `lease`), leaves the delivery exactly as the current attempt has it.

STALE_OUTCOMES = [
    pytest.param("retry", True, id="retry"),
    pytest.param("dead", True, id="dead"),
    pytest.param("release", True, id="release-interrupted"),
    pytest.param("release", False, id="release-never-started"),
    pytest.param("done", True, id="done"),
]


def _taken_over(queue: Queue, at: float) -> tuple[str, Lease, Lease]:
    """An event whose delivery w1 leased for 10 s at `at`, lost, and w2 took at `at + 20`."""
    event_id = publish(queue, "order.created", at=at)
    (stale,) = take(queue, now=at, routing=routing_for(lease_seconds=10), owner="w1")
    (current,) = take(queue, now=at + 20, routing=routing_for(lease_seconds=30), owner="w2")
    assert (stale.delivery_id, stale.attempt, current.attempt) == (current.delivery_id, 1, 2)
    return event_id, stale, current


@pytest.mark.parametrize("via", ["record", "lease"])
@pytest.mark.parametrize(("kind", "started"), STALE_OUTCOMES)
def test_a_stale_outcome_of_each_kind_leaves_the_current_attempt_untouched(
    queue: Queue, kind: OutcomeKind, started: bool, via: str
) -> None:
    at = time.time() - 600
    event_id, stale, current = _taken_over(queue, at)
    before = queue.event(event_id, now=at + 21)
    assert before is not None
    (delivery,) = before.deliveries
    assert (delivery.state, delivery.attempts, delivery.worker) == ("running", 2, "w2")
    assert delivery.due_at == pytest.approx(at + 50, abs=1e-3)  # w2's lease expires then
    status_before = queue.status(now=at + 21)

    late = outcome(
        stale, kind, at=at + 21, retry_at=at + 22 if kind == "retry" else None, started=started
    )
    if via == "record":
        queue.record([late], owner="w1", now=at + 21)
    else:
        batch = queue.lease(routing_for(), owner="w1", limit=10, outcomes=[late], now=at + 21)
        assert batch.leases == []  # the delivery is still w2's: nothing to take

    assert queue.event(event_id, now=at + 21) == before  # row, due time, history: unchanged
    assert queue.dead_letters() == []
    status = queue.status(now=at + 21)
    assert (status.running, status.pending, status.retrying, status.dead) == (
        status_before.running,
        status_before.pending,
        status_before.retrying,
        status_before.dead,
    )
    assert take(queue, now=at + 23, owner="w3") == []  # not due again before w2's lease ends

    # The current attempt still records its own outcome.
    queue.record([outcome(current, "done", at=at + 30)], owner="w2", now=at + 30)
    assert delivery_state(queue, event_id, at + 31) == "done"
    assert history(queue, event_id) == [(1, "lost"), (2, "done")]


def test_the_outcomes_after_a_stale_one_or_a_release_in_one_batch_are_recorded(
    queue: Queue,
) -> None:
    at = time.time() - 600
    event_id, stale, _current = _taken_over(queue, at)
    released_id = publish(queue, "order.created", at=at + 21)
    done_id = publish(queue, "order.created", at=at + 22)
    leases = {lease.event_id: lease for lease in take(queue, now=at + 23, owner="w2")}
    assert set(leases) == {released_id, done_id}

    queue.record(
        [
            outcome(stale, "done", at=at + 24),  # fenced off: w2 holds the delivery now
            outcome(leases[released_id], "release", at=at + 24),
            outcome(leases[done_id], "done", at=at + 24),
        ],
        owner="w2",
        now=at + 24,
    )

    assert delivery_state(queue, event_id, at + 25) == "running"
    assert delivery_state(queue, released_id, at + 25) == "pending"
    assert delivery_state(queue, done_id, at + 25) == "done"


def test_a_stale_renewal_returns_0_and_leaves_the_current_lease_as_it_was(queue: Queue) -> None:
    at = time.time() - 600
    event_id, stale, current = _taken_over(queue, at)
    before = queue.event(event_id, now=at + 21)

    assert queue.renew([(stale, at + 1000)], now=at + 21) == 0

    assert queue.event(event_id, now=at + 21) == before
    assert queue.next_due() == pytest.approx(at + 50, abs=1e-3)
    # Renewing both: only the held one counts, and only it is extended.
    assert queue.renew([(stale, at + 2000), (current, at + 100)], now=at + 21) == 1
    assert queue.next_due() == pytest.approx(at + 100, abs=1e-3)
    assert take(queue, now=at + 99, owner="w3") == []
    (third,) = take(queue, now=at + 101, owner="w3")
    assert third.attempt == 3


def test_a_renewal_counts_every_lease_it_extends(queue: Queue) -> None:
    at = time.time() - 600
    for n in range(3):
        publish(queue, "order.created", at=at + n)
    leases = take(queue, now=at + 3, routing=routing_for(lease_seconds=10))
    assert len(leases) == 3

    assert queue.renew([(lease, at + 100) for lease in leases], now=at + 4) == 3

    assert take(queue, now=at + 50) == []  # all three still held
    assert queue.next_due() == pytest.approx(at + 100, abs=1e-3)


# Outcomes


def test_a_retry_is_due_at_its_retry_time_and_counts_a_failure(queue: Queue) -> None:
    at = time.time() - 600
    event_id = publish(queue, "order.created", at=at)
    (lease,) = take(queue, now=at)

    queue.record([outcome(lease, "retry", at=at + 1, retry_at=at + 60)], owner=OWNER, now=at)

    record = queue.event(event_id, now=at + 2)
    assert record is not None and record.status == "retrying"
    (delivery,) = record.deliveries
    assert (delivery.state, delivery.attempts, delivery.failures) == ("retrying", 1, 1)
    assert delivery.due_at == pytest.approx(at + 60, abs=1e-3)
    assert delivery.last_error == "ValueError: card declined"
    assert delivery.traceback is not None and delivery.traceback.endswith("card declined")
    (attempt,) = delivery.history
    assert (attempt.attempt, attempt.outcome, attempt.worker) == (1, "retry", OWNER)
    assert attempt.started_at == pytest.approx(at + 0.75, abs=1e-3)
    assert attempt.finished_at == pytest.approx(at + 1, abs=1e-3)
    assert attempt.error == "ValueError: card declined"
    assert queue.status(now=at + 2).retrying == 1

    assert take(queue, now=at + 59) == []
    (again,) = take(queue, now=at + 60)
    assert (again.attempt, again.failures) == (2, 1)


def test_an_outcome_that_does_not_count_as_a_failure_leaves_failures_alone(queue: Queue) -> None:
    at = time.time() - 600
    event_id = publish(queue, "order.created", at=at)
    (lease,) = take(queue, now=at)

    queue.record(
        [outcome(lease, "retry", at=at + 1, retry_at=at + 60, counts_as_failure=False)],
        owner=OWNER,
        now=at,
    )
    record = queue.event(event_id, now=at + 2)
    assert record is not None
    assert record.deliveries[0].failures == 0
    (again,) = take(queue, now=at + 60)
    assert (again.attempt, again.failures) == (2, 0)

    queue.record([outcome(again, "dead", at=at + 61, counts_as_failure=False)], owner=OWNER, now=at)
    (letter,) = queue.dead_letters()
    assert (letter.attempts, letter.failures) == (2, 0)


def test_an_outcome_without_an_error_or_a_traceback_records_none(queue: Queue) -> None:
    # As the worker records a dead letter of a receiver it does not run: an error, no
    # traceback.
    at = time.time() - 600
    retried, dead = (publish(queue, "order.created", at=at + n) for n in range(2))
    leases = {lease.event_id: lease for lease in take(queue, now=at + 2)}

    queue.record(
        [
            Outcome(leases[retried], "retry", at + 2, at + 3, retry_at=at + 60),
            Outcome(leases[dead], "dead", None, at + 3, error="not registered"),
        ],
        owner=OWNER,
        now=at,
    )

    record = queue.event(retried, now=at + 4)
    assert record is not None
    (delivery,) = record.deliveries
    assert (delivery.state, delivery.last_error, delivery.traceback) == ("retrying", None, None)
    (letter,) = queue.dead_letters()
    assert (letter.event_id, letter.error, letter.traceback) == (dead, "not registered", None)


def test_a_released_attempt_is_due_again_at_once(queue: Queue) -> None:
    at = time.time() - 600
    event_id = publish(queue, "order.created", at=at)
    (lease,) = take(queue, now=at)

    # Never started: the attempt gives its number back and leaves no history.
    queue.record([outcome(lease, "release", at=at + 1, started=False)], owner=OWNER, now=at)
    record = queue.event(event_id, now=at + 1)
    assert record is not None
    (delivery,) = record.deliveries
    assert (delivery.state, delivery.attempts, delivery.failures) == ("pending", 0, 0)
    assert delivery.history == ()
    (again,) = take(queue, now=at + 1)
    assert again.attempt == 1

    # Interrupted while running: the attempt counts, as interrupted, but is no failure.
    queue.record([outcome(again, "release", at=at + 2)], owner=OWNER, now=at)
    assert history(queue, event_id) == [(1, "interrupted")]
    (third,) = take(queue, now=at + 2)
    assert (third.attempt, third.failures) == (2, 0)


def test_an_outcome_of_an_unknown_kind_raises_and_records_nothing(queue: Queue) -> None:
    at = time.time() - 60
    first, _ = (publish(queue, "order.created", at=at + n) for n in range(2))
    (lease,) = take(queue, now=at + 2, limit=1)
    unknown = Outcome(lease, "lost", started_at=at + 2, finished_at=at + 3)  # type: ignore[arg-type]
    done = outcome(lease, "done", at=at + 3)

    with pytest.raises(
        ValueError, match=r"unknown outcome kind 'lost': use one of done, retry, dead, release$"
    ):
        queue.record([done, unknown], owner=OWNER, now=at)
    with pytest.raises(ValueError, match="unknown outcome kind"):
        queue.lease(routing_for(), owner=OWNER, limit=1, outcomes=[done, unknown], now=at + 3)

    # Neither the good outcome beside it nor the lease went through.
    assert delivery_state(queue, first, at + 3) == "running"
    status = queue.status(now=at + 3)
    assert (status.running, status.pending) == (1, 1)


# Due times and running leases


def test_next_due_is_when_the_earliest_delivery_or_event_to_fan_out_is_due(queue: Queue) -> None:
    at = time.time() - 600
    assert queue.next_due() is None

    publish(queue, "report.due", at=at, delay=3600)
    assert queue.next_due() == pytest.approx(at, abs=1e-3)  # due for fan-out at once
    batch = queue.lease(routing_for(), owner=OWNER, limit=10, now=at + 1)
    assert batch.leases == []
    assert batch.next_due == pytest.approx(at + 3600, abs=1e-3)
    assert queue.next_due() == pytest.approx(at + 3600, abs=1e-3)

    publish(queue, "order.created", at=at + 2)
    (lease,) = take(queue, now=at + 2, routing=routing_for(lease_seconds=30))
    assert queue.next_due() == pytest.approx(at + 32, abs=1e-3)  # when that lease expires
    queue.record([outcome(lease, "done", at=at + 3)], owner=OWNER, now=at)
    assert queue.next_due() == pytest.approx(at + 3600, abs=1e-3)


@pytest.mark.parametrize("skew", [-30.0, 30.0])
def test_next_due_is_on_the_callers_clock_when_it_differs_from_the_servers(
    server_queue: Queue, monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    # A worker on a host whose clock is 30 s ahead of the database's must not see a delivery
    # due in 20 s as 10 s overdue (it would poll until then), nor one behind it as not due.
    queue = server_queue
    queue.publish([prepare("report.due", payload={}, delay=20)])
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)
    batch = queue.lease(routing_for(), owner=OWNER, limit=10)  # fans it out, leases nothing
    assert batch.leases == []
    assert batch.next_due is not None and 17 < batch.next_due - time.time() < 21
    # Nothing left to fan out: a lease that only reads tells the same.
    again = queue.lease(routing_for(), owner=OWNER, limit=10)
    assert again.leases == []
    assert again.next_due is not None and 17 < again.next_due - time.time() < 21
    due = queue.next_due()
    assert due is not None and 17 < due - time.time() < 21


@pytest.mark.parametrize("skew", [-30.0, 30.0])
def test_a_worker_whose_clock_differs_from_the_servers_records_every_kind_of_outcome(
    server_queue: Queue, monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    queue = server_queue
    ids = queue.publish([prepare("order.created", payload={"n": n}) for n in range(3)])
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)
    leases = {
        lease.event_id: lease for lease in queue.lease(routing_for(), owner=OWNER, limit=10).leases
    }
    now = time.time()

    queue.record(
        [
            outcome(leases[ids[0]], "done", at=now),
            outcome(leases[ids[1]], "dead", at=now),
            outcome(leases[ids[2]], "retry", at=now, retry_at=now + 3600),
        ],
        owner=OWNER,
    )

    states = []
    for event_id in ids:
        record = queue.event(event_id)
        assert record is not None
        states.append(record.deliveries[0].state)
    assert states == ["done", "dead", "retrying"]


def test_without_now_a_lease_reads_the_queues_own_clock(queue: Queue) -> None:
    # As a worker calls it: no `now`, so the queue's clock says what is due.
    (event_id,) = queue.publish([prepare("order.created", payload={})])

    batch = queue.lease(routing_for(), owner=OWNER, limit=10)

    assert [lease.event_id for lease in batch.leases] == [event_id]
    assert queue.lease(routing_for(), owner=OWNER, limit=10).leases == []  # running now


def test_running_count_counts_the_unexpired_leases_of_owners_with_a_prefix(queue: Queue) -> None:
    now = time.time()
    for n in range(4):
        publish(queue, "order.created", at=now - 200 + n)
    take(queue, now=now - 100, limit=1, owner="old1/host:1")  # expired by now
    assert len(take(queue, now=now, limit=2, owner="run1/host:1")) == 2
    assert len(take(queue, now=now, limit=1, owner="run2/host:2")) == 1

    assert queue.running_count("run1/") == 2
    assert queue.running_count("run2/") == 1
    assert queue.running_count("run") == 3
    assert queue.running_count("old1/") == 0
    assert queue.running_count("nobody/") == 0
