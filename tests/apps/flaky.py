"""Receivers that fail until EVQ_TEST_FIXED=1 is set: material for dead letters and redrive."""

from __future__ import annotations

import os

import evq
from tests.apps.log import record as _record


@evq.subscriber("job.**", retries=0)
def explode(event: evq.Event, /) -> None:
    if os.environ.get("EVQ_TEST_FIXED") != "1":
        raise ValueError(f"kaput {event.payload.get('n')}")
    _record(event, "explode")


@evq.subscriber("job.report.*", retries=0)
def report(event: evq.Event, /) -> None:
    if os.environ.get("EVQ_TEST_FIXED") != "1":
        raise KeyError("missing column")
    _record(event, "report")


@evq.subscriber("weird.text", retries=0)
def surrogate(event: evq.Event, /) -> None:
    # Text decoded with errors="surrogateescape" from a bad upstream response, say.
    raise ValueError("could not parse b'\udcff' from upstream")
