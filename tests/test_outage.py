"""One log line when an outage starts and one when it ends, by a clock the test moves: writes
that get through between failures (a nearly full disk) do not end it; writes that keep working
for a second do, and so does the end of the run once writes work again."""

from __future__ import annotations

import logging

import pytest

from evq import outage
from evq.errors import StorageError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(outage.time, "monotonic", clock)
    return clock


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "evq.worker"]


def test_writes_that_get_through_between_failures_do_not_end_the_outage(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="evq.worker")
    run = outage.Outage(burst=False)
    error = StorageError("database or disk is full")
    for _ in range(5):  # fail, a write gets through, fail again 0.1 s later
        run.failed(error, None)
        clock.now += 0.1
        run.recovered()
        clock.now += 0.1
    assert lines(caplog) == [
        "cannot use the queue: database or disk is full; retrying with backoff"
    ]

    run.recovered()  # 0.1 s after the last failure's write: not steady yet
    clock.now += outage.STEADY_SECONDS
    run.recovered()  # writes kept working for a second: over
    run.recovered()
    assert lines(caplog)[1:] == ["the queue works again after 0.9 s of errors"]

    run.failed(error, None)  # a new outage: a new line
    assert len(lines(caplog)) == 3


def test_the_end_of_the_run_ends_an_outage_whose_writes_work_again(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="evq.worker")
    run = outage.Outage(burst=True)
    run.failed(StorageError("database is locked"), None)
    clock.now += 2
    run.ended()  # still failing: nothing to say
    assert len(lines(caplog)) == 1
    run.recovered()  # one write, and the backlog was done
    run.ended()
    assert lines(caplog)[1:] == ["the queue works again after 2.0 s of errors"]


def test_a_burst_gives_up_when_an_outage_with_writes_between_failures_lasts_its_patience(
    clock: Clock,
) -> None:
    run = outage.Outage(burst=True)
    error = StorageError("database or disk is full")
    while clock.now < 1000.0 + outage.BURST_PATIENCE_SECONDS:
        run.failed(error, None)
        clock.now += 0.5
        run.recovered()
        clock.now += 0.5
    run.failed(error, None)
    assert run.fatal == "database or disk is full (gave up after 10 s of retries)"
