"""Three receivers that record every call as a line in the file named by EVQ_TEST_LOG.

A line is `event_id receiver attempt pid`, written with one O_APPEND write so that lines from
concurrent workers never interleave. EVQ_TEST_SLEEP (seconds) makes every receiver slow.
"""

from __future__ import annotations

import os
import time

import evq
from tests.apps.log import record


def _record(event: evq.Event, receiver: str) -> None:
    delay = float(os.environ.get("EVQ_TEST_SLEEP", "0"))
    if delay:
        time.sleep(delay)
    record(event, receiver)


@evq.subscriber("order.*")
def bill(event: evq.Event, /) -> None:
    _record(event, "bill")


@evq.subscriber("order.**")
def ship(event: evq.Event, /) -> None:
    _record(event, "ship")


def audit(event: evq.Event, /) -> None:
    _record(event, "audit")


evq.subscribe("**", receiver=audit)
