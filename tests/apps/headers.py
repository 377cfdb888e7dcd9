"""A receiver that writes the headers of each event it gets, as one JSON line
`{"id": ..., "headers": {...}, "attempt": n}`, to the file named by EVQ_TEST_LOG; it fails the
first attempt of an event whose payload says `{"fail_once": true}`."""

from __future__ import annotations

import json
import os

import evq


@evq.subscriber("**")
def remember_headers(event: evq.Event, /) -> None:
    line = json.dumps({"id": event.id, "headers": dict(event.headers), "attempt": event.attempt})
    fd = os.open(os.environ["EVQ_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
    if event.payload.get("fail_once") and event.attempt == 1:
        raise evq.Retry("once more", delay=0)
