"""The worker run in this process (`create_consumer(...).run()`, and its housekeeping thread's
step) on a SQLite file, where a test can pin what the `evq worker` subprocess tests can only
bound: the exact log line and fields of an outcome, the heartbeat the worker writes, and what
its retention prunes and keeps. (mutmut follows these; it does not follow subprocesses.)"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import delivery_states, stored_events
from contract.steps import every_state, finish, outcome, publish, routing_for, take
from workers import rows, wait_until

import evq
import evq.worker
from evq.storage import open_queue
from evq.storage.contract import DeliveryRecord, Lease, Outcome
from evq.storage.sqlite import connection
from evq.worker import DeliveryConsumer, WorkerOptions, create_consumer

DAY = 86400.0


def later(event: evq.Event, /) -> None:
    raise evq.Retry("not yet", delay=30)


RECEIVER = f"{later.__module__}:{later.__qualname__}"


def test_a_retry_is_logged_with_its_duration_and_the_wait_its_receiver_asked_for(
    queue_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    evq.subscribe("order.*", receiver=later)
    event_id = evq.publish("order.created", payload={})
    with caplog.at_level(logging.INFO, logger="evq.worker"):
        create_consumer(WorkerOptions(url=str(queue_path), burst=True)).run()

    ((delivery,),) = [event.deliveries for event in stored_events(str(queue_path))]
    (attempt,) = delivery.history
    assert (delivery.state, attempt.outcome) == ("retrying", "retry")
    assert attempt.started_at is not None
    took = attempt.finished_at - attempt.started_at
    (record,) = [r for r in caplog.records if hasattr(r, "delivery")]
    assert (record.levelname, record.getMessage()) == (
        "WARNING",
        f"retry    order.created {event_id} -> {RECEIVER} (attempt 1) in {took * 1000:.1f} ms:"
        " Retry: not yet; next attempt in 30.0 s",
    )
    fields = dict(record.delivery)
    assert fields.pop("traceback").startswith("Traceback (most recent call last):")
    assert fields == {
        "outcome": "retry",
        "event_id": event_id,
        "event_name": "order.created",
        "receiver": RECEIVER,
        "delivery_id": delivery.id,
        "attempt": 1,
        "duration_seconds": round(took, 6),
        "retry_in_seconds": 30.0,
        "error": "Retry: not yet",
    }


def handled(event: evq.Event, /) -> None:
    pass


HANDLED = f"{handled.__module__}:{handled.__qualname__}"


def declined(event: evq.Event, /) -> None:
    raise ValueError("card declined")


@pytest.mark.parametrize(
    ("receiver", "kind", "level", "text"),
    [
        (handled, "done", "INFO", "done     {where} in {ms} ms"),
        (declined, "dead", "ERROR", "dead     {where} in {ms} ms: ValueError: card declined"),
    ],
    ids=["done", "dead"],
)
def test_a_done_and_a_dead_delivery_are_logged_with_their_duration_and_fields(
    queue_path: Path,
    caplog: pytest.LogCaptureFixture,
    receiver: Callable[[evq.Event], None],
    kind: str,
    level: str,
    text: str,
) -> None:
    evq.subscribe("order.*", receiver=receiver, retries=0)
    event_id = evq.publish("order.created", payload={})
    with caplog.at_level(logging.INFO, logger="evq.worker"):
        create_consumer(WorkerOptions(url=str(queue_path), burst=True)).run()

    ((delivery,),) = [event.deliveries for event in stored_events(str(queue_path))]
    (attempt,) = delivery.history
    assert (delivery.state, attempt.outcome) == (kind, kind)
    assert attempt.started_at is not None
    took = attempt.finished_at - attempt.started_at
    name = f"{receiver.__module__}:{receiver.__qualname__}"
    where = f"order.created {event_id} -> {name} (attempt 1)"
    (record,) = [r for r in caplog.records if hasattr(r, "delivery")]
    assert (record.levelname, record.getMessage()) == (
        level,
        text.format(where=where, ms=f"{took * 1000:.1f}"),
    )
    fields = dict(record.delivery)
    expected: dict[str, object] = {
        "outcome": kind,
        "event_id": event_id,
        "event_name": "order.created",
        "receiver": name,
        "delivery_id": delivery.id,
        "attempt": 1,
        "duration_seconds": round(took, 6),
    }
    if kind == "dead":
        assert fields.pop("traceback").startswith("Traceback (most recent call last):")
        expected["error"] = "ValueError: card declined"
    assert fields == expected


def test_a_delivery_whose_payload_is_damaged_is_logged_dead_without_a_duration(
    queue_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Never run, so not timed: the line and the fields have no duration.
    evq.subscribe("order.*", receiver=handled)
    event_id = evq.publish("order.created", payload={})
    with sqlite3.connect(queue_path) as conn:
        conn.execute("UPDATE evq_event SET payload = '{not json'")
    conn.close()
    with caplog.at_level(logging.INFO, logger="evq.worker"):
        create_consumer(WorkerOptions(url=str(queue_path), burst=True)).run()

    ((delivery,),) = [event.deliveries for event in stored_events(str(queue_path))]
    assert delivery.state == "dead" and delivery.last_error is not None
    assert delivery.last_error.startswith("stored payload is not valid JSON: ")
    (record,) = [r for r in caplog.records if hasattr(r, "delivery")]
    where = f"order.created {event_id} -> {HANDLED} (attempt 1)"
    assert (record.levelname, record.getMessage()) == (
        "ERROR",
        f"dead     {where}: {delivery.last_error}",
    )
    assert record.delivery == {
        "outcome": "dead",
        "event_id": event_id,
        "event_name": "order.created",
        "receiver": HANDLED,
        "delivery_id": delivery.id,
        "attempt": 1,
        "error": delivery.last_error,
    }


def soon(event: evq.Event, /) -> None:
    raise evq.Retry("in a moment", delay=0.4567)


def test_a_retry_within_a_second_is_logged_to_the_millisecond(
    queue_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    evq.subscribe("order.*", receiver=soon)
    evq.publish("order.created", payload={})
    with caplog.at_level(logging.INFO, logger="evq.worker"):
        create_consumer(WorkerOptions(url=str(queue_path), burst=True)).run()

    record = next(r for r in caplog.records if hasattr(r, "delivery"))
    assert record.getMessage().endswith(": Retry: in a moment; next attempt in 0.5 s")
    assert record.delivery["retry_in_seconds"] == 0.457


interrupted: list[str] = []


def interrupted_once(event: evq.Event, /) -> None:
    if not interrupted:
        interrupted.append(event.id)
        raise KeyboardInterrupt  # as huey stops a worker's thread mid-attempt


def test_an_attempt_the_stop_interrupts_is_logged_released_and_runs_again(
    queue_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    interrupted.clear()
    evq.subscribe("order.*", receiver=interrupted_once)
    event_id = evq.publish("order.created", payload={})
    with caplog.at_level(logging.INFO, logger="evq.worker"):
        create_consumer(WorkerOptions(url=str(queue_path), burst=True)).run()

    ((delivery,),) = [event.deliveries for event in stored_events(str(queue_path))]
    assert delivery.state == "done"
    name = f"{interrupted_once.__module__}:{interrupted_once.__qualname__}"
    released, done = [r for r in caplog.records if hasattr(r, "delivery")]
    assert (released.levelname, released.getMessage()) == (
        "WARNING",
        f"released order.created {event_id} -> {name} (attempt 1): the worker is stopping",
    )
    assert released.delivery.pop("duration_seconds") >= 0.0
    assert released.delivery == {
        "outcome": "release",
        "event_id": event_id,
        "event_name": "order.created",
        "receiver": name,
        "delivery_id": delivery.id,
        "attempt": 1,
    }
    assert done.delivery["outcome"] == "done"


def test_the_housekeeper_records_its_worker_and_prunes_only_what_retention_allows(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The housekeeper's first step at once (a worker waits a few seconds after start).
    monkeypatch.setattr(evq.worker, "PRUNE_FIRST_DELAY_SECONDS", 0.0)
    evq.subscribe("order.*", receiver=later)
    queue = open_queue(str(queue_path))
    # The recent ones first: their leases would take the old ones' due deliveries.
    recent = every_state(queue, at=time.time() - 60)
    old = every_state(queue, at=time.time() - 3 * DAY)
    queue.worker_seen("gone", hostname="h", pid=1, started_at=time.time() - 3 * DAY, info="{}")
    with sqlite3.connect(queue_path) as conn:
        conn.execute("UPDATE evq_worker SET seen_at = seen_at - 2 * 86400 WHERE id = 'gone'")

    consumer = create_consumer(WorkerOptions(url=str(queue_path), retention_seconds=2 * DAY))
    housekeeper = consumer._create_scheduler()
    consumer.stop_flag.set()  # the step's pause at its end returns at once
    housekeeper.loop()

    # Finished events older than the retention go; dead letters and everything newer stay.
    assert queue.event(old.done) is None
    kept = [old.dead, old.retrying, old.running, old.pending, old.delayed]
    kept += [recent.done, recent.dead, recent.retrying, recent.running, recent.pending]
    assert [event_id for event_id in kept if queue.event(event_id) is None] == []
    # The heartbeat names this worker run; a walk that reached the end forgot the day-old one.
    run_id = consumer.huey.storage.run_id
    (worker,) = queue.status().workers
    assert (worker.id, json.loads(worker.info)) == (
        run_id,
        {"workers": 1, "worker_type": "thread", "receivers": [RECEIVER]},
    )
    with sqlite3.connect(queue_path) as conn:
        assert conn.execute("SELECT id FROM evq_worker").fetchall() == [(run_id,)]
    consumer.huey.storage.close()
    queue.close()


def test_leases_a_stopping_worker_gives_back_are_due_at_once_and_keep_the_attempt_it_ran(
    queue_path: Path,
) -> None:
    # What `evq worker` does on a stop signal, step by step: the prefetched leases go back as
    # never started, the running one as an interrupted attempt of this worker.
    evq.subscribe("order.*", receiver=later)
    ids = [evq.publish("order.created", payload={"n": n}) for n in range(3)]
    storage = create_consumer(WorkerOptions(url=str(queue_path), lease_seconds=600)).huey.storage
    leased_at = time.time()
    message = storage.dequeue_message()  # all three leased; the first one is handed out
    assert message is not None
    running = message.kwargs["event_id"]
    storage.release_unstarted()
    storage.release_running()
    released_at = time.time()
    storage.close()

    deliveries = {event.id: event.deliveries[0] for event in stored_events(str(queue_path))}
    assert sorted(deliveries) == sorted(ids)
    for event_id, delivery in deliveries.items():
        assert (delivery.state, delivery.worker) == ("pending", None)
        assert delivery.due_at is not None
        assert leased_at <= delivery.due_at <= released_at
        if event_id != running:
            assert (delivery.attempts, delivery.history) == (0, ())
    (attempt,) = deliveries[running].history
    assert (attempt.attempt, attempt.outcome, attempt.worker) == (1, "interrupted", storage.owner)
    assert attempt.started_at is not None
    assert leased_at <= attempt.started_at <= attempt.finished_at <= released_at


def test_a_full_queue_halves_a_lease_transaction_down_to_one_and_success_doubles_it_back() -> None:
    # So that a worker still makes progress with room for one delivery's write. Each size is a
    # LIMIT of the next lease transaction: halved, rounded down, never a float (a LIMIT of 3.5
    # or 128.0 is an error on some backends); each success doubles them back.
    sizes = evq.worker._TransactionSizes(7)
    shrunk, grown = [], []
    for _ in range(9):
        sizes.shrink()
        shrunk.append((sizes.leases, sizes.dispatch))
    for _ in range(9):
        sizes.grow()
        grown.append((sizes.leases, sizes.dispatch))
    assert shrunk == [(3, 128), (1, 64), (1, 32), (1, 16), (1, 8), (1, 4), (1, 2), (1, 1), (1, 1)]
    assert {type(size) for pair in shrunk for size in pair} == {int}
    assert grown == [
        (2, 2),
        (4, 4),
        (7, 8),
        (7, 16),
        (7, 32),
        (7, 64),
        (7, 128),
        (7, 256),
        (7, 256),
    ]


def test_a_worker_that_stops_is_no_longer_listed_as_seen(queue_path: Path) -> None:
    evq.subscribe("order.*", receiver=later)
    evq.publish("order.created", payload={})
    consumer = create_consumer(WorkerOptions(url=str(queue_path), burst=True))
    queue = open_queue(str(queue_path))
    # Its heartbeat, as its housekeeping thread writes it (which a short run may not reach).
    run_id = consumer.huey.storage.run_id
    queue.worker_seen(run_id, hostname="h", pid=1, started_at=time.time(), info="{}")
    assert [worker.id for worker in queue.status().workers] == [run_id]

    consumer.run()

    assert queue.status().workers == []
    queue.close()


@pytest.mark.parametrize(("timeout", "lease"), [(10.0, 15.0), (0.5, 1.5)])
def test_a_receiver_with_a_timeout_is_leased_a_little_longer_than_its_timeout(
    queue_path: Path, timeout: float, lease: float
) -> None:
    # Not the worker's lease (here ten minutes): a worker that dies mid-attempt has its
    # delivery taken again soon after the attempt would have timed out; at least a second
    # after, however short the timeout.
    evq.subscribe("order.*", receiver=later, timeout=timeout)
    evq.publish("order.created", payload={})
    storage = create_consumer(WorkerOptions(url=str(queue_path), lease_seconds=600)).huey.storage
    message = storage.dequeue_message()
    assert message is not None
    assert message.kwargs["lease_seconds"] == lease
    ((delivery,),) = [event.deliveries for event in stored_events(str(queue_path))]
    assert delivery.started_at is not None
    assert delivery.due_at == delivery.started_at + lease
    storage.release_running()
    storage.close()


@pytest.mark.parametrize("prefetch", [1, 7, 64, 1000, 10_000])
def test_a_lease_transaction_grows_back_to_the_whole_prefetch_once_writes_work_again(
    prefetch: int,
) -> None:
    from evq.worker import _TransactionSizes

    sizes = _TransactionSizes(prefetch)
    for _ in range(20):  # a full disk: halved down to one event and one delivery
        sizes.shrink()
    assert (sizes.leases, sizes.dispatch) == (1, 1)
    for _ in range(40):
        sizes.grow()
    assert (sizes.leases, sizes.dispatch) == (prefetch, _TransactionSizes.DISPATCH)


def deliveries_by_event(queue_path: Path) -> dict[str, DeliveryRecord]:
    return {event.id: event.deliveries[0] for event in stored_events(str(queue_path))}


def test_huey_gets_each_leased_delivery_as_a_json_message_named_by_its_delivery_and_attempt(
    queue_path: Path,
) -> None:
    # huey's storage interface: `dequeue()` hands over JSON (EvqHuey takes the message itself).
    evq.subscribe("order.*", receiver=later)
    event_id = evq.publish("order.created", payload={})
    storage = create_consumer(WorkerOptions(url=str(queue_path))).huey.storage
    data = storage.dequeue()
    assert data is not None
    assert list(json.loads(data)) == ["__message__"]  # JSON (huey's tagged message), never pickle
    message = storage.serializer.deserialize(data)
    (delivery,) = deliveries_by_event(queue_path).values()
    assert (message.id, message.name, message.args) == (f"{delivery.id}.1", storage.task_name, ())
    lease = Lease(**message.kwargs)
    assert (lease.event_id, lease.delivery_id, lease.attempt) == (event_id, delivery.id, 1)
    assert storage.dequeue() is None  # nothing else is due
    storage.release_running()
    storage.close()


def test_huey_cannot_enqueue_into_an_evq_queue(queue_path: Path) -> None:
    evq.subscribe("order.*", receiver=later)
    storage = create_consumer(WorkerOptions(url=str(queue_path))).huey.storage
    with pytest.raises(NotImplementedError) as raised:
        storage.enqueue(b"{}")
    assert str(raised.value) == "evq publishes events with evq.publish(), not huey.enqueue()"
    storage.close()


def test_a_leased_delivery_is_held_by_the_worker_that_leased_it(queue_path: Path) -> None:
    evq.subscribe("order.*", receiver=later)
    evq.publish("order.created", payload={})
    storage = create_consumer(WorkerOptions(url=str(queue_path))).huey.storage
    assert storage.dequeue_message() is not None
    (delivery,) = deliveries_by_event(queue_path).values()
    assert (delivery.state, delivery.worker) == ("running", storage.owner)
    storage.release_running()
    storage.close()


def elsewhere(event: evq.Event, /) -> None:
    pass


def test_a_burst_is_not_finished_while_a_delivery_it_may_run_is_due_or_held(
    queue_path: Path,
) -> None:
    evq.subscribe("order.*", receiver=later)
    evq.subscribe("invoice.*", receiver=elsewhere)
    options = WorkerOptions(url=str(queue_path), burst=True, receivers=(RECEIVER,))
    storage = create_consumer(options).huey.storage
    evq.publish("invoice.sent", payload={})
    # Fanned out by the worker, but due for a receiver it does not run.
    assert storage.dequeue_message() is None
    assert storage.burst_finished()
    evq.publish("order.created", payload={})
    evq.publish("order.created", payload={})
    assert not storage.burst_finished()  # due, not leased yet
    assert storage.dequeue_message() is not None  # one running, one prefetched
    assert not storage.burst_finished()
    storage.release_unstarted()
    storage.release_running()
    storage.close()


def test_a_thread_worker_that_stops_leaves_the_attempts_of_other_threads_running(
    queue_path: Path,
) -> None:
    # Only a process worker (one thread) gives back what it holds as running when it stops.
    evq.subscribe("order.*", receiver=later)
    evq.publish("order.created", payload={})
    consumer = create_consumer(WorkerOptions(url=str(queue_path), workers=2))
    storage = consumer.huey.storage
    assert storage.dequeue_message() is not None  # another thread's attempt, still running
    consumer._create_worker().shutdown()
    (delivery,) = deliveries_by_event(queue_path).values()
    assert (delivery.state, delivery.worker, delivery.history) == ("running", storage.owner, ())
    storage.release_running()
    storage.close()


def test_an_outcome_that_cannot_be_written_is_dropped_with_an_error_and_the_worker_goes_on(
    queue_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One bad outcome must not stop the process: dropped, its delivery runs again once its
    # lease expires (a duplicate, not a loss).
    evq.subscribe("order.*", receiver=later)
    evq.publish("order.created", payload={})
    storage = create_consumer(WorkerOptions(url=str(queue_path))).huey.storage
    message = storage.dequeue_message()
    assert message is not None
    lease = Lease(**message.kwargs)
    storage.finished(Outcome(lease, "bogus", time.time(), time.time()))  # type: ignore[arg-type]
    with (
        caplog.at_level(logging.ERROR, logger="evq.worker"),
        pytest.raises(ValueError, match="unknown outcome kind 'bogus'") as raised,
    ):
        storage.dequeue_message()
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.levelname, r.getMessage()) for r in logged] == [
        (
            "ERROR",
            f"could not record 1 outcomes ({raised.value}); their deliveries will run again",
        )
    ]
    assert storage.dequeue_message() is None  # the bad outcome is gone; nothing else is due
    (delivery,) = deliveries_by_event(queue_path).values()
    assert (delivery.state, delivery.history) == ("running", ())
    storage.close()


def test_an_outcome_is_written_with_the_next_lease_not_on_its_own_while_the_batch_lasts(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One transaction records a batch's outcomes and takes the next batch; only a batch that
    # lasts longer than FLUSH_SECONDS (here a minute) has its outcomes written before it ends.
    monkeypatch.setattr(evq.worker, "FLUSH_SECONDS", 60.0)
    evq.subscribe("order.*", receiver=handled)
    first, second = (evq.publish("order.created", payload={"n": n}) for n in range(2))
    huey = create_consumer(WorkerOptions(url=str(queue_path))).huey
    huey.execute(huey.dequeue())  # both leased, the first run
    task = huey.dequeue()  # the second, from the prefetched batch
    assert deliveries_by_event(queue_path)[first].state == "running"
    huey.execute(task)
    assert huey.dequeue() is None  # the batch is over: both outcomes written, nothing leased
    deliveries = deliveries_by_event(queue_path)
    assert [deliveries[event_id].state for event_id in (first, second)] == ["done", "done"]
    huey.storage.close()


@pytest.mark.parametrize("batch_lasts", [False, True], ids=["next lease", "batch lasts"])
def test_outcomes_a_locked_file_kept_from_being_written_are_written_once_it_is_free(
    queue_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    batch_lasts: bool,
) -> None:
    # A write that fails for a while (here the file locked by another connection) keeps the
    # outcomes for the next try: written with the next lease, or by the flush of a batch that
    # lasts (every time, here). The outage is logged when it starts and when it is over.
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_MS", 10)  # fail at once, not after minutes
    monkeypatch.setattr(connection, "_WRITE_DEADLINE_SECONDS", 0.0)
    monkeypatch.setattr(evq.worker, "FLUSH_SECONDS", -1.0)
    evq.subscribe("order.*", receiver=handled)
    ids = [evq.publish("order.created", payload={"n": n}) for n in range(2 if batch_lasts else 1)]
    consumer = create_consumer(WorkerOptions(url=str(queue_path)))
    storage = consumer.huey.storage
    worker = consumer._create_worker()
    consumer.stop_flag.set()  # the worker's waits return at once
    worker.loop()  # the first delivery runs; its outcome waits to be written
    blocker = sqlite3.connect(queue_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with caplog.at_level(logging.WARNING, logger="evq.worker"):
        worker.loop()  # cannot write
        blocker.execute("ROLLBACK")
        worker.loop()  # writes it (and runs the second delivery, if any)
        storage.outage.ended()
    storage.release_unstarted()
    storage.close()
    blocker.close()

    # (An earlier test in the process may have left evq.worker at INFO: its lines are not these.)
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.getMessage().split(" after ")[0]) for r in warned] == [
        (
            "ERROR",
            f"cannot use the queue: cannot write the queue {str(queue_path)!r}: database is"
            " locked; retrying with backoff",
        ),
        ("WARNING", "the queue works again"),
    ]
    deliveries = deliveries_by_event(queue_path)
    for event_id in ids:
        (attempt,) = deliveries[event_id].history
        assert (deliveries[event_id].state, attempt.outcome, attempt.worker) == (
            "done",
            "done",
            storage.owner,
        )


def test_leases_a_stopping_worker_cannot_give_back_are_left_to_expire_with_an_error_line(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_MS", 10)  # fail at once, not after minutes
    monkeypatch.setattr(connection, "_WRITE_DEADLINE_SECONDS", 0.0)
    evq.subscribe("order.*", receiver=later)
    evq.publish("order.created", payload={})
    storage = create_consumer(WorkerOptions(url=str(queue_path))).huey.storage
    assert storage.dequeue_message() is not None
    blocker = sqlite3.connect(queue_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with caplog.at_level(logging.WARNING, logger="evq.worker"):
        storage.release_running()  # stopping anyway: no exception
    blocker.execute("ROLLBACK")
    blocker.close()
    storage.close()

    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.getMessage()) for r in logged] == [
        (
            "ERROR",
            f"could not give back 1 leases (cannot write the queue {str(queue_path)!r}:"
            " database is locked); they will expire",
        )
    ]
    (delivery,) = deliveries_by_event(queue_path).values()
    assert (delivery.state, delivery.worker) == ("running", storage.owner)


def test_deliveries_a_lease_makes_dead_letters_are_counted_in_a_warning(
    queue_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = open_queue(str(queue_path))
    evq.publish("order.created", payload={})
    evq.publish("order.created", payload={})
    queue.lease(routing_for("shop:gone", pattern="order.*"), owner="earlier", limit=0)  # fan out
    queue.close()
    evq.subscribe("order.*", receiver=later)  # this worker runs `later` alone
    storage = create_consumer(WorkerOptions(url=str(queue_path))).huey.storage
    with caplog.at_level(logging.WARNING, logger="evq.worker"):
        assert storage.dequeue_message() is None
    storage.close()

    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.getMessage()) for r in logged] == [
        ("WARNING", "2 deliveries became dead letters (see `evq dlq list`)")
    ]


def test_a_delivery_whose_row_cannot_travel_as_json_becomes_a_dead_letter_at_once(
    queue_path: Path,
) -> None:
    # A damaged row (a publish time that is no number): never a lease held and renewed for ever.
    evq.subscribe("order.*", receiver=handled)
    broken = evq.publish("order.created", payload={})
    with sqlite3.connect(queue_path) as conn:
        conn.execute("UPDATE evq_event SET published_at = x'00ff' WHERE id = ?", (broken,))
    conn.close()
    storage = create_consumer(WorkerOptions(url=str(queue_path))).huey.storage
    assert storage.dequeue_message() is None
    assert storage.dequeue_message() is None  # writes the dead letter with the next lease
    storage.close()

    (delivery,) = deliveries_by_event(queue_path).values()
    error = "cannot deliver: TypeError: Object of type bytes is not JSON serializable"
    assert (delivery.state, delivery.last_error, delivery.failures) == ("dead", error, 0)
    assert delivery.traceback is not None
    assert delivery.traceback.startswith("Traceback (most recent call last):")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fanned_out", [True, False], ids=["fanned out", "not fanned out yet"])
@pytest.mark.parametrize(
    ("damage", "error"),
    [
        ("X'00'", "TypeError: Object of type bytes is not JSON serializable"),
        ("9e999", "ValueError: Out of range float values are not JSON compliant"),
    ],
    ids=["bytes", "infinity"],
)
def test_an_event_value_json_cannot_carry_makes_a_dead_letter_that_says_why(
    queue_path: Path, damage: str, error: str, fanned_out: bool
) -> None:
    # A damaged row (its publish time here) cannot travel in a huey message: a dead letter
    # with json's own words, never a lease held for ever. Before its fan-out, such an event
    # was never due (infinity), or failed every lease (bytes, text): the worker spun.
    evq.subscribe("order.*", receiver=handled)
    evq.publish("order.created", payload={})
    if fanned_out:
        create_consumer(WorkerOptions(url=str(queue_path), burst=True)).run()
    with sqlite3.connect(queue_path) as conn:
        conn.execute(f"UPDATE evq_event SET published_at = {damage}")
        conn.execute("UPDATE evq_delivery SET state = 'pending', due_at = 0")
    conn.close()
    create_consumer(WorkerOptions(url=str(queue_path), burst=True)).run()

    ((delivery,),) = [event.deliveries for event in stored_events(str(queue_path))]
    assert (delivery.state, delivery.last_error) == ("dead", f"cannot deliver: {error}")


# What `watched` sees: the consumer that runs it, and the ids of the tasks in flight.
_watched: dict[str, Any] = {}


def watched(event: evq.Event, /) -> None:
    tasks = _watched["consumer"].huey._tasks_in_flight
    _watched["in_flight"].append([task.id for task in tasks])


def test_an_attempt_is_in_flight_while_it_runs_and_its_outcome_goes_to_the_listeners(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huey interrupts a process worker only while a task is in flight; metrics listen to the
    # outcomes.
    evq.subscribe("order.*", receiver=watched)
    evq.publish("order.created", payload={})
    consumer = create_consumer(WorkerOptions(url=str(queue_path), burst=True))
    in_flight: list[list[str]] = []
    monkeypatch.setitem(_watched, "consumer", consumer)
    monkeypatch.setitem(_watched, "in_flight", in_flight)
    heard: list[evq.worker.Outcome] = []
    consumer.huey.outcome_listeners.append(heard.append)
    consumer.run()

    ((delivery,),) = [event.deliveries for event in stored_events(str(queue_path))]
    assert in_flight == [[f"{delivery.id}.1"]]
    assert consumer.huey._tasks_in_flight == set()
    assert [(o.kind, o.lease.delivery_id, o.lease.attempt) for o in heard] == [
        ("done", delivery.id, 1)
    ]


def _held_leases(queue_path: Path) -> dict[str, float]:
    return dict(rows(queue_path, "SELECT id, due_at FROM evq_delivery WHERE state = 'running'"))


def _renewed(
    queue_path: Path, leased: dict[str, float], *, changed: bool = False
) -> dict[str, float] | None:
    """The held leases, once each of `leased` has been renewed, or with `changed` once each
    has a new expiry, whatever it is (None until then)."""
    held = _held_leases(queue_path)
    if held.keys() != leased.keys():
        return None
    if all(held[i] != leased[i] if changed else held[i] > leased[i] for i in held):
        return held
    return None


def test_the_lease_heartbeat_renews_every_held_lease_before_the_shortest_one_expires(
    queue_path: Path,
) -> None:
    # The worker's lease is ten minutes, but this receiver's (a little longer than its
    # timeout) is 1.05 s: the heartbeat must beat for the shortest. Held: the running attempt,
    # the prefetched ones, and a finished one whose outcome waits for the next lease.
    evq.subscribe("order.*", receiver=later, timeout=0.05)
    for n in range(3):
        evq.publish("order.created", payload={"n": n})
    storage = create_consumer(WorkerOptions(url=str(queue_path), lease_seconds=600)).huey.storage
    first = storage.dequeue_message()
    second = storage.dequeue_message()
    assert first is not None and second is not None
    lease = evq.worker.Lease(**first.kwargs)
    storage.finished(evq.worker.Outcome(lease, "done", time.time(), time.time()))
    leased = _held_leases(queue_path)
    assert len(leased) == 3

    renewed = wait_until(lambda: _renewed(queue_path, leased, changed=True), timeout=10)
    # Extended, by the receiver's 1.05 s (not the worker's ten minutes); no bound on when the
    # heartbeat ran, which a loaded machine may delay (no timing asserted).
    assert {i: leased[i] < due < leased[i] + 60 for i, due in renewed.items()} == dict.fromkeys(
        leased, True
    )
    # A daemon: a process worker exits without waiting for it.
    heartbeat = storage._heartbeat
    assert heartbeat is not None
    assert (heartbeat.name, heartbeat.daemon) == ("evq-lease-heartbeat", True)
    storage.release_unstarted()
    storage.release_running()
    storage.close()


class _FailingRenewals:
    """The worker's queue, but its next renewals fail with `errors`, one each."""

    def __init__(self, queue: Any, errors: list[Exception]) -> None:
        self._queue = queue
        self._errors = errors

    def renew(self, leases: Any) -> int:
        if self._errors:
            raise self._errors.pop(0)
        result: int = self._queue.renew(leases)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def test_the_lease_heartbeat_logs_a_failed_renewal_and_goes_on_renewing(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Without the heartbeat, a long receiver's delivery would be taken by another worker: an
    # outage (one line for all of it) or a bug of evq's (a traceback) must not stop it.
    evq.subscribe("order.*", receiver=later, timeout=0.05)
    evq.publish("order.created", payload={})
    storage = create_consumer(WorkerOptions(url=str(queue_path), lease_seconds=600)).huey.storage
    errors: list[Exception] = [evq.errors.StorageError("disk I/O error"), KeyError("bug")]
    monkeypatch.setattr(storage, "queue", _FailingRenewals(storage.queue, errors))
    caplog.set_level(logging.INFO, logger="evq.worker")
    assert storage.dequeue_message() is not None
    leased = _held_leases(queue_path)

    wait_until(lambda: _renewed(queue_path, leased), timeout=10)
    assert errors == []
    lines = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines[:2] == [
        ("cannot use the queue: disk I/O error; retrying with backoff", False),
        ("could not renew leases", True),
    ]
    storage.release_running()
    storage.close()


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_a_burst_counts_every_attempt_its_workers_ran(queue_path: Path, worker_type: str) -> None:
    # The count `evq worker` ends with ("stopped after 1.2 s, 5 deliveries"); process workers
    # count in their parent's shared memory.
    evq.subscribe("order.*", receiver=handled)
    for n in range(5):
        evq.publish("order.created", payload={"n": n})
    options = WorkerOptions(url=str(queue_path), burst=True, workers=2, worker_type=worker_type)
    consumer = create_consumer(options)
    consumer.run()
    assert consumer.delivered == 5
    assert delivery_states(str(queue_path)) == {"done": 5}


def test_an_idle_worker_without_burst_waits_for_work_instead_of_stopping(
    queue_path: Path,
) -> None:
    evq.subscribe("order.*", receiver=handled)
    consumer = create_consumer(WorkerOptions(url=str(queue_path)))
    worker = consumer._create_worker()
    worker.loop()  # nothing due: it waits (up to a second) for a commit
    assert not consumer.stop_flag.is_set()
    evq.publish("order.created", payload={})
    worker.loop()
    assert worker.delivered == 1
    consumer.huey.storage.release_unstarted()  # writes the outcome, as a stop does
    assert delivery_states(str(queue_path)) == {"done": 1}
    consumer.huey.storage.close()


def _damage(path: Path) -> None:
    """Overwrite the header of the queue file, as a failing disk or a stray write would."""
    with open(path, "r+b") as file:
        file.write(b"\xa5" * 100)


def _damaged_queue(path: Path) -> None:
    """A queue file holding one event due now, then damaged."""
    queue = open_queue(str(path))
    publish(queue, "order.created", at=time.time())
    queue.close()
    _damage(path)


def _stopped_for_damage(consumer: DeliveryConsumer, caplog: pytest.LogCaptureFixture) -> None:
    """The run stops at once with the reason `evq worker` ends with, logged once."""
    assert consumer.stop_flag.is_set()
    fatal = consumer.huey.storage.outage.fatal
    assert fatal is not None and fatal.endswith("file is not a database"), fatal
    assert [r.getMessage() for r in caplog.records if r.name == "evq.worker"] == [
        f"cannot use the queue: {fatal}; retrying with backoff"
    ]


@pytest.mark.timeout(30)  # a worker that waits for ever instead fails, not hangs
def test_a_damaged_queue_stops_a_worker_taking_its_next_delivery_with_the_reason(
    queue_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    evq.subscribe("order.*", receiver=handled)
    _damaged_queue(queue_path)
    consumer = create_consumer(WorkerOptions(url=str(queue_path)))
    with caplog.at_level(logging.INFO, logger="evq.worker"):
        consumer._create_worker().loop()
    _stopped_for_damage(consumer, caplog)


@pytest.mark.timeout(30)  # a worker that waits for ever instead fails, not hangs
def test_a_damaged_queue_stops_a_burst_asking_whether_anything_is_left_with_the_reason(
    queue_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    evq.subscribe("order.*", receiver=handled)
    _damaged_queue(queue_path)
    consumer = create_consumer(WorkerOptions(url=str(queue_path), burst=True))
    with caplog.at_level(logging.INFO, logger="evq.worker"):
        consumer._create_worker().sleep()  # what the worker does when nothing was leased
    _stopped_for_damage(consumer, caplog)


@pytest.mark.timeout(30)  # a worker that waits for ever instead fails, not hangs
def test_a_damaged_queue_stops_the_housekeepers_heartbeat_with_the_reason(
    queue_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    evq.subscribe("order.*", receiver=handled)
    _damaged_queue(queue_path)
    consumer = create_consumer(WorkerOptions(url=str(queue_path)))
    housekeeper = consumer._create_scheduler()
    with caplog.at_level(logging.INFO, logger="evq.worker"):
        housekeeper.loop()  # its first step: the heartbeat (pruning starts seconds later)
    _stopped_for_damage(consumer, caplog)


def _old_dead_then_done(queue_path: Path, done: int) -> tuple[str, list[str]]:
    """A dead letter three days old, then `done` finished events just after it."""
    queue = open_queue(str(queue_path))
    at = time.time() - 3 * DAY
    dead = publish(queue, "order.paid", at=at)
    finish(queue, take(queue, now=at), "dead", at=at)
    finished = [publish(queue, "order.created", at=at + 1 + n) for n in range(done)]
    finish(queue, take(queue, now=at + 10), "done", at=at + 10)
    queue.close()
    return dead, finished


def test_the_housekeeper_prunes_a_bounded_step_at_a_time_and_goes_on_where_it_stopped(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # One event a batch, one batch a step: the dead letter at the head of the log is looked
    # at once, then each step goes on after it, a second later, until the walk is done.
    monkeypatch.setattr(evq.worker, "PRUNE_FIRST_DELAY_SECONDS", 0.0)
    monkeypatch.setattr(evq.worker, "PRUNE_BATCH_SIZE", 1)
    monkeypatch.setattr(evq.worker, "PRUNE_MAX_BATCHES", 1)
    evq.subscribe("order.*", receiver=later)
    dead, finished = _old_dead_then_done(queue_path, 2)
    consumer = create_consumer(WorkerOptions(url=str(queue_path), retention_seconds=2 * DAY))
    housekeeper = consumer._create_scheduler()
    consumer.stop_flag.set()  # the step's pause at its end returns at once
    queue = open_queue(str(queue_path))

    with caplog.at_level(logging.INFO, logger="evq.worker"):
        housekeeper.loop()  # the first step looks at the dead letter alone
        assert [e for e in [dead, *finished] if queue.event(e) is None] == []
        for _ in range(5):  # one done event a step, then the end of the walk; then rest
            housekeeper.loop()

    assert [e for e in [dead, *finished] if queue.event(e) is not None] == [dead]
    assert [r.getMessage() for r in caplog.records if r.name == "evq.worker"] == [
        "pruned 1 finished events older than the retention period"
    ] * 2
    consumer.huey.storage.close()
    queue.close()


@pytest.mark.timeout(30)  # a worker that waits for ever instead fails, not hangs
def test_a_damaged_queue_stops_the_housekeepers_pruning_with_the_reason(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(evq.worker, "PRUNE_FIRST_DELAY_SECONDS", 0.0)
    monkeypatch.setattr(evq.worker, "PRUNE_BATCH_SIZE", 1)
    monkeypatch.setattr(evq.worker, "PRUNE_MAX_BATCHES", 1)
    evq.subscribe("order.*", receiver=later)
    _old_dead_then_done(queue_path, 1)
    consumer = create_consumer(WorkerOptions(url=str(queue_path), retention_seconds=2 * DAY))
    housekeeper = consumer._create_scheduler()
    housekeeper.loop()  # the heartbeat, and a first step of the walk: the next is due at once
    consumer.huey.storage.close()
    _damage(queue_path)
    with caplog.at_level(logging.INFO, logger="evq.worker"):
        housekeeper.loop()  # no heartbeat due for seconds: the next step of the walk
    _stopped_for_damage(consumer, caplog)


@pytest.mark.parametrize(("wait", "logged"), [(0.1234, 0.123), (-2.0, 0.0)])
def test_the_fields_of_a_retry_give_its_wait_to_the_millisecond_and_never_below_zero(
    queue_path: Path, wait: float, logged: float
) -> None:
    # A retry due already (a clock that moved back) waits for nothing, not for minus 2 s.
    queue = open_queue(str(queue_path))
    publish(queue, "order.created", at=time.time())
    (lease,) = take(queue, now=time.time())
    queue.close()
    finished_at = time.time()
    retry = outcome(lease, "retry", at=finished_at, retry_at=finished_at + wait)
    assert evq.worker.delivery_fields(retry)["retry_in_seconds"] == logged


@pytest.mark.timeout(30)  # a worker that waits for ever instead fails, not hangs
def test_a_burst_on_a_damaged_queue_ends_its_run_with_the_reason(queue_path: Path) -> None:
    # Its last write (that the worker stopped) fails too: the run still ends, with the reason
    # `evq worker` prints.
    evq.subscribe("order.*", receiver=handled)
    _damaged_queue(queue_path)
    consumer = create_consumer(WorkerOptions(url=str(queue_path), burst=True))
    consumer.run()
    fatal = consumer.huey.storage.outage.fatal
    assert fatal is not None and fatal.endswith("file is not a database"), fatal
    assert consumer.delivered == 0
