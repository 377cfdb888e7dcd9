"""An async receiver: the worker awaits it."""

from __future__ import annotations

import asyncio
import os

import evq


@evq.subscriber("async.*")
async def remember(event: evq.Event, /) -> None:
    await asyncio.sleep(0.01)
    line = f"{event.id} remember {event.attempt} {os.getpid()}\n".encode()
    fd = os.open(os.environ["EVQ_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@evq.subscriber("async.upstream", timeout=30, retries=0)
async def call_upstream(event: evq.Event, /) -> None:
    raise TimeoutError("the upstream API took too long")
