"""An async receiver: the worker awaits it."""

from __future__ import annotations

import asyncio

import evq
from tests.apps.log import record


@evq.subscriber("async.*")
async def remember(event: evq.Event, /) -> None:
    await asyncio.sleep(0.01)
    record(event, "remember")


@evq.subscriber("async.upstream", timeout=30, retries=0)
async def call_upstream(event: evq.Event, /) -> None:
    raise TimeoutError("the upstream API took too long")
