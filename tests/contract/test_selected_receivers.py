"""A worker that runs only some receivers (`evq worker --receiver`): it fans events out to
every subscription, leases only its receivers' deliveries, and leaves the others' alone,
never as dead letters; its next due time is its receivers'."""

from __future__ import annotations

import time

from contract.steps import finish, publish
from evq.publisher import prepare
from evq.storage.contract import Queue, Routing

BILL, SHIP, AUDIT = "shop:bill", "shop:ship", "shop:audit"
SUBSCRIPTIONS = ((("order.*"), BILL), ("order.*", SHIP), ("**", AUDIT))


def selecting(*receivers: str) -> Routing:
    return Routing(
        subscriptions=SUBSCRIPTIONS,
        lease_seconds=dict.fromkeys(receivers, 30.0),
        selected=frozenset(receivers),
    )


def states(queue: Queue, event_id: str) -> dict[str, str]:
    record = queue.event(event_id)
    assert record is not None
    return {d.receiver: d.state for d in record.deliveries}


def test_a_selective_worker_fans_out_to_all_but_leases_only_its_receivers(queue: Queue) -> None:
    at = time.time() - 60
    event_id = publish(queue, "order.paid", at=at)

    batch = queue.lease(selecting(BILL), owner="w1", limit=100, now=at)

    assert [lease.receiver for lease in batch.leases] == [BILL]
    assert batch.dead_lettered == 0
    assert states(queue, event_id) == {BILL: "running", SHIP: "pending", AUDIT: "pending"}
    # Nothing else for it: the others' deliveries, due since `at`, do not make it due; its
    # next is when its own lease runs out.
    again = queue.lease(selecting(BILL), owner="w1", limit=100, now=at + 1)
    assert again.leases == [] and again.dead_lettered == 0
    assert again.next_due is not None and abs(again.next_due - (at + 30)) < 1
    mine = queue.next_due(frozenset({BILL}))
    assert mine is not None and abs(mine - (at + 30)) < 1
    everyones = queue.next_due()
    assert everyones is not None and everyones < at + 1

    other = queue.lease(selecting(SHIP, AUDIT), owner="w2", limit=100, now=at + 1)
    assert sorted(lease.receiver for lease in other.leases) == [AUDIT, SHIP]
    assert queue.dead_letters() == []


def test_a_selective_worker_leaves_deliveries_of_receivers_it_does_not_know(queue: Queue) -> None:
    at = time.time() - 60
    everyone = Routing(
        subscriptions=(("**", "gone:receiver"), ("**", BILL)),
        lease_seconds={"gone:receiver": 30.0, BILL: 30.0},
    )
    event_id = publish(queue, "order.paid", at=at)
    queue.lease(everyone, owner="w0", limit=0, now=at)  # fanned out, nothing leased

    batch = queue.lease(selecting(BILL), owner="w1", limit=100, now=at + 1)
    assert [lease.receiver for lease in batch.leases] == [BILL]
    assert states(queue, event_id)["gone:receiver"] == "pending"
    assert queue.dead_letters() == []


def test_a_selective_worker_sees_when_its_own_next_delivery_is_due(queue: Queue) -> None:
    at = time.time() - 60
    publish(queue, "order.paid", at=at)
    [bill] = queue.lease(selecting(BILL), owner="w1", limit=100, now=at).leases
    retry_at = at + 3600
    from contract.steps import outcome

    queue.record([outcome(bill, "retry", at=at + 1, retry_at=retry_at)], owner="w1", now=at + 1)

    batch = queue.lease(selecting(BILL), owner="w1", limit=100, now=at + 2)
    assert batch.leases == []
    assert batch.next_due is not None and abs(batch.next_due - retry_at) < 1
    due = queue.next_due(frozenset({BILL}))
    assert due is not None and abs(due - retry_at) < 1


def test_a_selective_worker_is_not_told_of_others_deliveries_due_before_its_own(
    queue: Queue,
) -> None:
    at = time.time() - 600
    publish(queue, "user.seen", at=at, delay=10)  # to AUDIT only: due at at + 10
    publish(queue, "order.paid", at=at, delay=100)  # to all three: due at at + 100

    fanned = queue.lease(selecting(BILL), owner="w1", limit=100, now=at)
    assert fanned.leases == []
    assert fanned.next_due is not None and abs(fanned.next_due - (at + 100)) < 1
    # Looking again before anything is due: still its own delivery's time, not AUDIT's.
    again = queue.lease(selecting(BILL), owner="w1", limit=100, now=at + 1)
    assert again.leases == []
    assert again.next_due is not None and abs(again.next_due - (at + 100)) < 1


def test_many_due_deliveries_of_others_do_not_hide_a_selected_one(queue: Queue) -> None:
    at = time.time() - 600
    ship_only = Routing(subscriptions=(("**", SHIP),), lease_seconds={SHIP: 30.0})
    for n in range(300):
        publish(queue, "order.paid", at=at + n / 1000)
    queue.lease(ship_only, owner="w0", limit=0, now=at + 1)
    late = publish(queue, "order.late", at=at + 2)
    queue.lease(
        Routing(subscriptions=(("order.late", BILL),), lease_seconds={BILL: 30.0}),
        owner="w0",
        limit=0,
        now=at + 2,
    )

    batch = queue.lease(selecting(BILL), owner="w1", limit=10, now=at + 3)
    assert [(lease.receiver, lease.event_id) for lease in batch.leases] == [(BILL, late)]
    finish(queue, batch.leases, "done", at=at + 4, owner="w1")


def test_a_selective_worker_finds_its_due_delivery_behind_a_backlog_of_others(
    queue: Queue,
) -> None:
    # 1,100 deliveries to another receiver, due first, that no worker takes; then one of its
    # own. (Redis reads past at most 1,024 others to find when the next of its own is due.)
    at = time.time() - 60
    events = [prepare("user.seen", payload={"n": n}, now=at) for n in range(1100)] + [
        prepare("order.paid", payload={}, now=at + 1)
    ]
    queue.publish(events, now=at)
    # Fanned out by a worker whose receiver has nothing here.
    fanned = queue.lease(
        selecting("shop:none"), owner="w0", limit=10, now=at + 2, dispatch_limit=5000
    )
    assert fanned.leases == []

    batch = queue.lease(selecting(BILL), owner="w1", limit=10, now=at + 2)

    assert [lease.receiver for lease in batch.leases] == [BILL]
