"""A `memory://NAME` queue: every handle on one name in this process is the same queue, and it
says which one it is."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from contract.steps import publish

from evq.storage import open_queue
from evq.storage.memory import drop

URL = "memory://orders-of-test-memory-queue"


@pytest.fixture(autouse=True)
def _dropped() -> Iterator[None]:
    yield
    drop(URL)


def test_a_queue_names_itself_by_its_name_in_this_process() -> None:
    queue = open_queue(URL)
    assert queue.location == URL
    assert queue.source == "evq+" + URL
    # The scheme in another case opens the same queue, which still names itself the same.
    assert open_queue("MEMORY://orders-of-test-memory-queue").location == URL
    assert open_queue("memory://").location == "memory://"


def test_a_dropped_queue_is_empty_for_the_handles_still_on_it_and_new_ones() -> None:
    held = open_queue(URL)
    publish(held, "order.paid", at=time.time())
    assert held.status().published == 1

    drop(URL)

    assert held.status().published == 0
    assert held.events() == []
    assert open_queue(URL).status().published == 0
    drop("memory://never-opened")  # a queue that was never there: nothing to forget
