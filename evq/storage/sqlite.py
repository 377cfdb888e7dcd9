"""The SQLite backend: every SQL statement evq runs against a SQLite queue file.

The file holds an event log and one delivery row per (event, receiver):

- `evq_event`: one row per published event. `due_at` is set until a worker has fanned the event
  out to its receivers (that happens in the same transaction that inserts the deliveries, so a
  crash can never lose a receiver).
- `evq_delivery`: `state` is pending, running, done or dead. `due_at` is when a pending
  delivery may run, or when a running delivery's lease expires; it is NULL once the delivery is
  finished. One partial index on `due_at` therefore finds due work, retries, delayed events and
  expired leases alike, whatever the number of finished rows.
- `evq_attempt`: one row per attempt, with its outcome: the delivery's history.
- `evq_worker`, `evq_stat`, `evq_counter`: workers seen, deliveries per second, totals.

Deliveries are never deleted when a worker takes them: a worker takes a *lease*, and the row is
only changed again when its outcome is known. `attempt` doubles as a fencing token: an outcome is
recorded only if the row is still at the attempt the worker leased.

Only the standard library is imported: publishing must start fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from evq.errors import InvalidStorageURL, QueueNotFound, StorageError

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS evq_event (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    published_at REAL NOT NULL,
    due_at REAL,
    dispatched_at REAL,
    key TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS evq_event_due ON evq_event (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS evq_event_published ON evq_event (published_at);
CREATE TABLE IF NOT EXISTS evq_delivery (
    id INTEGER PRIMARY KEY,
    event_seq INTEGER NOT NULL,
    receiver TEXT NOT NULL,
    state TEXT NOT NULL,
    due_at REAL,
    attempt INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    last_error TEXT,
    traceback TEXT,
    replay INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS evq_delivery_due ON evq_delivery (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS evq_delivery_event ON evq_delivery (event_seq);
CREATE INDEX IF NOT EXISTS evq_delivery_dead ON evq_delivery (finished_at)
    WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS evq_attempt (
    delivery_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT,
    started_at REAL,
    finished_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evq_worker (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS evq_stat (
    second INTEGER PRIMARY KEY,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS evq_counter (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_INSERT_EVENT = (
    "INSERT INTO evq_event (id, name, payload, published_at, due_at, key) VALUES (?, ?, ?, ?, ?, ?)"
)
_COUNT_PUBLISHED = (
    "INSERT INTO evq_counter (name, value) VALUES ('published', ?)"
    " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
)
_SYNC_PRAGMA = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}
_BUSY_TIMEOUT_MS = 30_000
# After the busy timeout a write is tried again until this deadline: a publisher or a worker
# sees "database is locked" only if the file stays locked this long.
_WRITE_DEADLINE_SECONDS = 300.0


def sqlite_path(url: str) -> str:
    """Return the file path of a `sqlite:///path` URL or a plain path."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
    elif url.startswith("sqlite://"):
        raise InvalidStorageURL(f"invalid SQLite URL {url!r}: use sqlite:///path/to/evq.db")
    elif "://" in url:
        scheme = url.split("://", 1)[0]
        raise InvalidStorageURL(
            f"unsupported storage URL scheme {scheme!r}: this version of evq stores its queue"
            " in SQLite (a plain path or sqlite:///path)"
        )
    else:
        path = url
    if not path:
        raise InvalidStorageURL("empty storage path")
    return path


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    """An event ready to be stored: validated, with its payload already encoded as JSON."""

    id: str
    name: str
    payload: str
    published_at: float
    due_at: float
    key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """A delivery a worker has taken, with what it needs to call the receiver."""

    delivery_id: int
    attempt: int
    failures: int
    receiver: str
    event_id: str
    name: str
    payload: str | bytes
    published_at: float
    lease_seconds: float
    replay: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one leased attempt; recorded with `SqliteQueue.record()`.

    `kind` is `done`, `retry` (run again at `retry_at`), `dead`, or `release` (the attempt was
    interrupted by a shutdown, or never started: make the delivery available again now).
    """

    lease: Lease
    kind: str
    started_at: float | None
    finished_at: float
    retry_at: float | None = None
    error: str | None = None
    traceback: str | None = None
    counts_as_failure: bool = True


class Router(Protocol):
    """What a worker tells the queue about the receivers it serves."""

    def receivers_for(self, name: str, /) -> Sequence[str]:
        """Return the receivers (`module:qualname`) subscribed to the event `name`."""
        ...

    def policy(self, receiver: str, /) -> tuple[int, float] | None:
        """Return (retries, lease seconds) of `receiver`, or None if it is not registered."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseBatch:
    """The result of one `SqliteQueue.lease()` call."""

    leases: list[Lease]
    next_due: float | None
    dead_lettered: int = 0


class SqliteQueue:
    """One process's handle on a SQLite queue file.

    Thread-safe: threads share one connection behind a lock, like huey's SQLite storage. A
    forked child opens its own connection on first use.
    """

    def __init__(self, url: str, *, sync: str = "full", create: bool = True) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.sync = sync
        self._create = create
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._check_path()

    # Connection

    def _check_path(self) -> None:
        if self.path == ":memory:":
            raise InvalidStorageURL("an in-memory database cannot be shared with a worker")
        exists = os.path.exists(self.path)
        if exists and os.path.isdir(self.path):
            raise InvalidStorageURL(f"storage path {self.path!r} is a directory")
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
        if not os.access(directory, os.W_OK | os.X_OK) or (
            exists and not os.access(self.path, os.R_OK | os.W_OK)
        ):
            raise InvalidStorageURL(
                f"cannot write the queue {self.path!r}: permission denied"
                + ("" if exists else f" in {directory!r}")
            )

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection of this process, opened (and the schema created) on first use."""
        if self._conn is None or self._pid != os.getpid():
            self._lock = threading.RLock()
            self._pid = os.getpid()
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute(f"PRAGMA synchronous={_SYNC_PRAGMA[self.sync]}")
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                self._retry_locked(lambda: self._create_schema(conn))
        except sqlite3.DatabaseError as exc:
            if "unable to open" in str(exc) or "not a database" in str(exc):
                raise InvalidStorageURL(f"cannot use {self.path!r} as a queue: {exc}") from exc
            raise StorageError(f"cannot open the queue {self.path!r}: {exc}") from exc
        return conn

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _retry_locked(operation: Callable[[], object]) -> None:
        deadline = time.monotonic() + _WRITE_DEADLINE_SECONDS
        while True:
            try:
                operation()
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        """Close this process's connection (a later call opens a new one)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, retried while another process holds the lock."""
        with self._lock:
            conn = self.conn
            deadline = time.monotonic() + _WRITE_DEADLINE_SECONDS
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc) or time.monotonic() > deadline:
                        raise StorageError(f"cannot write the queue {self.path!r}: {exc}") from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StorageError(f"cannot commit to the queue {self.path!r}: {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise StorageError(f"cannot read the queue {self.path!r}: {exc}") from exc

    # Publishing

    def publish(self, events: Sequence[NewEvent]) -> list[str]:
        """Store `events` in one durable transaction; return their ids.

        An event whose idempotency key is already stored is not stored again: its position in
        the result holds the id of the event stored first with that key.
        """
        with self._write() as conn:
            return insert_events(conn, events)

    # Leasing and outcomes

    def lease(
        self,
        router: Router,
        *,
        owner: str,
        limit: int,
        outcomes: Sequence[Outcome] = (),
        dispatch_limit: int = 256,
        now: float | None = None,
    ) -> LeaseBatch:
        """Record `outcomes`, fan due events out, and lease up to `limit` due deliveries.

        All in one transaction, so that a crash anywhere loses nothing: an outcome and the next
        lease commit together, and an event is marked dispatched only with its deliveries.
        When nothing is due and there is nothing to record, no write transaction is taken.
        """
        now = time.time() if now is None else now
        if not outcomes:
            next_due = self.next_due()
            if next_due is None or next_due > now:
                return LeaseBatch([], next_due)
        with self._write() as conn:
            if outcomes:
                _record(conn, outcomes, owner)
            _dispatch(conn, router, now, dispatch_limit)
            leases, dead = _lease(conn, router, owner, limit, now)
            next_due = None if leases else _next_due(conn)
        return LeaseBatch(leases, next_due, dead)

    def record(self, outcomes: Sequence[Outcome], *, owner: str) -> None:
        """Record the outcomes of leased attempts (see `Outcome`)."""
        if outcomes:
            with self._write() as conn:
                _record(conn, outcomes, owner)

    def renew(self, leases: Sequence[tuple[Lease, float]]) -> int:
        """Extend running leases to the given expiry times; return how many were still ours."""
        if not leases:
            return 0
        with self._write() as conn:
            cursor = conn.executemany(
                "UPDATE evq_delivery SET due_at = ? WHERE id = ? AND attempt = ?"
                " AND state = 'running'",
                [(until, lease.delivery_id, lease.attempt) for lease, until in leases],
            )
            return cursor.rowcount

    def next_due(self) -> float | None:
        """Return when the earliest delivery or undispatched event is due, if there is one."""
        with self._lock:
            return _next_due(self.conn)

    def running_count(self, owner_prefix: str) -> int:
        """Return the number of unexpired leases held by owners whose id starts with the prefix."""
        rows = self._read(
            "SELECT count(*) FROM evq_delivery WHERE due_at IS NOT NULL AND state = 'running'"
            " AND due_at > ? AND substr(lease_owner, 1, ?) = ?",
            (time.time(), len(owner_prefix), owner_prefix),
        )
        return int(rows[0][0])

    def data_version(self) -> int:
        """Return SQLite's data version of this connection: it changes when another connection
        commits, which makes it a cheap way for an idle worker to notice new events."""
        return int(self._read("PRAGMA data_version")[0][0])

    # Workers

    def worker_seen(self, worker_id: str, *, started_at: float, info: str) -> None:
        """Record that the worker `worker_id` is alive now."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO evq_worker (id, hostname, pid, started_at, seen_at, info)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " seen_at = excluded.seen_at, info = excluded.info",
                (worker_id, socket.gethostname(), os.getpid(), started_at, time.time(), info),
            )

    def worker_stopped(self, worker_id: str) -> None:
        """Forget the worker `worker_id`: it stopped cleanly."""
        with self._write() as conn:
            conn.execute("DELETE FROM evq_worker WHERE id = ?", (worker_id,))

    # Dead letters

    def dead_letters(
        self,
        *,
        ids: Sequence[int] = (),
        receiver: str | None = None,
        older_than: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Return dead deliveries with their event, newest first."""
        where, params = _dead_filter(ids, receiver, older_than)
        sql = f"{_DEAD_SELECT} WHERE {where} ORDER BY d.finished_at DESC, d.id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._read(sql, params)
        return [dict(zip(_DEAD_COLUMNS, row, strict=True)) for row in rows]

    def redrive(self, delivery_ids: Sequence[int]) -> int:
        """Put dead deliveries back in the queue with a fresh attempt count; return how many."""
        now = time.time()
        with self._write() as conn:
            total = 0
            for chunk in _chunks(delivery_ids):
                marks = ",".join("?" * len(chunk))
                total += conn.execute(
                    "UPDATE evq_delivery SET state = 'pending', due_at = ?, attempt = 0,"
                    " failures = 0, lease_owner = NULL, finished_at = NULL"
                    f" WHERE state = 'dead' AND id IN ({marks})",
                    (now, *chunk),
                ).rowcount
            return total

    def purge(self, delivery_ids: Sequence[int]) -> int:
        """Delete dead deliveries and their history; return how many."""
        with self._write() as conn:
            total = 0
            for chunk in _chunks(delivery_ids):
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    f"DELETE FROM evq_attempt WHERE delivery_id IN ({marks}) AND delivery_id IN"
                    f" (SELECT id FROM evq_delivery WHERE state = 'dead')",
                    chunk,
                )
                total += conn.execute(
                    f"DELETE FROM evq_delivery WHERE state = 'dead' AND id IN ({marks})", chunk
                ).rowcount
            return total


# Private

_DEAD_COLUMNS = (
    "id",
    "receiver",
    "attempts",
    "failures",
    "dead_at",
    "error",
    "traceback",
    "created_at",
    "event_id",
    "name",
    "payload",
    "published_at",
)
_DEAD_SELECT = (
    "SELECT d.id, d.receiver, d.attempt, d.failures, d.finished_at, d.last_error, d.traceback,"
    " d.created_at, e.id, e.name, e.payload, e.published_at"
    " FROM evq_delivery d JOIN evq_event e ON e.seq = d.event_seq"
)


def _dead_filter(
    ids: Sequence[int], receiver: str | None, older_than: float | None
) -> tuple[str, list[Any]]:
    clauses = ["d.state = 'dead'"]
    params: list[Any] = []
    if ids:
        clauses.append(f"d.id IN ({','.join('?' * len(ids))})")
        params.extend(ids)
    if receiver is not None:
        clauses.append("d.receiver = ?")
        params.append(receiver)
    if older_than is not None:
        clauses.append("d.finished_at < ?")
        params.append(older_than)
    return " AND ".join(clauses), params


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "locked" in message or "busy" in message


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_events(conn: sqlite3.Connection, events: Sequence[NewEvent]) -> list[str]:
    """Insert `events` through `conn` inside its current transaction; return their ids.

    Used by `SqliteQueue.publish` and by the transactional outbox, where `conn` is the
    application's own connection and evq neither commits nor rolls back.
    """
    if all(event.key is None for event in events):
        conn.executemany(
            _INSERT_EVENT,
            [(e.id, e.name, e.payload, e.published_at, e.due_at, None) for e in events],
        )
        conn.execute(_COUNT_PUBLISHED, (len(events),))
        return [event.id for event in events]
    ids = []
    stored = 0
    for event in events:
        cursor = conn.execute(
            _INSERT_EVENT + " ON CONFLICT (key) DO NOTHING",
            (event.id, event.name, event.payload, event.published_at, event.due_at, event.key),
        )
        if cursor.rowcount == 1:
            ids.append(event.id)
            stored += 1
        else:
            row = conn.execute("SELECT id FROM evq_event WHERE key = ?", (event.key,)).fetchone()
            ids.append(row[0])
    if stored:
        conn.execute(_COUNT_PUBLISHED, (stored,))
    return ids


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create evq's tables through an application's connection if the file has none yet."""
    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _next_due(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        "SELECT min(due_at) FROM ("
        " SELECT min(due_at) AS due_at FROM evq_delivery WHERE due_at IS NOT NULL"
        " UNION ALL SELECT min(due_at) FROM evq_event WHERE due_at IS NOT NULL)"
    ).fetchone()
    return None if row[0] is None else float(row[0])


def _dispatch(conn: sqlite3.Connection, router: Router, now: float, limit: int) -> None:
    events = conn.execute(
        "SELECT seq, name FROM evq_event WHERE due_at IS NOT NULL AND due_at <= ?"
        " ORDER BY due_at, seq LIMIT ?",
        (now, limit),
    ).fetchall()
    if not events:
        return
    conn.executemany(
        "INSERT INTO evq_delivery (event_seq, receiver, state, due_at, created_at)"
        " VALUES (?, ?, 'pending', ?, ?)",
        [
            (seq, receiver, now, now)
            for seq, name in events
            for receiver in router.receivers_for(name)
        ],
    )
    conn.executemany(
        "UPDATE evq_event SET due_at = NULL, dispatched_at = ? WHERE seq = ?",
        [(now, seq) for seq, _ in events],
    )


def _lease(
    conn: sqlite3.Connection, router: Router, owner: str, limit: int, now: float
) -> tuple[list[Lease], int]:
    rows = conn.execute(
        "SELECT d.id, d.receiver, d.state, d.attempt, d.failures, d.lease_owner, d.started_at,"
        " d.replay, e.id, e.name, e.payload, e.published_at"
        " FROM evq_delivery d JOIN evq_event e ON e.seq = d.event_seq"
        " WHERE d.due_at IS NOT NULL AND d.due_at <= ? ORDER BY d.due_at, d.id LIMIT ?",
        (now, limit),
    ).fetchall()
    leases: list[Lease] = []
    taken: list[tuple[int, float, str, float, int]] = []
    dead = 0
    for (
        delivery_id,
        receiver,
        state,
        attempt,
        failures,
        last_owner,
        started_at,
        replay,
        event_id,
        name,
        payload,
        published_at,
    ) in rows:
        policy = router.policy(receiver)
        if state == "running":
            # The lease expired: the worker that held it died or stalled. Count it as a failed
            # attempt, so that a receiver that crashes its worker every time ends up dead.
            failures += 1
            conn.execute(
                "INSERT OR REPLACE INTO evq_attempt VALUES (?, ?, ?, ?, ?, 'lost', ?)",
                (
                    delivery_id,
                    attempt,
                    last_owner,
                    started_at,
                    now,
                    "worker lost: lease expired before the attempt finished",
                ),
            )
        error = None
        if policy is None:
            error = f"receiver {receiver} is not registered with the worker"
        elif failures > policy[0]:
            error = f"worker lost {failures} times while running this delivery"
        if error is not None:
            conn.execute(
                "UPDATE evq_delivery SET state = 'dead', due_at = NULL, failures = ?,"
                " finished_at = ?, last_error = ?, lease_owner = NULL WHERE id = ?",
                (failures, now, error, delivery_id),
            )
            dead += 1
            continue
        assert policy is not None
        lease_seconds = policy[1]
        leases.append(
            Lease(
                delivery_id=delivery_id,
                attempt=attempt + 1,
                failures=failures,
                receiver=receiver,
                event_id=event_id,
                name=name,
                payload=payload,
                published_at=published_at,
                lease_seconds=lease_seconds,
                replay=bool(replay),
            )
        )
        taken.append((failures, now + lease_seconds, owner, now, delivery_id))
    conn.executemany(
        "UPDATE evq_delivery SET state = 'running', attempt = attempt + 1, failures = ?,"
        " due_at = ?, lease_owner = ?, started_at = ? WHERE id = ?",
        taken,
    )
    return leases, dead


def _record(conn: sqlite3.Connection, outcomes: Sequence[Outcome], owner: str) -> None:
    done: list[tuple[Any, ...]] = []
    retry: list[tuple[Any, ...]] = []
    dead: list[tuple[Any, ...]] = []
    release: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    stats: dict[int, list[int]] = {}
    for o in outcomes:
        lease = o.lease
        key = (lease.delivery_id, lease.attempt)
        if o.kind == "done":
            done.append((o.finished_at, *key))
        elif o.kind == "retry":
            retry.append(
                (o.retry_at, int(o.counts_as_failure), o.finished_at, o.error, o.traceback, *key)
            )
        elif o.kind == "dead":
            dead.append((int(o.counts_as_failure), o.finished_at, o.error, o.traceback, *key))
        else:
            # A release of an attempt that never started gives the attempt number back.
            release.append((o.finished_at, int(o.started_at is None), *key))
        if o.started_at is not None:
            history.append(
                (
                    *key,
                    owner,
                    o.started_at,
                    o.finished_at,
                    "interrupted" if o.kind == "release" else o.kind,
                    o.error,
                )
            )
            bucket = stats.setdefault(int(o.finished_at), [0, 0])
            bucket[0 if o.kind == "done" else 1] += 1
    if done:
        conn.executemany(
            "UPDATE evq_delivery SET state = 'done', due_at = NULL, finished_at = ?,"
            " lease_owner = NULL WHERE id = ? AND attempt = ? AND state = 'running'",
            done,
        )
    if retry:
        conn.executemany(
            "UPDATE evq_delivery SET state = 'pending', due_at = ?, failures = failures + ?,"
            " finished_at = ?, last_error = ?, traceback = ?, lease_owner = NULL"
            " WHERE id = ? AND attempt = ? AND state = 'running'",
            retry,
        )
    if dead:
        conn.executemany(
            "UPDATE evq_delivery SET state = 'dead', due_at = NULL, failures = failures + ?,"
            " finished_at = ?, last_error = ?, traceback = ?, lease_owner = NULL"
            " WHERE id = ? AND attempt = ? AND state = 'running'",
            dead,
        )
    if release:
        conn.executemany(
            "UPDATE evq_delivery SET state = 'pending', due_at = ?, attempt = attempt - ?,"
            " lease_owner = NULL WHERE id = ? AND attempt = ? AND state = 'running'",
            release,
        )
    if history:
        conn.executemany("INSERT OR REPLACE INTO evq_attempt VALUES (?, ?, ?, ?, ?, ?, ?)", history)
    if stats:
        conn.executemany(
            "INSERT INTO evq_stat (second, done, failed) VALUES (?, ?, ?) ON CONFLICT (second)"
            " DO UPDATE SET done = done + excluded.done, failed = failed + excluded.failed",
            [(second, counts[0], counts[1]) for second, counts in stats.items()],
        )
