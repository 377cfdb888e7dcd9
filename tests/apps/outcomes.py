"""Receivers with one outcome each, for the worker's metrics and logs: `accept` succeeds,
`hiccup` fails its first attempt and succeeds on the retry, `reject` fails for good."""

from __future__ import annotations

import evq


@evq.subscriber("outcome.ok")
def accept(event: evq.Event, /) -> None:
    pass


@evq.subscriber("outcome.flaky", retry_delay=0.05, jitter=False)
def hiccup(event: evq.Event, /) -> None:
    if event.attempt == 1:
        raise ConnectionError(f"upstream unavailable for {event.payload.get('n')}")


@evq.subscriber("outcome.bad", retries=0)
def reject(event: evq.Event, /) -> None:
    raise ValueError("cannot parse the order")
