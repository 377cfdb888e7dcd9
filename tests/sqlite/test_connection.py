"""The SQLite file and its connection: URL parameters, durability, the write lock."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import run_evq
from contract.steps import routing_for, take
from workers import rows

import evq
import evq.publisher
from evq.errors import InvalidStorageURL
from evq.storage import open_queue
from evq.storage.sqlite import SqliteQueue, connection

# What `PRAGMA synchronous` reads back for each sync mode.
SYNCHRONOUS = {"off": 0, "normal": 1, "full": 2}


def synchronous(queue: SqliteQueue) -> int:
    return int(queue._db.conn.execute("PRAGMA synchronous").fetchone()[0])


@pytest.mark.parametrize(
    ("url_sync", "env_sync", "role", "expected"),
    [
        (None, None, "publish", "full"),
        ("normal", None, "publish", "normal"),
        ("off", None, "publish", "off"),
        ("NORMAL", None, "publish", "normal"),
        (None, "off", "publish", "off"),
        ("full", "off", "publish", "full"),  # the URL wins over EVQ_SYNC
        (None, None, "work", "normal"),  # a lost outcome only repeats a delivery
        ("off", None, "work", "normal"),  # the setting is the publishers'
        ("full", None, "work", "normal"),
        (None, None, "inspect", "full"),
    ],
)
def test_sync_comes_from_the_url_then_evq_sync_then_is_full(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url_sync: str | None,
    env_sync: str | None,
    role: str,
    expected: str,
) -> None:
    monkeypatch.delenv("EVQ_SYNC", raising=False)
    if env_sync is not None:
        monkeypatch.setenv("EVQ_SYNC", env_sync)
    path = tmp_path / "evq.db"
    open_queue(str(path)).publish([])  # an existing queue: inspection only reads one
    url = f"sqlite:///{path}" + ("" if url_sync is None else f"?sync={url_sync}")

    queue = open_queue(url, role=role)  # type: ignore[arg-type]

    assert isinstance(queue, SqliteQueue)
    assert queue.sync == expected
    assert synchronous(queue) == SYNCHRONOUS[expected]
    queue.close()


def test_the_sync_of_evq_publish_comes_from_the_configured_url(queue_path: Path) -> None:
    evq.configure(url=f"sqlite:///{queue_path}?sync=normal")
    evq.publish("a.b", payload={})

    queue = evq.publisher.queue()
    assert isinstance(queue, SqliteQueue)
    assert synchronous(queue) == SYNCHRONOUS["normal"]
    assert rows(queue_path, "SELECT count(*) FROM evq_event") == [(1,)]


@pytest.mark.parametrize(
    ("query", "env", "message"),
    [
        ("?sync=bogus", {}, "Error: invalid sync mode 'bogus': use one of full, normal, off"),
        ("", {"EVQ_SYNC": "bogus"}, "Error: invalid sync mode 'bogus'"),
        ("?unknown=1", {}, "Error: unknown SQLite URL parameter(s) unknown"),
        ("?sync=full&unknown=1", {}, "Error: unknown SQLite URL parameter(s) unknown"),
    ],
)
def test_a_bad_url_parameter_is_one_line_and_exit_2_and_creates_nothing(
    tmp_path: Path, query: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "evq.db"

    result = run_evq("publish", "a.b", "--url", f"sqlite:///{path}{query}", **env)

    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_bad_url_parameter_raises_invalid_storage_url(tmp_path: Path) -> None:
    with pytest.raises(InvalidStorageURL, match="unknown SQLite URL parameter"):
        open_queue(f"sqlite:///{tmp_path / 'evq.db'}?unknown=1")
    with pytest.raises(InvalidStorageURL, match="invalid sync mode"):
        open_queue(f"sqlite:///{tmp_path / 'evq.db'}?sync=bogus")
    assert list(tmp_path.iterdir()) == []


def test_location_is_the_absolute_path_and_source_a_uri_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my queues").mkdir()
    monkeypatch.chdir(tmp_path)

    queue = open_queue("my queues/evq.db")

    assert queue.location == str(tmp_path / "my queues" / "evq.db")
    assert queue.source == f"evq://{tmp_path}/my%20queues/evq.db"
    assert open_queue(f"sqlite:///{tmp_path}/my%20queues/evq.db").location == queue.location


def test_a_failed_write_never_leaves_the_write_lock_held(queue_path: Path) -> None:
    queue = SqliteQueue(str(queue_path))
    # As a receiver's timeout, raised at any instruction.
    with pytest.raises(KeyboardInterrupt), queue._db.write() as conn:
        conn.execute("DELETE FROM evq_event")
        raise KeyboardInterrupt
    assert not queue._db.conn.in_transaction
    other = SqliteQueue(str(queue_path))
    with other._db.write() as conn:  # would wait, then fail, if the lock were still held
        conn.execute("SELECT 1")


def test_a_timeout_raised_while_waiting_for_the_process_lock_leaves_it_free(
    tmp_path: Path,
) -> None:
    # A receiver with a timeout that publishes: the watchdog raises DeliveryTimeout in its
    # thread (asynchronously) just as another thread hands it the queue's process lock. The
    # lock must not stay held, or every other publish of the process would wait for ever.
    import threading

    from evq.delivery import DeliveryTimeout, _set_async_exc

    queue = SqliteQueue(str(tmp_path / "q.db"))
    queue.check()
    db = queue._db
    outcome: list[str] = []

    def receiver() -> None:
        try:
            with db.write() as conn:
                conn.execute("SELECT 1")
            outcome.append("wrote")
        except DeliveryTimeout:
            outcome.append("timed out")

    for _ in range(3):
        outcome.clear()
        db.lock.acquire()  # another thread is writing
        thread = threading.Thread(target=receiver)
        thread.start()
        time.sleep(0.1)  # the receiver waits for the lock
        assert thread.ident is not None
        _set_async_exc(thread.ident, DeliveryTimeout)  # what the watchdog does
        db.lock.release()
        time.sleep(0.1)

        def take_the_lock() -> None:
            taken = db.lock.acquire(timeout=1)
            outcome.append(f"free: {taken}")
            if taken:
                db.lock.release()

        other = threading.Thread(target=take_the_lock)
        other.start()
        other.join()
        thread.join()
        assert outcome == ["timed out", "free: True"], outcome
    queue.close()


def test_nothing_due_takes_no_write_transaction(queue_path: Path) -> None:
    queue = SqliteQueue(str(queue_path))
    evq.publish("a.b", payload={}, delay=3600)
    # The first call fans the event out at once, to a delivery due in an hour.
    assert take(queue, now=time.time(), routing=routing_for(lease_seconds=60)) == []
    assert rows(
        queue_path, "SELECT state, due_at > ? FROM evq_delivery", (time.time() + 3500,)
    ) == [("pending", 1)]
    before = queue._db.conn.total_changes

    batch = queue.lease(routing_for(lease_seconds=60), owner="w", limit=10)

    assert batch.leases == []
    assert batch.next_due is not None and batch.next_due > time.time() + 3500
    assert queue._db.conn.total_changes == before


def test_inspecting_a_queue_that_may_be_created_opens_a_new_one(tmp_path: Path) -> None:
    queue = open_queue(str(tmp_path / "new.db"), role="inspect", create=True)

    assert queue.status().published == 0


def test_a_damaged_file_is_refused_by_check_naming_what_sqlite_found(queue_path: Path) -> None:
    """`check` (a worker's start) reads every page: damage past the first page, which
    opening the file does not read, is refused with SQLite's own findings and what to do."""
    import sqlite3

    from evq.errors import QueueUnusable

    queue = open_queue(str(queue_path))
    for _ in range(40):
        queue.publish([evq.publisher.prepare("order.paid", payload={"pad": "x" * 2000})])
    queue.close()
    page = 4096
    data = bytearray(queue_path.read_bytes())
    assert len(data) > 20 * page  # WAL checkpointed into the file when the last handle closed
    for number in (8, 12, 16):  # leaf pages of the events' table, past the schema's
        data[number * page + 8 : number * page + 200] = b"\xa5" * 192
    queue_path.write_bytes(bytes(data))
    with sqlite3.connect(queue_path) as conn:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
    conn.close()
    assert len(problems) >= 2 and problems != ["ok"]

    damaged = open_queue(str(queue_path), role="work")
    try:
        with pytest.raises(QueueUnusable) as caught:
            damaged.check()
    finally:
        damaged.close()
    assert str(caught.value) == (
        f"the queue {str(queue_path)!r} is damaged ({'; '.join(problems)}): restore it from"
        " a backup, or recover what is left with sqlite3's .recover"
    )


def test_a_path_longer_than_sqlite_takes_is_an_invalid_url_naming_it(tmp_path: Path) -> None:
    # SQLite opens no path longer than 512 bytes, which the file system allows.
    directory = tmp_path.joinpath(*["d" * 100] * 6)
    directory.mkdir(parents=True)
    path = str(directory / "evq.db")

    with pytest.raises(InvalidStorageURL) as caught:
        open_queue(path).status()

    assert str(caught.value) == f"cannot use {path!r} as a queue: unable to open database file"


def hold_the_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's connection, in the midst of a write transaction on `path`."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_new_queue_waits_for_another_connection_that_holds_its_file_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Turning the new file to WAL needs its lock; refused once the busy timeout (shortened
    # here) is over, evq tries again until the other connection lets go.
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "evq.db"
    path.touch(mode=0o600)
    holder = hold_the_write_lock(path)
    release = threading.Timer(1.0, holder.execute, ("COMMIT",))
    release.start()
    try:
        queue = open_queue(str(path))
        assert queue.status().published == 0
        queue.close()
    finally:
        release.join()
        holder.close()
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]


def test_opening_a_queue_whose_tables_are_current_never_waits_for_the_write_lock(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = open_queue(str(queue_path))
    created.check()
    created.close()
    # Were opening to wait for the lock, it would give up at once.
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_MS", 50)
    monkeypatch.setattr(connection, "_WRITE_DEADLINE_SECONDS", 0.2)
    holder = hold_the_write_lock(queue_path)
    try:
        queue = open_queue(str(queue_path))
        assert queue.status().published == 0
        queue.close()
    finally:
        holder.close()


def test_a_connection_waits_out_another_writer_for_the_busy_timeout(queue_path: Path) -> None:
    # SQLite's own wait for the lock, before evq's retries (and in each of them).
    queue = SqliteQueue(str(queue_path))
    try:
        assert queue._db.conn.execute("PRAGMA busy_timeout").fetchone() == (30_000,)
    finally:
        queue.close()


def test_a_new_queue_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "evq.db"
    queue = open_queue(str(path))
    try:
        assert queue.status().published == 0
    finally:
        queue.close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_file_that_is_not_a_database_is_unusable_naming_what_sqlite_found(
    queue_path: Path,
) -> None:
    from evq.errors import QueueUnusable

    queue_path.write_bytes(b"not a database at all\n" * 100)

    with pytest.raises(QueueUnusable) as caught:
        open_queue(str(queue_path)).status()

    assert str(caught.value) == f"cannot use {str(queue_path)!r} as a queue: file is not a database"
