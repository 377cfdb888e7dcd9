"""How the test receivers record their calls (this module subscribes nothing itself).

A call is one line `event_id receiver attempt pid` in the file named by EVQ_TEST_LOG, written
with one O_APPEND write so that lines from concurrent workers never interleave.
"""

from __future__ import annotations

import os

import evq


def record(event: evq.Event, receiver: str) -> None:
    """Append one line for this call to the EVQ_TEST_LOG file."""
    line = f"{event.id} {receiver} {event.attempt} {os.getpid()}\n".encode()
    fd = os.open(os.environ["EVQ_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
