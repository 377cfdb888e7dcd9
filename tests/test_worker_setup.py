"""How the worker is set up, checked in this process on a SQLite file: the refusal to start
without subscriptions, the receivers a `--receiver` worker leases, the listeners of outcomes,
two threads at once, and a burst's patience with an outage. (mutmut follows these; it does not
follow `evq worker` subprocesses.)"""

from __future__ import annotations

import threading
import types
from pathlib import Path

import pytest
from conftest import stored_events

import evq
from evq import outage
from evq.errors import NoSubscriptions, StorageError
from evq.storage.contract import Outcome
from evq.worker import WorkerOptions, create_consumer


def later(event: evq.Event, /) -> None:
    raise evq.Retry("not yet", delay=30)


def other(event: evq.Event, /) -> None:
    raise evq.Retry("not yet", delay=30)


def handled(event: evq.Event, /) -> None:
    pass


def name_of(receiver: object) -> str:
    return f"{receiver.__module__}:{receiver.__qualname__}"  # type: ignore[attr-defined]


def test_a_worker_without_subscriptions_refuses_to_start_and_says_how_to_load_them(
    queue_path: Path,
) -> None:
    with pytest.raises(NoSubscriptions) as refused:
        create_consumer(WorkerOptions(url=str(queue_path)))
    assert str(refused.value) == (
        "no subscriptions loaded: install a package with evq.subscriptions entry points,"
        " or name a module with --app / EVQ_APP"
    )


def test_a_worker_of_selected_receivers_leases_only_their_deliveries(queue_path: Path) -> None:
    evq.subscribe("order.*", receiver=later)
    evq.subscribe("order.*", receiver=other)
    ids = [evq.publish("order.created", payload={"n": n}) for n in range(3)]
    options = WorkerOptions(url=str(queue_path), receivers=(name_of(later),))
    storage = create_consumer(options).huey.storage
    assert storage.receivers.names == [name_of(later)]

    leased = []
    while (message := storage.dequeue_message()) is not None:
        leased.append((message.kwargs["event_id"], message.kwargs["receiver"]))

    assert sorted(leased) == sorted((event_id, name_of(later)) for event_id in ids)
    others = [
        delivery
        for event in stored_events(str(queue_path))
        for delivery in event.deliveries
        if delivery.receiver == name_of(other)
    ]
    assert len(others) == 3
    assert [(d.state, d.worker, d.attempts) for d in others] == [("pending", None, 0)] * 3
    storage.release_running()
    storage.close()


def test_outcome_listeners_hear_each_outcome_in_the_thread_that_ran_it(queue_path: Path) -> None:
    # What `evq worker --metrics-port` hangs its counters on.
    evq.subscribe("order.*", receiver=handled)
    event_id = evq.publish("order.created", payload={})
    consumer = create_consumer(WorkerOptions(url=str(queue_path), burst=True))
    heard: list[Outcome] = []
    consumer.huey.outcome_listeners.append(heard.append)

    consumer.run()

    assert [(o.lease.event_id, o.lease.receiver, o.kind) for o in heard] == [
        (event_id, name_of(handled), "done")
    ]


# Each delivery waits for the other to start: one thread alone would never get past the first.
both = threading.Barrier(2, timeout=20)


def together(event: evq.Event, /) -> None:
    both.wait()


def test_a_worker_with_two_threads_runs_two_deliveries_at_once(queue_path: Path) -> None:
    both.reset()
    evq.subscribe("order.*", receiver=together, retries=0)
    for n in range(2):
        evq.publish("order.created", payload={"n": n})
    create_consumer(WorkerOptions(url=str(queue_path), workers=2, burst=True)).run()

    deliveries = [d for event in stored_events(str(queue_path)) for d in event.deliveries]
    assert [(d.state, d.attempts) for d in deliveries] == [("done", 1)] * 2


def test_a_burst_worker_gives_up_on_an_outage_that_outlasts_its_patience(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run by cron or CI, it stops and says why, rather than waiting for an operator.
    now = [1000.0]
    monkeypatch.setattr(outage, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    evq.subscribe("order.*", receiver=handled)
    consumer = create_consumer(WorkerOptions(url=str(queue_path), burst=True))
    run = consumer.huey.storage.outage
    error = StorageError("database is locked")
    run.failed(error, consumer.stop_flag)
    now[0] += outage.BURST_PATIENCE_SECONDS
    run.failed(error, consumer.stop_flag)
    assert consumer.stop_flag.is_set()
    assert run.fatal == "database is locked (gave up after 10 s of retries)"
    consumer.huey.storage.close()
