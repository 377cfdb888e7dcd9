"""Receivers that fail, ask for retries, run slowly or time out, for the reliability tests.

Each call is recorded as a line `event_id receiver attempt pid` (one O_APPEND write) in the
file named by EVQ_TEST_LOG; slow receivers write `receiver:start` before they sleep and
`receiver:done` after, so a test can tell when one is running.
"""

from __future__ import annotations

import time

import evq
from tests.apps.log import record


class Fatal(Exception):
    """An error the `fatal` subscription says must not be retried."""


@evq.subscriber(
    "fail.always", retries=4, retry_delay=10, retry_backoff=3, max_retry_delay=100, jitter=False
)
def always_fails(event: evq.Event, /) -> None:
    record(event, "always_fails")
    raise ValueError(f"boom on attempt {event.attempt}")


@evq.subscriber("fail.jitter", retries=4, retry_delay=10, retry_backoff=2, max_retry_delay=30)
def jittery(event: evq.Event, /) -> None:
    record(event, "jittery")
    raise ValueError("boom")


@evq.subscriber("fail.fatal", retries=5, dont_retry=(Fatal,))
def fatal(event: evq.Event, /) -> None:
    record(event, "fatal")
    raise Fatal("cannot ever work")


@evq.subscriber("retry.ask", retries=5, retry_delay=1000)
def asks_for_retry(event: evq.Event, /) -> None:
    record(event, "asks_for_retry")
    if event.attempt < 3:
        raise evq.Retry("the order is not paid yet", delay=42)


@evq.subscriber("slow.timeout", timeout=0.5, retries=0)
def too_slow(event: evq.Event, /) -> None:
    record(event, "too_slow:start")
    deadline = time.monotonic() + float(event.payload.get("seconds", 5))
    while time.monotonic() < deadline:
        time.sleep(0.02)
    record(event, "too_slow:done")


@evq.subscriber("slow.work", retries=5, retry_delay=0)
def slow(event: evq.Event, /) -> None:
    record(event, "slow:start")
    time.sleep(float(event.payload.get("seconds", 1)))
    record(event, "slow:done")


@evq.subscriber("fast.work", retries=5)
def fast(event: evq.Event, /) -> None:
    record(event, "fast")
