"""The SQLite connection: where the file is, its pragmas, one connection per process, and
write transactions retried while another process holds the lock."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from evq.errors import (
    InvalidStorageURL,
    QueueNotFound,
    QueueUnusable,
    StorageError,
    StorageFull,
)
from evq.storage.publishing import Role

SYNC_MODES = ("full", "normal", "off")
_SYNC_PRAGMA = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}
BUSY_TIMEOUT_MS = 30_000
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
# With less free space than this, or once the disk was found full: checkpoint the log every
# this many pages, not every 1000.
_LOW_SPACE_BYTES = 64 * 1024 * 1024
_LOW_SPACE_CHECKPOINT_PAGES = 16
# After the busy timeout a write is tried again until this deadline: a publisher or a worker
# sees "database is locked" only if the file stays locked this long.
_WRITE_DEADLINE_SECONDS = 300.0
# Guards a forked child's switch to a lock of its own; made anew in a child, in case another
# thread of the parent held it at the fork.
_fork_lock = threading.Lock()


def _new_fork_lock() -> None:
    global _fork_lock
    _fork_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_fork_lock)


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Return the file path and the parameters of a `sqlite:///path?sync=normal` URL, or of
    a plain path (which takes no parameters: `?` may be part of a file name)."""
    if url[: len("sqlite:///")].lower() == "sqlite:///":
        import urllib.parse  # only for URLs: a plain path, the default, needs none of it

        parts = urllib.parse.urlsplit(url)
        path = urllib.parse.unquote(url[len("sqlite:///") :].split("?", 1)[0])
        params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(params) - {"sync"}
        if unknown:
            raise InvalidStorageURL(
                f"unknown SQLite URL parameter(s) {', '.join(sorted(unknown))}: evq knows sync"
            )
    elif url[: len("sqlite:")].lower() == "sqlite:":
        raise InvalidStorageURL(f"invalid SQLite URL {url!r}: use sqlite:///path/to/evq.db")
    else:
        path, params = url, {}
    if not path:
        raise InvalidStorageURL("empty storage path")
    return path, params


def sync_mode(params: dict[str, str], role: Role) -> str:
    """Return the `synchronous` mode for `role`: the URL's `sync`, else `EVQ_SYNC`, else full.

    A worker writes with `normal` whatever publishers use (the setting is checked all the
    same): an outcome lost on a power cut only repeats a delivery, and `off` could corrupt the
    file on one.
    """
    text = params.get("sync") or os.environ.get("EVQ_SYNC") or "full"
    mode = text.strip().lower()
    if mode not in SYNC_MODES:
        raise InvalidStorageURL(f"invalid sync mode {text!r}: use one of {', '.join(SYNC_MODES)}")
    if role == "work":
        return "normal"
    return mode


class Connection:
    """One process's connection to a queue file, shared by its threads behind a lock like
    huey's SQLite storage. A forked child opens its own on first use."""

    def __init__(self, path: str, *, sync: str, create: bool, may_read_only: bool = False) -> None:
        self.path = path
        self.sync = sync
        self._create = create
        self._process_lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._check_path(may_read_only)
        #: Opened for reading only: the file (or its directory) cannot be written, and the
        #: caller only reads (`evq status`, `events`, `show`, `dlq list`).
        self.read_only = may_read_only and not self._writable()

    def _writable(self) -> bool:
        directory = os.path.dirname(os.path.abspath(self.path))
        return os.access(directory, os.W_OK | os.X_OK) and (
            not os.path.exists(self.path) or os.access(self.path, os.W_OK)
        )

    def _check_path(self, may_read_only: bool) -> None:
        if self.path == ":memory:":
            raise InvalidStorageURL("an in-memory database cannot be shared with a worker")
        exists = os.path.exists(self.path)
        if exists and os.path.isdir(self.path):
            raise InvalidStorageURL(f"storage path {self.path!r} is a directory")
        if exists and not stat.S_ISREG(os.stat(self.path).st_mode):
            # A device (/dev/null), a FIFO, a socket: SQLite would fail obscurely, or create
            # a journal beside a device.
            raise InvalidStorageURL(f"storage path {self.path!r} is not a regular file")
        if not exists and os.path.islink(self.path):
            raise InvalidStorageURL(
                f"storage path {self.path!r} is a symbolic link to nothing: evq creates a new"
                " queue only as a file of its own, never through a link"
            )
        if not exists and not self._create:
            raise QueueNotFound(
                f"no queue at {self.path!r} (publish an event or start a worker to create it,"
                " or point --url / EVQ_URL at an existing one)"
            )
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise InvalidStorageURL(
                f"cannot create the queue {self.path!r}: directory {directory!r} does not exist"
            )
        if exists and may_read_only:
            if not os.access(self.path, os.R_OK):
                raise InvalidStorageURL(f"cannot read the queue {self.path!r}: permission denied")
        elif not os.access(directory, os.W_OK | os.X_OK) or (
            exists and not os.access(self.path, os.R_OK | os.W_OK)
        ):
            raise InvalidStorageURL(
                f"cannot write the queue {self.path!r}: permission denied"
                + ("" if exists else f" in {directory!r}")
            )

    @property
    def lock(self) -> threading.RLock:
        """This process's lock: a forked child makes its own (a parent's thread may hold the
        inherited one), once, and forgets the parent's connection."""
        if self._pid != os.getpid():
            with _fork_lock:
                if self._pid != os.getpid():
                    self._process_lock = threading.RLock()
                    self._conn = None
                    self._pid = os.getpid()
        return self._process_lock

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection of this process, opened (and the schema created) on first use."""
        # Opened under the lock, which stays the same: threads that race to the first use
        # must not each end up holding a different lock over the one connection.
        with self.lock:
            if self._conn is None:
                self._conn = self._connect()
            return self._conn

    def _create_file(self) -> None:
        """Create a new queue file readable by its owner only (payloads may hold personal
        data; SQLite gives the -wal and -shm files the same mode), never through a link."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            os.close(os.open(self.path, flags, 0o600))
        except FileExistsError:
            if os.path.islink(self.path):  # made a link since `_check_path` looked
                raise InvalidStorageURL(
                    f"storage path {self.path!r} is a symbolic link: evq creates a new queue"
                    " only as a file of its own"
                ) from None
            # Another process created it first: use theirs.
        except OSError as exc:
            raise InvalidStorageURL(
                f"cannot use {self.path!r} as a queue: {exc.strerror}"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        from evq.storage.sqlite.schema import SCHEMA_VERSION, ensure_schema

        if self.read_only:
            return self._connect_read_only()
        if not os.path.exists(self.path):
            self._create_file()
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            # A damaged or forged row may hold text that is not UTF-8; sqlite3 would refuse to
            # return it, and every command that lists it would fail. Show it replaced instead.
            conn.text_factory = _decode_text
            use_wal(conn)
            conn.execute(f"PRAGMA synchronous={_SYNC_PRAGMA[self.sync]}")
            # A burst can grow the write-ahead log far past its usual few MiB; give the space back
            # after the next checkpoint instead of keeping the high-water mark for ever.
            conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            if self.sync != "full" and _free_bytes(self.path) < _LOW_SPACE_BYTES:
                # The log grows to 4 MiB between checkpoints: on a nearly full disk that alone
                # could take the space a worker needs to make progress. (Not for durable
                # publishers: each checkpoint would add a sync to a few publishes.)
                conn.execute(f"PRAGMA wal_autocheckpoint={_LOW_SPACE_CHECKPOINT_PAGES}")
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                retry_locked(lambda: _in_transaction(conn, ensure_schema))
        except sqlite3.DatabaseError as exc:
            if "unable to open" in str(exc):
                raise InvalidStorageURL(f"cannot use {self.path!r} as a queue: {exc}") from exc
            if is_damage(exc):
                raise QueueUnusable(f"cannot use {self.path!r} as a queue: {exc}") from exc
            raise StorageError(f"cannot open the queue {self.path!r}: {exc}") from exc
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        from urllib.parse import quote

        from evq.storage.sqlite.schema import SCHEMA_VERSION, read_older

        uri = "file:" + quote(os.path.abspath(self.path))
        try:
            try:
                conn = sqlite3.connect(
                    f"{uri}?mode=ro",
                    uri=True,
                    check_same_thread=False,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                )
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError as exc:
                wal = self.path + "-wal"
                if is_busy(exc) or (os.path.exists(wal) and os.path.getsize(wal) > 0):
                    # Reading the file as unchanging would miss what its log holds: say so.
                    raise StorageError(
                        f"cannot read the queue {self.path!r} without writing: {exc}"
                    ) from exc
                # Its write-ahead log needs a shared-memory file that a read-only directory
                # cannot hold; with no log left, the file alone is the whole queue, and no
                # other process can change it either.
                conn = sqlite3.connect(
                    f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False
                )
            conn.text_factory = _decode_text
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise QueueUnusable(f"cannot use {self.path!r} as a queue: {exc}") from exc
            raise InvalidStorageURL(f"cannot use {self.path!r} as a queue: {exc}") from exc
        if version == 0:
            raise InvalidStorageURL(f"{self.path!r} holds no evq queue (and cannot be written)")
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the queue {self.path!r} was written by a newer evq (tables version {version});"
                " upgrade evq to read it"
            )
        read_older(conn, version)
        return conn

    def close(self) -> None:
        """Close this process's connection (a later use opens a new one)."""
        with self.lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def error(self, doing: str, exc: sqlite3.DatabaseError) -> StorageError:
        """The error to raise when SQLite failed to `doing` the queue: `QueueUnusable` for a
        damaged file, which no retry mends."""
        kind = QueueUnusable if is_damage(exc) else StorageFull if _is_full(exc) else StorageError
        return kind(f"cannot {doing} the queue {self.path!r}: {exc}")

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, retried while another process holds the lock."""
        with self.lock:
            conn = self.conn
            deadline = time.monotonic() + _WRITE_DEADLINE_SECONDS
            try:
                while True:
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        break
                    except sqlite3.OperationalError as exc:
                        if not is_busy(exc) or time.monotonic() > deadline:
                            raise self.error("write", exc) from exc
                try:
                    yield conn
                except sqlite3.DatabaseError as exc:
                    raise self.error("write", exc) from exc
                try:
                    conn.execute("COMMIT")
                except sqlite3.DatabaseError as exc:
                    raise self.error("commit to", exc) from exc
            except StorageFull:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                # Space is short: from now on keep the write-ahead log small (it would grow to
                # 4 MiB between checkpoints), and give its space back now, so that the next,
                # smaller transactions fit.
                with contextlib.suppress(sqlite3.DatabaseError):
                    conn.execute(f"PRAGMA wal_autocheckpoint={_LOW_SPACE_CHECKPOINT_PAGES}")
                    # Briefly: under this process's lock, a checkpoint waiting for other
                    # connections would hold up lease renewals.
                    conn.execute("PRAGMA busy_timeout=100")
                    try:
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    finally:
                        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                raise
            finally:
                # Whatever interrupted us (an error, or a receiver's timeout raised just as
                # BEGIN returned), never leave the write lock held by an open transaction.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads; a database error becomes a `StorageError`."""
        with self.lock:
            try:
                yield self.conn
            except sqlite3.DatabaseError as exc:
                raise self.error("read", exc) from exc

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one read statement and return its rows."""
        with self.read() as conn:
            return conn.execute(sql, params).fetchall()


def use_wal(conn: sqlite3.Connection) -> None:
    """Put the file of `conn` in write-ahead-log mode, which evq's queue needs (readers never
    wait for a writer). Outside any transaction: applications that keep the queue in their
    own database (Django) call it on each new connection, before evq's would."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))


def retry_locked(operation: Callable[[], object]) -> None:
    """Run `operation`, again and again while another connection holds the file's lock."""
    deadline = time.monotonic() + _WRITE_DEADLINE_SECONDS
    while True:
        try:
            operation()
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _in_transaction(
    conn: sqlite3.Connection, operation: Callable[[sqlite3.Connection], Any]
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        operation(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether `exc` says the file is not a database, or a damaged one: no retry helps."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB))
    message = str(exc)
    return "not a database" in message or "malformed" in message


def _is_full(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_FULL)
    return "disk is full" in str(exc)


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether `exc` says another connection holds the lock."""
    message = str(exc)
    return "locked" in message or "busy" in message


def chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    """Split `items` into runs short enough for one statement's parameters."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _free_bytes(path: str) -> int:
    try:
        stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return _LOW_SPACE_BYTES
    return stats.f_bavail * stats.f_frsize


def _decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def payload_text(raw: bytes) -> str | None:
    """Return stored bytes as text, or None if they are not UTF-8: garbage bytes or a binary
    pickle, never to be decoded any further."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
