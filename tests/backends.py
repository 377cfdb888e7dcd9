"""The backends the tests run on, and how to get a fresh, empty queue of each for one test.

How a backend joins the suites: add it to `BACKENDS`, with a function that returns the URL of
a fresh, empty queue for one test (it gets the test's temporary directory, and the server URL
read from the backend's environment variable, if it has one). A backend that needs a server
runs only when that variable is set, and is skipped otherwise, saying how to enable it; with
the variable set, a server that cannot be reached fails the test, never skips it.

Two suites use it: the storage contract suite (`tests/contract/`, fixture `queue`, every
backend) and the command-line tests that are not about one backend (fixture `queue_url` in
`tests/conftest.py`, the backends whose queue a separate `evq` process can reach).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from postgres_server import SKIP_REASON, drop_schema

from evq.storage import open_queue


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
    #: Whether an `evq` process started by the test reaches the same queue through the URL.
    shared_between_processes: bool = True


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
    # One process's own: the commands, in processes of their own, refuse it.
    "memory": Backend(
        fresh_url=_memory_queue, cleanup=_drop_memory_queue, shared_between_processes=False
    ),
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
        skip_reason="set EVQ_TEST_REDIS_URL to run the tests on Redis"
        " (e.g. EVQ_TEST_REDIS_URL=redis://127.0.0.1:6379/9, a database of its own)",
    ),
}


@contextmanager
def fresh_queue_url(name: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty queue of backend `name` (its tables made, as `evq migrate`
    makes them), removed from its server afterwards; skip if the backend is not enabled."""
    backend = BACKENDS[name]
    server = None
    if backend.env is not None:
        server = os.environ.get(backend.env)
        if not server:
            pytest.skip(backend.skip_reason or f"set {backend.env} to run the tests on {name}")
    url = backend.fresh_url(tmp_path, server)
    try:
        yield url
    finally:
        if backend.cleanup is not None and (server is not None or backend.env is None):
            backend.cleanup(server or "", url)


def ready(url: str) -> None:
    """Make the queue at `url` ready for every command (its tables, on a server)."""
    handle = open_queue(url)
    try:
        handle.check()
    finally:
        handle.close()


def make_retries_due(url: str) -> None:
    """Make every waiting delivery of the queue at `url` due at once, as if its retry time had
    come (tests do not wait out a backoff). Written per backend: it reaches into the storage."""
    if url.startswith(("postgresql:", "postgres:")):
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("UPDATE evq_delivery SET due_at = 0 WHERE state = 'pending'")
    elif url.startswith(("redis:", "rediss:", "unix:")):
        import redis

        from evq.storage.redis.connection import parse_url

        base = parse_url(url).base
        client = redis.Redis.from_url(url.split("?", 1)[0], socket_connect_timeout=5)
        for name in ("due:pending", "due:retrying"):
            for member in client.zrange(base + name, 0, -1):
                delivery = member.decode()
                client.zadd(base + name, {delivery: 0})
                client.hset(f"{base}d:{delivery}", "due_at", "0.000000")
        client.close()
    else:
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
        with conn:
            conn.execute("UPDATE evq_delivery SET due_at = 0 WHERE state = 'pending'")
        conn.close()
