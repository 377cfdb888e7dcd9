"""Publishing from asyncio code: `apublish` and `apublish_many`, which never block the event
loop while a write waits for the disk or the server.

The blocking publish runs in a thread of evq's own (not the loop's default executor, which the
application may fill with work of its own, and which would let any number of publishes
contend for the queue at once): the event loop goes on running other tasks meanwhile. It is
the same `publish`, so the validation, the errors and the guarantees are the same; every
backend works, since each queue handle is safe across threads. Kept apart from
`evq.publisher` so that `evq publish` never imports asyncio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from evq.publisher import Delay, publish, publish_many

#: Threads that publish for coroutines: enough to overlap a few commits (a server backend
#: takes concurrent publishes), few enough not to crowd a small machine.
PUBLISH_THREADS = 4

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


async def apublish(
    name: str,
    /,
    *,
    payload: dict[str, Any],
    delay: Delay = None,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """`evq.publish` for asyncio code: returns the event id once the event is committed,
    without blocking the event loop meanwhile. Raises what `publish` raises."""
    call = functools.partial(publish, name, payload=payload, delay=delay, key=key, headers=headers)
    result: str = await asyncio.get_running_loop().run_in_executor(_publish_executor(), call)
    return result


async def apublish_many(
    events: Iterable[Mapping[str, Any]],
    /,
    *,
    batch_size: int = 1000,
) -> list[str]:
    """`evq.publish_many` for asyncio code: validates and stores every event (all or none)
    without blocking the event loop; returns their ids in order. Raises what
    `publish_many` raises."""
    if isinstance(events, Iterable) and not isinstance(events, (str, bytes, Mapping)):
        # A generator is read here, on the loop's thread, where its author expects it to run.
        events = list(events)
    call = functools.partial(publish_many, events, batch_size=batch_size)
    result: list[str] = await asyncio.get_running_loop().run_in_executor(_publish_executor(), call)
    return result


def _forget_executor() -> None:
    # A forked child has none of its parent's threads: it starts a pool of its own.
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_executor)


def _publish_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=PUBLISH_THREADS, thread_name_prefix="evq-publish"
            )
        return _executor
