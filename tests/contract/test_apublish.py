"""`await evq.apublish(...)` and `apublish_many`: the same events, validation and errors as
`publish`, on every backend, and the event loop keeps running while the writes wait.

Never a timing: the loop's progress is shown by the order of what happened. A ticker
coroutine that sleeps a millisecond at a time writes "t" into a shared log, each finished
publish writes "p"; a publish that blocked the loop would leave no "t" between its "p"s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Iterator

import pytest

import evq
import evq.config
import evq.publisher
from evq.storage.contract import Queue

EVENTS = 1000


@pytest.fixture(autouse=True)
def publishing_to(queue: Queue) -> Iterator[None]:
    """`evq.publish` of this process goes to the test's queue."""
    evq.config.configure(url=queue.url)
    yield
    evq.config.reset()
    for handle in evq.publisher._queues.values():
        handle.close()
    evq.publisher._queues.clear()


async def with_ticker(work: Callable[[list[str]], Awaitable[None]]) -> list[str]:
    """Run `work(log)` while a coroutine ticks every millisecond; return the log."""
    log: list[str] = []
    done = asyncio.Event()

    async def tick() -> None:
        while not done.is_set():
            log.append("t")
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)  # the ticker starts first
    try:
        await work(log)
    finally:
        done.set()
        await ticker
    return log


def longest_run_of_publishes(log: list[str]) -> int:
    return max((len(list(run)) for kind, run in itertools.groupby(log) if kind == "p"), default=0)


def between_first_and_last_publish(log: list[str]) -> list[str]:
    first, last = log.index("p"), len(log) - 1 - log[::-1].index("p")
    return log[first : last + 1]


def test_the_loop_keeps_ticking_while_apublish_writes(queue: Queue) -> None:
    async def publish_all(log: list[str]) -> None:
        for n in range(EVENTS):
            await evq.apublish("order.paid", payload={"n": n})
            log.append("p")

    log = asyncio.run(with_ticker(publish_all))

    assert log.count("p") == EVENTS
    # Ticks all along, not once the publishing is over.
    assert between_first_and_last_publish(log).count("t") >= 2
    assert longest_run_of_publishes(log) < EVENTS // 2


def test_a_blocking_publish_in_a_coroutine_stops_the_ticker(queue: Queue) -> None:
    # What the test above would see if apublish blocked: it can fail.
    async def publish_all(log: list[str]) -> None:
        for n in range(EVENTS // 10):
            evq.publish("order.paid", payload={"n": n})
            log.append("p")

    log = asyncio.run(with_ticker(publish_all))

    assert between_first_and_last_publish(log).count("t") == 0


def test_the_loop_keeps_ticking_while_apublish_many_writes(queue: Queue) -> None:
    ids: list[str] = []
    items = [{"name": "order.paid", "payload": {"n": n}} for n in range(EVENTS)]

    async def publish_batches(log: list[str]) -> None:
        for _ in range(5):
            ids.extend(await evq.apublish_many(items))
            log.append("p")

    log = asyncio.run(with_ticker(publish_batches))

    assert len(ids) == 5 * EVENTS and len(set(ids)) == 5 * EVENTS
    assert between_first_and_last_publish(log).count("t") >= 2


def test_apublish_stores_the_same_event_as_publish(queue: Queue) -> None:
    async def main() -> tuple[str, str, list[str]]:
        one = await evq.apublish(
            "order.paid", payload={"n": 1}, key="k1", headers={"corr": "c1"}, delay=60
        )
        again = await evq.apublish("order.paid", payload={"n": 2}, key="k1")
        many = await evq.apublish_many(
            {"name": "order.shipped", "payload": {"n": n}} for n in range(3)
        )
        return one, again, many

    one, again, many = asyncio.run(main())

    assert again == one
    record = queue.event(one)
    assert record is not None
    assert record.name == "order.paid" and json.loads(record.payload) == {"n": 1}
    assert record.headers is not None and json.loads(record.headers) == {"corr": "c1"}
    assert record.due_at is not None and record.due_at > record.published_at + 59
    assert [queue.event(i) is not None for i in many] == [True, True, True]


def test_apublish_raises_what_publish_raises_and_stores_nothing(queue: Queue) -> None:
    async def main() -> None:
        with pytest.raises(evq.InvalidInput, match="bad header name"):
            await evq.apublish("order.paid", payload={}, headers={"X": "1"})
        with pytest.raises(evq.InvalidInput, match="payload"):
            await evq.apublish("order.paid", payload={"n": {1, 2}})
        with pytest.raises(evq.InvalidInput, match="event 2: "):
            await evq.apublish_many([{"name": "a.b", "payload": {}}, {"name": "", "payload": {}}])
        with pytest.raises(evq.InvalidInput, match="events must be a list"):
            await evq.apublish_many("a.b")  # type: ignore[arg-type]

    asyncio.run(main())

    assert queue.events() == []
