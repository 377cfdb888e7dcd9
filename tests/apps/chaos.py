"""The recorder's three receivers with room for many lost workers: the chaos tests kill
workers again and again, and every kill counts as a failure of the deliveries it held (even
prefetched ones that never started), so the default `retries=5` could make a dead letter."""

from __future__ import annotations

import os
import time

import evq

RETRIES = 1000


def _record(event: evq.Event, receiver: str) -> None:
    delay = float(os.environ.get("EVQ_TEST_SLEEP", "0"))
    if delay:
        time.sleep(delay)
    line = f"{event.id} {receiver} {event.attempt} {os.getpid()}\n".encode()
    fd = os.open(os.environ["EVQ_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@evq.subscriber("order.*", retries=RETRIES, retry_delay=0.05)
def bill(event: evq.Event, /) -> None:
    _record(event, "bill")


@evq.subscriber("order.**", retries=RETRIES, retry_delay=0.05)
def ship(event: evq.Event, /) -> None:
    _record(event, "ship")


@evq.subscriber("**", retries=RETRIES, retry_delay=0.05)
def audit(event: evq.Event, /) -> None:
    _record(event, "audit")
