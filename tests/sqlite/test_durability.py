"""How durably each side writes, read from the connections evq really opens: a publisher's
is WAL with `synchronous=FULL` unless `EVQ_SYNC`, `?sync=` or `evq.configure(url=...)` says
otherwise (as the README's configuration table has it); a worker's is WAL with
`synchronous=NORMAL`, whatever publishers use. A SIGKILL cannot show a missing fsync (the OS
still holds the data), so these settings are checked themselves."""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path

import pytest

import evq
import evq.publisher
from evq.storage.sqlite import SqliteQueue
from evq.worker import WorkerOptions, create_consumer

# What `PRAGMA synchronous` reads back for each mode (SQLite's numbering).
SYNCHRONOUS = {"off": 0, "normal": 1, "full": 2}


def pragmas(conn: sqlite3.Connection) -> tuple[str, int]:
    """The journal mode and `synchronous` level of a live connection."""
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    level = conn.execute("PRAGMA synchronous").fetchone()[0]
    return str(journal), int(level)


def publishers_connection() -> sqlite3.Connection:
    """The connection `evq.publish` wrote through, in this process."""
    queue = evq.publisher.queue()
    assert isinstance(queue, SqliteQueue)
    return queue._db.conn


def workers_pragmas(url: str) -> tuple[str, int]:
    """The pragmas of a real worker's connection to `url`, after it looked for work once."""
    importlib.import_module("tests.apps.recorder")
    storage = create_consumer(WorkerOptions(url=url)).huey.storage
    try:
        storage.queue.lease(storage.receivers.routing, owner=storage.owner, limit=1)
        queue = storage.queue
        assert isinstance(queue, SqliteQueue)
        return pragmas(queue._db.conn)
    finally:
        storage.close()


def test_a_publishers_connection_is_wal_with_synchronous_full_by_default(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVQ_SYNC", raising=False)
    evq.publish("order.created", payload={})
    evq.publish_many([{"name": "order.paid", "payload": {}}])

    assert pragmas(publishers_connection()) == ("wal", SYNCHRONOUS["full"])
    # WAL is the file's own mode, kept for every later connection.
    with sqlite3.connect(queue_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("env_sync", "expected"),
    [("full", "full"), ("normal", "normal"), ("off", "off"), ("NORMAL", "normal"), ("", "full")],
)
def test_evq_sync_sets_a_publishers_connection(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch, env_sync: str, expected: str
) -> None:
    monkeypatch.setenv("EVQ_SYNC", env_sync)
    evq.publish("order.created", payload={})

    assert pragmas(publishers_connection()) == ("wal", SYNCHRONOUS[expected])


@pytest.mark.parametrize("url_sync", ["full", "normal", "off"])
@pytest.mark.parametrize("env_sync", [None, "full", "off"])
def test_the_urls_sync_given_to_configure_sets_a_publishers_connection_over_evq_sync(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch, url_sync: str, env_sync: str | None
) -> None:
    monkeypatch.delenv("EVQ_SYNC", raising=False)
    if env_sync is not None:
        monkeypatch.setenv("EVQ_SYNC", env_sync)
    evq.configure(url=f"sqlite:///{queue_path}?sync={url_sync}")
    evq.publish("order.created", payload={})

    assert pragmas(publishers_connection()) == ("wal", SYNCHRONOUS[url_sync])


@pytest.mark.parametrize(
    ("url_sync", "env_sync"),
    [(None, None), (None, "full"), (None, "off"), ("full", None), ("off", None), ("off", "full")],
)
def test_a_workers_connection_is_wal_with_synchronous_normal_whatever_publishers_use(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch, url_sync: str | None, env_sync: str | None
) -> None:
    monkeypatch.delenv("EVQ_SYNC", raising=False)
    if env_sync is not None:
        monkeypatch.setenv("EVQ_SYNC", env_sync)
    url = f"sqlite:///{queue_path}" + ("" if url_sync is None else f"?sync={url_sync}")
    evq.configure(url=url)
    evq.publish("order.created", payload={})
    publishing = pragmas(publishers_connection())

    working = workers_pragmas(url)

    assert working == ("wal", SYNCHRONOUS["normal"])
    assert publishing == ("wal", SYNCHRONOUS[url_sync or env_sync or "full"])
