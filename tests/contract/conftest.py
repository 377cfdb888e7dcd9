"""The `queue` fixture: a fresh, empty queue of every available backend, for each test.

How a backend joins the contract suite: add it to `BACKENDS`, with a function that returns the
URL of a fresh, empty queue for one test (it gets the test's temporary directory, and the
server URL read from the backend's environment variable, if it has one). A backend that needs
a server runs only when that variable is set, and is skipped otherwise. For example:

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

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postgres_server import SKIP_REASON, drop_schema

from evq.storage import Queue, open_queue


@dataclasses.dataclass(frozen=True)
class Backend:
    """How to get a fresh queue of one backend: `fresh_url(tmp_path, server)` returns its URL;
    `env` names the variable holding the server's URL (None: the backend needs no server)."""

    fresh_url: Callable[[Path, str | None], str]
    env: str | None = None
    #: Deletes what a test left on the server: `cleanup(server, url)`, given the URL
    #: `fresh_url` returned.
    cleanup: Callable[[str, str], None] | None = None
    skip_reason: str = ""


def _sqlite_file(tmp_path: Path, server: str | None) -> str:
    return f"sqlite:///{tmp_path / 'evq.db'}"


def new_redis_prefix(tmp_path: Path, server: str | None) -> str:
    """A key prefix of its own on the server of `EVQ_TEST_REDIS_URL`, which must answer: a
    server that was asked for but cannot be reached fails the test, never skips it."""
    import redis

    assert server is not None
    try:
        redis.Redis.from_url(server, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.fail(f"EVQ_TEST_REDIS_URL is set but its server does not answer: {exc}")
    separator = "&" if "?" in server else "?"
    return f"{server}{separator}prefix=test-{uuid.uuid4().hex}"


def drop_redis_prefix(url: str) -> None:
    """Delete every key of the queue at `url` (found with SCAN on its prefix only)."""
    import redis

    from evq.storage.redis.connection import parse_url

    base = parse_url(url).base
    client = redis.Redis.from_url(url.split("?", 1)[0], socket_connect_timeout=5)
    pattern = base.replace("{", "\\{").replace("}", "\\}") + "*"
    keys = list(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _postgres_schema(tmp_path: Path, server: str | None) -> str:
    from postgres_server import fresh_schema

    assert server is not None
    return fresh_schema(server)


def _memory_queue(tmp_path: Path, server: str | None) -> str:
    return f"memory://contract-{uuid.uuid4().hex}"


def _drop_memory_queue(server: str, url: str) -> None:
    from evq.storage.memory import drop

    drop(url)


# Backend name -> how to make a fresh queue of it. The names become the test ids' suffixes.
BACKENDS: dict[str, Backend] = {
    "sqlite": Backend(fresh_url=_sqlite_file),
    "memory": Backend(fresh_url=_memory_queue, cleanup=_drop_memory_queue),
    "postgresql": Backend(
        fresh_url=_postgres_schema,
        env="EVQ_TEST_POSTGRES_URL",
        cleanup=drop_schema,
        skip_reason=SKIP_REASON,
    ),
    "redis": Backend(
        fresh_url=new_redis_prefix,
        env="EVQ_TEST_REDIS_URL",
        cleanup=lambda server, url: drop_redis_prefix(url),
        skip_reason="set EVQ_TEST_REDIS_URL to run the contract suite on Redis"
        " (e.g. EVQ_TEST_REDIS_URL=redis://127.0.0.1:6379/9, a database of its own)",
    ),
}


@pytest.fixture(params=sorted(BACKENDS))
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Queue]:
    """A fresh, empty queue of each backend in turn, closed after the test."""
    backend = BACKENDS[request.param]
    server = None
    if backend.env is not None:
        server = os.environ.get(backend.env)
        if not server:
            pytest.skip(
                backend.skip_reason
                or f"set {backend.env} to run the contract suite on {request.param}"
            )
    url = backend.fresh_url(tmp_path, server)
    handle = open_queue(url)
    try:
        yield handle
    finally:
        handle.close()
        if backend.cleanup is not None and (server is not None or backend.env is None):
            backend.cleanup(server or "", url)
