"""What SQLite's errors become: a damaged file (`QueueUnusable`, no retry mends it), a full
disk (`StorageFull`), anything else (`StorageError`), each one line naming the queue."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import evq.publisher
from evq.errors import QueueUnusable, StorageError, StorageFull
from evq.storage.sqlite import SqliteQueue
from evq.storage.sqlite.connection import is_damage

PAGE = 4096


def damaged_table(path: Path) -> sqlite3.Connection:
    """A database whose one table's page is overwritten: reading it is SQLITE_CORRUPT."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [("a" * 100,)] * 100)
    conn.commit()
    conn.close()
    data = bytearray(path.read_bytes())
    data[PAGE : PAGE + 100] = b"\xa5" * 100  # page 2: the table's root
    path.write_bytes(bytes(data))
    return sqlite3.connect(path)


def raised(operation: Callable[[], object]) -> sqlite3.DatabaseError:
    with pytest.raises(sqlite3.DatabaseError) as caught:
        operation()
    return caught.value


def test_a_file_that_is_not_a_database_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "text.db"
    path.write_bytes(b"not a database at all\n" * 100)
    conn = sqlite3.connect(path)

    exc = raised(lambda: conn.execute("SELECT * FROM sqlite_master"))

    assert exc.sqlite_errorcode == sqlite3.SQLITE_NOTADB
    assert is_damage(exc)


def test_a_damaged_page_is_damage(tmp_path: Path) -> None:
    conn = damaged_table(tmp_path / "damaged.db")

    exc = raised(lambda: conn.execute("SELECT * FROM t").fetchall())

    assert exc.sqlite_errorcode == sqlite3.SQLITE_CORRUPT
    assert is_damage(exc)


@pytest.mark.parametrize(
    "statement",
    ["SELECT json('{')", "SELECT * FROM no_such_table"],
    ids=["malformed JSON", "no such table"],
)
def test_other_errors_are_not_damage_even_when_they_say_malformed(statement: str) -> None:
    conn = sqlite3.connect(":memory:")

    exc = raised(lambda: conn.execute(statement))

    assert exc.sqlite_errorcode == sqlite3.SQLITE_ERROR
    assert not is_damage(exc)


def test_an_error_without_a_code_is_damage_only_by_its_message() -> None:
    conn = sqlite3.connect(":memory:")
    conn.close()
    closed = raised(lambda: conn.execute("SELECT 1"))  # raised by sqlite3, not SQLite

    assert not hasattr(closed, "sqlite_errorcode")
    assert not is_damage(closed)
    assert is_damage(sqlite3.DatabaseError("file is not a database"))
    assert is_damage(sqlite3.DatabaseError("database disk image is malformed"))
    assert not is_damage(sqlite3.DatabaseError("disk I/O error"))


def test_a_full_disk_is_storage_full_naming_the_queue(queue_path: Path) -> None:
    queue = SqliteQueue(str(queue_path))
    queue.check()
    pages = queue._db.conn.execute("PRAGMA page_count").fetchone()[0]
    queue._db.conn.execute(f"PRAGMA max_page_count={pages}")  # SQLITE_FULL past this size

    with pytest.raises(StorageFull) as caught:
        queue.publish([evq.publisher.prepare("a.b", payload={"pad": "x" * 20 * PAGE})])

    assert str(caught.value) == (
        f"cannot write the queue {str(queue_path)!r}: database or disk is full"
    )
    queue.close()


def test_a_damaged_file_is_queue_unusable_naming_the_queue(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    damaged_table(path).close()
    queue = SqliteQueue(str(path))

    with pytest.raises(QueueUnusable) as caught:
        queue._db.fetch("SELECT * FROM t")

    assert str(caught.value) == (
        f"cannot read the queue {str(path)!r}: database disk image is malformed"
    )
    queue.close()


def test_another_error_is_a_plain_storage_error_naming_the_queue(queue_path: Path) -> None:
    queue = SqliteQueue(str(queue_path))

    with pytest.raises(StorageError) as caught, queue._db.write() as conn:
        conn.execute("SELECT * FROM no_such_table")

    assert type(caught.value) is StorageError
    assert str(caught.value) == (
        f"cannot write the queue {str(queue_path)!r}: no such table: no_such_table"
    )
    queue.close()
