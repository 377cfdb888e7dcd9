"""The `queue` fixture: a fresh, empty queue of every available backend, for each test.

How a backend joins the contract suite: add it to `BACKENDS` in `tests/backends.py`, with a
function that returns the URL of a fresh, empty queue for one test (it gets the test's
temporary directory, and the server URL read from the backend's environment variable, if it
has one). A backend that needs a server runs only when that variable is set, and is skipped
otherwise. For example:

    BACKENDS["postgresql"] = Backend(fresh_url=new_postgres_schema, env="EVQ_TEST_POSTGRES_URL")
    BACKENDS["redis"] = Backend(fresh_url=new_redis_prefix, env="EVQ_TEST_REDIS_URL")
    BACKENDS["memory"] = Backend(fresh_url=new_memory_queue, cleanup=drop_memory_queue)

where `new_postgres_schema(tmp_path, server)` creates a schema (or database) of its own on the
server and returns a URL naming it; `cleanup(server, url)`, if given, removes it after the test
(for a backend without a server, `server` is "").
Every test of `tests/contract/` then runs once per backend: `pytest tests/contract -k
postgresql` runs one backend's. A backend whose variable is set runs, and fails if its server
cannot be reached: only an unset variable skips it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import BACKENDS, fresh_queue_url

from evq.storage import Queue, open_queue


@pytest.fixture(params=sorted(BACKENDS))
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Queue]:
    """A fresh, empty queue of each backend in turn, closed after the test."""
    yield from _fresh_queue(request.param, tmp_path)


@pytest.fixture(params=sorted(name for name, backend in BACKENDS.items() if backend.env))
def server_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Queue]:
    """`queue`, of each backend whose clock is a server's (not the caller's), in turn."""
    yield from _fresh_queue(request.param, tmp_path)


def _fresh_queue(backend: str, tmp_path: Path) -> Iterator[Queue]:
    with fresh_queue_url(backend, tmp_path) as url:
        handle = open_queue(url)
        try:
            yield handle
        finally:
            handle.close()
