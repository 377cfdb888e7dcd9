"""Dead letters: how a delivery becomes one, and listing, redriving and purging them."""

from __future__ import annotations

import json
import time

import pytest

from contract.steps import OWNER, finish, outcome, publish, publish_batch, routing_for, take
from evq.storage.contract import Queue

GARBAGE_IDS = ["abc", "99999999999999999999999", "", "-1", "1.5"]


def test_a_delivery_whose_retries_are_exhausted_is_a_dead_letter_with_its_event(
    queue: Queue,
) -> None:
    at = time.time() - 600
    event_id = publish(queue, "order.paid", at=at, payload={"order": 9})
    for attempt in (1, 2):
        (lease,) = take(queue, now=at + 10 * attempt)
        queue.record(
            [outcome(lease, "retry", at=at + 10 * attempt + 1, retry_at=at)], owner=OWNER, now=at
        )
    (last,) = take(queue, now=at + 30)
    queue.record([outcome(last, "dead", at=at + 31)], owner=OWNER, now=at)

    (letter,) = queue.dead_letters()
    assert letter.id == last.delivery_id
    assert (letter.event_id, letter.name, letter.receiver) == (
        event_id,
        "order.paid",
        last.receiver,
    )
    assert json.loads(letter.payload) == {"order": 9}
    assert (letter.attempts, letter.failures) == (3, 3)
    assert letter.dead_at == pytest.approx(at + 31, abs=1e-3)
    assert letter.published_at == pytest.approx(at, abs=1e-3)
    assert letter.created_at == pytest.approx(at + 10, abs=1e-3)  # fanned out then
    assert letter.error == "ValueError: card declined"
    assert letter.traceback is not None and letter.traceback.startswith("Traceback")
    assert queue.status(now=at + 32).dead == 1
    assert take(queue, now=at + 3600) == []  # never leased again
    record = queue.event(event_id)
    assert record is not None and record.status == "dead"


def test_dead_letters_are_listed_newest_first_and_filtered(queue: Queue) -> None:
    at = time.time() - 600
    for n in range(3):
        publish(queue, "order.paid", at=at + n)
    leases = take(queue, now=at + 3, routing=routing_for("shop:bill", "shop:ship"))
    assert len(leases) == 6
    for n, lease in enumerate(leases):
        queue.record([outcome(lease, "dead", at=at + 10 + n)], owner=OWNER, now=at)

    letters = queue.dead_letters()
    assert [letter.id for letter in letters] == [lease.delivery_id for lease in leases[::-1]]
    assert [letter.id for letter in queue.dead_letters(limit=2)] == [
        leases[5].delivery_id,
        leases[4].delivery_id,
    ]
    bill = queue.dead_letters(receiver="shop:bill")
    assert len(bill) == 3 and {letter.receiver for letter in bill} == {"shop:bill"}
    older = queue.dead_letters(older_than=at + 12)
    assert [letter.id for letter in older] == [leases[1].delivery_id, leases[0].delivery_id]
    chosen = [leases[0].delivery_id, leases[3].delivery_id]
    assert sorted(letter.id for letter in queue.dead_letters(ids=chosen)) == sorted(chosen)


def test_redrive_restarts_the_count_but_fences_off_outcomes_from_before(queue: Queue) -> None:
    at = time.time() - 600
    event_id = publish(queue, "order.paid", at=at)
    (first,) = take(queue, now=at, owner="w1")
    queue.record([outcome(first, "dead", at=at + 1)], owner="w1", now=at)

    assert queue.redrive([letter.id for letter in queue.dead_letters()]) == 1
    assert queue.dead_letters() == []
    # Pending again, with a fresh count: not retrying.
    record = queue.event(event_id)
    assert record is not None
    assert [(d.state, d.failures) for d in record.deliveries] == [("pending", 0)]
    status = queue.status()
    assert (status.pending, status.retrying, status.dead) == (1, 0, 0)

    (second,) = take(queue, now=time.time(), owner="w2")
    assert second.delivery_id == first.delivery_id
    assert second.attempt - second.attempt_base == 1  # what the receiver sees as its attempt
    assert second.attempt == 2  # the fencing token keeps counting
    assert second.failures == 0
    # The worker of the attempt before the redrive records it again: nothing changes.
    queue.record([outcome(first, "done", at=time.time())], owner="w1", now=at)
    record = queue.event(event_id)
    assert record is not None and record.deliveries[0].state == "running"
    queue.record([outcome(second, "done", at=time.time())], owner="w2", now=at)
    record = queue.event(event_id)
    assert record is not None
    (delivery,) = record.deliveries
    assert delivery.state == "done"
    assert [(a.attempt, a.outcome, a.worker) for a in delivery.history] == [
        (1, "dead", "w1"),
        (2, "done", "w2"),
    ]


def test_redrive_and_purge_touch_only_dead_letters(queue: Queue) -> None:
    at = time.time() - 600
    done_event = publish(queue, "order.created", at=at)
    (done,) = take(queue, now=at)
    finish(queue, [done], "done", at=at + 1)
    publish(queue, "order.paid", at=at + 2)
    (running,) = take(queue, now=time.time())

    assert queue.redrive([done.delivery_id, running.delivery_id]) == 0
    assert queue.purge([done.delivery_id, running.delivery_id]) == 0

    record = queue.event(done_event)
    assert record is not None and [d.state for d in record.deliveries] == ["done"]
    assert queue.status().running == 1


def test_purge_deletes_dead_letters_and_their_history_for_good(queue: Queue) -> None:
    at = time.time() - 600
    first = publish(queue, "order.paid", at=at)
    second = publish(queue, "order.paid", at=at + 1)
    leases = take(queue, now=at + 2)
    finish(queue, leases, "dead", at=at + 3)
    letters = queue.dead_letters()

    assert queue.purge([letters[0].id]) == 1
    assert queue.purge([letters[0].id]) == 0  # gone already

    assert [letter.id for letter in queue.dead_letters()] == [letters[1].id]
    purged = queue.event(letters[0].event_id)
    kept = queue.event(letters[1].event_id)
    assert purged is not None and purged.deliveries == ()  # the event itself stays
    assert kept is not None and [d.state for d in kept.deliveries] == ["dead"]
    assert {letters[0].event_id, letters[1].event_id} == {first, second}
    assert queue.status().dead == 1


def test_redrive_and_purge_count_every_dead_letter_of_a_long_list(queue: Queue) -> None:
    # More ids than one SQL statement takes at once: the count covers all of them.
    at = time.time() - 600
    publish_batch(queue, "order.paid", 1200, at=at)
    while leases := take(queue, now=at):  # a lease fans out a few hundred events at most
        finish(queue, leases, "dead", at=at + 1)
    ids = [letter.id for letter in queue.dead_letters()]
    assert len(ids) == 1200

    assert queue.redrive(ids) == 1200
    again = time.time()  # redriven: due now
    while leases := take(queue, now=again):
        finish(queue, leases, "dead", at=again)
    assert queue.purge(ids) == 1200
    assert queue.dead_letters() == []


def test_a_delivery_made_after_a_purge_has_no_history_but_its_own(queue: Queue) -> None:
    at = time.time() - 600
    publish(queue, "order.paid", at=at)
    (lease,) = take(queue, now=at)
    queue.record([outcome(lease, "retry", at=at + 1, retry_at=at + 2)], owner=OWNER, now=at)
    finish(queue, take(queue, now=at + 2), "dead", at=at + 3)
    assert queue.purge([letter.id for letter in queue.dead_letters()]) == 1

    event_id = publish(queue, "order.created", at=at + 10)
    take(queue, now=at + 10)

    record = queue.event(event_id)
    assert record is not None
    assert [(d.state, d.history) for d in record.deliveries] == [("running", ())]


def test_ids_that_name_no_dead_letter_are_simply_not_found(queue: Queue) -> None:
    at = time.time() - 600
    publish(queue, "order.paid", at=at)
    finish(queue, take(queue, now=at), "dead", at=at + 1)
    (letter,) = queue.dead_letters()

    for garbage in GARBAGE_IDS:
        assert queue.dead_letters(ids=[garbage]) == [], garbage
        assert queue.redrive([garbage]) == 0, garbage
        assert queue.purge([garbage]) == 0, garbage
        assert queue.event(garbage) is None, garbage
    assert [found.id for found in queue.dead_letters(ids=[*GARBAGE_IDS, letter.id])] == [letter.id]
    assert queue.dead_letters() == [letter]


def test_an_id_is_found_only_as_it_was_given_out(queue: Queue) -> None:
    at = time.time() - 600
    publish(queue, "order.paid", at=at)
    finish(queue, take(queue, now=at), "dead", at=at + 1)
    (letter,) = queue.dead_letters()

    # The same number written another way, or the largest ids a 64-bit key can and cannot hold,
    # name no dead letter: ids are compared as the text they were given out as.
    others = [f"0{letter.id}", f"00{letter.id}", f"+{letter.id}", f" {letter.id}", f"{letter.id} "]
    for other in [*others, str(2**63 - 1), str(2**63), "0"]:
        assert queue.dead_letters(ids=[other]) == [], other
        assert queue.redrive([other]) == 0, other
        assert queue.purge([other]) == 0, other
    assert queue.dead_letters() == [letter]


def test_a_purged_id_never_names_a_later_delivery_nor_takes_a_stale_outcome(
    queue: Queue,
) -> None:
    # The newest delivery purged: a delivery made after it gets an id of its own, so the
    # late outcome of a worker whose lease on the purged one expired (attempt 1, as the new
    # delivery's first) cannot land on it.
    at = time.time() - 600
    publish(queue, "order.paid", at=at)
    (stale,) = take(queue, now=at, owner="w1")
    (again,) = take(queue, now=at + 31, owner="w2")  # the 30 s lease expired
    finish(queue, [again], "dead", at=at + 32, owner="w2")
    (letter,) = queue.dead_letters()
    assert queue.purge([letter.id]) == 1

    event_id = publish(queue, "order.created", at=at + 40)
    (fresh,) = take(queue, now=at + 40, owner="w3")
    assert fresh.attempt == stale.attempt == 1
    assert fresh.delivery_id != stale.delivery_id
    queue.record([outcome(stale, "done", at=at + 41)], owner="w1", now=at + 41)

    record = queue.event(event_id)
    assert record is not None
    assert [(d.state, d.worker, d.history) for d in record.deliveries] == [("running", "w3", ())]
    assert queue.dead_letters(ids=[letter.id]) == []


def test_dead_letters_are_listed_by_when_they_died_not_by_id(queue: Queue) -> None:
    at = time.time() - 600
    for n in range(2):
        publish(queue, "order.paid", at=at + n)
    first, second = take(queue, now=at + 3)
    queue.record([outcome(second, "dead", at=at + 10)], owner=OWNER, now=at)
    queue.record([outcome(first, "dead", at=at + 20)], owner=OWNER, now=at)

    assert [letter.id for letter in queue.dead_letters()] == [
        first.delivery_id,
        second.delivery_id,
    ]


def test_a_redriven_delivery_is_no_longer_finished_nor_anyones(queue: Queue) -> None:
    at = time.time() - 600
    event_id = publish(queue, "order.paid", at=at)
    (lease,) = take(queue, now=at, owner="w1")
    queue.record([outcome(lease, "dead", at=at + 1)], owner="w1", now=at)

    assert queue.redrive([lease.delivery_id]) == 1

    record = queue.event(event_id)
    assert record is not None
    (delivery,) = record.deliveries
    assert (delivery.state, delivery.finished_at, delivery.worker) == ("pending", None, None)


def test_dead_letters_chosen_by_id_are_filtered_by_age_too(queue: Queue) -> None:
    at = float(int(time.time()) - 600)  # whole seconds: every backend stores them exactly
    for n in range(3):
        publish(queue, "order.paid", at=at + n)
    leases = take(queue, now=at + 3)
    for n, lease in enumerate(leases):
        finish(queue, [lease], "dead", at=at + 10 + n)
    newest, middle, oldest = [letter.id for letter in queue.dead_letters()]

    # Given newest first: the age filter skips the newest and goes on to the older ones; a
    # letter that died at the cutoff itself is not older than it.
    chosen = [newest, middle, oldest]
    assert [letter.id for letter in queue.dead_letters(ids=chosen, older_than=at + 11)] == [oldest]
    assert [letter.id for letter in queue.dead_letters(ids=chosen, older_than=at + 12)] == [
        middle,
        oldest,
    ]


def test_a_limit_on_dead_letters_chosen_by_id_keeps_the_newest_of_all_of_them(
    queue: Queue,
) -> None:
    at = time.time() - 600
    publish_batch(queue, "order.paid", 600, at=at)
    while leases := take(queue, now=at):
        finish(queue, leases, "dead", at=at + 1)
    letters = queue.dead_letters()
    assert len(letters) == 600
    last = letters[-1]
    queue.redrive([last.id])  # it dies again a second after all the others: the newest
    finish(queue, take(queue, now=time.time()), "dead", at=at + 2)
    ids = [letter.id for letter in letters if letter.id != last.id] + [last.id]

    assert [letter.id for letter in queue.dead_letters(ids=ids, limit=1)] == [last.id]
