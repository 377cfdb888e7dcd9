"""The SQLite backend: every SQL statement evq runs against a SQLite queue file.

The file holds an event log and one delivery row per (event, receiver):

- `evq_event`: one row per published event. `due_at` is set until a worker has fanned the event
  out to its receivers (that happens in the same transaction that inserts the deliveries, so a
  crash can never lose a receiver). Workers find the events to fan out from a cursor, the
  highest `seq` fanned out so far (`dispatch_cursor` in `evq_counter`): `seq` is given at insert
  time under SQLite's write lock, so it grows in commit order and an event committed later can
  never land behind the cursor. An event with a delay is fanned out at once, to deliveries due
  when the delay ends.
- `evq_delivery`: `state` is pending, running, done or dead. `due_at` is when a pending
  delivery may run, or when a running delivery's lease expires; it is NULL once the delivery is
  finished. One partial index on `due_at` therefore finds due work, retries, delayed events and
  expired leases alike, whatever the number of finished rows.
- `evq_attempt`: one row per attempt, with its outcome: the delivery's history.
- `evq_worker`, `evq_stat`, `evq_counter`: workers seen, deliveries per second, totals.

A publish writes as few pages as it can, since it waits for the disk: the event row and the id
index; the idempotency key index holds only events with a key.
Time ranges are id ranges: an id begins with the millisecond it was published in
(`evq.ids.event_id_floor`), so no index on `published_at` is kept.

Deliveries are never deleted when a worker takes them: a worker takes a *lease*, and the row is
only changed again when its outcome is known. `attempt` doubles as a fencing token: an outcome is
recorded only if the row is still at the attempt the worker leased.

Only the standard library is imported: publishing must start fast.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from evq.errors import InvalidInput, InvalidStorageURL, QueueNotFound, StorageError
from evq.ids import event_id_floor

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS evq_event (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    published_at REAL NOT NULL,
    due_at REAL,
    dispatched_at REAL,
    key TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS evq_event_key ON evq_event (key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS evq_delivery (
    id INTEGER PRIMARY KEY,
    event_seq INTEGER NOT NULL,
    receiver TEXT NOT NULL,
    state TEXT NOT NULL,
    due_at REAL,
    attempt INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    attempt_base INTEGER NOT NULL DEFAULT 0,
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
# Its body holds semicolons: run as a statement of its own, after SCHEMA's.
_CURSOR_TRIGGER = """
-- SQLite numbers a new row from the highest seq left. When the newest events are deleted
-- (pruned, by this evq or an older one, or by hand), the next one could land at or below the
-- dispatch cursor and never be fanned out: bring the cursor down to what is left. Only events
-- already fanned out are ever deleted, so none is fanned out twice.
CREATE TRIGGER IF NOT EXISTS evq_event_newest_deleted AFTER DELETE ON evq_event
WHEN old.seq > (SELECT coalesce(max(seq), 0) FROM evq_event)
BEGIN
    UPDATE evq_counter SET value = (SELECT coalesce(max(seq), 0) FROM evq_event)
    WHERE name = 'dispatch_cursor' AND value > (SELECT coalesce(max(seq), 0) FROM evq_event);
END
"""

_INSERT_EVENT = (
    "INSERT INTO evq_event (id, name, payload, published_at, due_at, key) VALUES (?, ?, ?, ?, ?, ?)"
)
# Events are counted when a worker dispatches them, once per batch, not when they are
# published: a publish then writes only its row and its indexes (see `SqliteQueue.status`).
_COUNT_DISPATCHED = (
    "INSERT INTO evq_counter (name, value) VALUES ('dispatched', ?)"
    " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
)
# The highest seq fanned out: events after it wait for a worker (see the module docstring).
_CURSOR = "coalesce((SELECT value FROM evq_counter WHERE name = 'dispatch_cursor'), 0)"
_SET_CURSOR = (
    "INSERT INTO evq_counter (name, value) VALUES ('dispatch_cursor', ?)"
    " ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)"
)
_SYNC_PRAGMA = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}
_BUSY_TIMEOUT_MS = 30_000
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
# A delivery whose worker was lost this many times (killed, OOM, lease expired) is dead.
MAX_LOST_ATTEMPTS = 25
# The receiver of the dead letter kept for an event that cannot be dispatched at all.
UNDELIVERABLE = "evq:undeliverable"
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


class NewEvent(NamedTuple):
    """An event ready to be stored: validated, with its payload already encoded as JSON."""

    id: str
    name: str
    payload: str
    published_at: float
    due_at: float
    key: str | None = None


class Lease(NamedTuple):
    """A delivery a worker has taken, with what it needs to call the receiver."""

    delivery_id: int
    attempt: int
    attempt_base: int
    failures: int
    receiver: str
    event_id: str
    name: str
    payload: str
    published_at: float
    lease_seconds: float
    replay: bool


class Outcome(NamedTuple):
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


class LeaseBatch(NamedTuple):
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
        self._process_lock = threading.RLock()
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
    def _lock(self) -> threading.RLock:
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
        with self._lock:
            if self._conn is None:
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
            # A damaged or forged row may hold text that is not UTF-8; sqlite3 would refuse to
            # return it, and every command that lists it would fail. Show it replaced instead.
            conn.text_factory = _decode_text
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute(f"PRAGMA synchronous={_SYNC_PRAGMA[self.sync]}")
            # A burst can grow the write-ahead log far past its usual few MiB; give the space back
            # after the next checkpoint instead of keeping the high-water mark for ever.
            conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
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
            ensure_schema(conn)
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
            try:
                while True:
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        break
                    except sqlite3.OperationalError as exc:
                        if not _is_busy(exc) or time.monotonic() > deadline:
                            raise StorageError(
                                f"cannot write the queue {self.path!r}: {exc}"
                            ) from exc
                try:
                    yield conn
                except sqlite3.DatabaseError as exc:
                    raise StorageError(f"cannot write the queue {self.path!r}: {exc}") from exc
                try:
                    conn.execute("COMMIT")
                except sqlite3.DatabaseError as exc:
                    raise StorageError(f"cannot commit to the queue {self.path!r}: {exc}") from exc
            finally:
                # Whatever interrupted us (an error, or a receiver's timeout raised just as
                # BEGIN returned), never leave the write lock held by an open transaction.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

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
        """Record `outcomes`, fan new events out, and lease up to `limit` due deliveries.

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
        """Return when the earliest delivery is due, if there is one; an event not fanned
        out yet counts as due since it was published."""
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
                (worker_id, _hostname(), os.getpid(), started_at, time.time(), info),
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
                    # `attempt` keeps counting: it fences off stale workers and keys the
                    # history; the receiver's count restarts from `attempt_base`.
                    "UPDATE evq_delivery SET state = 'pending', due_at = ?,"
                    " attempt_base = attempt, failures = 0, lease_owner = NULL, finished_at = NULL"
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

    # Inspection

    def status(self, *, now: float | None = None) -> QueueStatus:
        """Return what the queue holds and does now, read from indexes and counters only.

        `published` counts every event ever stored, pruned ones included: the `dispatched`
        counter plus the events not dispatched yet.

        The cost grows with the backlog (unfinished deliveries) and the dead letters, never
        with the number of finished events kept in the log.
        """
        now = time.time() if now is None else now
        backlog = dict.fromkeys(("pending", "scheduled", "retrying", "running"), 0)
        with self._lock, _reading(self.path):
            conn = self.conn
            # Published: the events dispatched so far (counted by the workers, and kept when
            # events are pruned) plus those not dispatched yet. One statement, so one snapshot:
            # a dispatch in between cannot count an event twice or not at all.
            published, due, delayed = conn.execute(
                "SELECT coalesce((SELECT value FROM evq_counter WHERE name = 'dispatched'), 0)"
                " + count(*), count(*), coalesce(sum(due_at > ?), 0)"
                f" FROM evq_event WHERE seq > {_CURSOR} AND due_at IS NOT NULL",
                (now,),
            ).fetchone()
            for state, count in conn.execute(
                f"SELECT {_STATE_SQL} AS s, count(*) FROM evq_delivery"
                " WHERE due_at IS NOT NULL GROUP BY s",
                (now,),
            ):
                backlog[state] += count
            dead = conn.execute("SELECT count(*) FROM evq_delivery WHERE state = 'dead'")
            dead_count = int(dead.fetchone()[0])
            done, failed = conn.execute(
                "SELECT coalesce(sum(done), 0), coalesce(sum(failed), 0) FROM evq_stat"
                " WHERE second >= ? AND second < ?",
                (int(now) - RATE_WINDOW_SECONDS, int(now)),
            ).fetchone()
            workers = conn.execute(
                f"SELECT {', '.join(_WORKER_KEYS)} FROM evq_worker WHERE seen_at >= ?"
                " ORDER BY started_at, id",
                (now - WORKER_SEEN_WITHIN_SECONDS,),
            ).fetchall()
            oldest_due = _next_due(conn)
        return QueueStatus(
            time=now,
            published=int(published),
            awaiting_dispatch=int(due),
            delayed=int(delayed),
            pending=backlog["pending"],
            scheduled=backlog["scheduled"],
            retrying=backlog["retrying"],
            running=backlog["running"],
            dead=dead_count,
            oldest_due_at=oldest_due if oldest_due is not None and oldest_due <= now else None,
            delivered_last_minute=int(done),
            failed_last_minute=int(failed),
            workers=[dict(zip(_WORKER_KEYS, row, strict=True)) for row in workers],
        )

    def events(
        self,
        selection: EventSelection | None = None,
        *,
        status: str | None = None,
        limit: int | None = 50,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Return the selected events, newest first, each with its delivery counts by state.

        `status` keeps the events that have at least one delivery in that state (one of
        `DELIVERY_STATES`); an event not dispatched yet counts as `pending`, or as `scheduled`
        while its delay runs.
        """
        now = time.time() if now is None else now
        where, params = _event_filter(selection or EventSelection())
        if status is not None:
            clause, more = _event_status_filter(status, now)
            where += f" AND {clause}"
            params.extend(more)
        sql = (
            # Ids sort by publish time: newest first through the id index, which also bounds
            # --since/--until (see `_event_filter`).
            f"SELECT {_EVENT_SELECT} FROM evq_event e WHERE {where} ORDER BY e.id DESC"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock, _reading(self.path):
            conn = self.conn
            _register_functions(conn)
            events = [dict(zip(_EVENT_KEYS, row, strict=True)) for row in conn.execute(sql, params)]
            counts = _delivery_counts(conn, [event["seq"] for event in events], now)
        for event in events:
            event["deliveries"] = counts.get(event["seq"], _zero_counts())
            event["status"] = _event_status(event, now)
        return events

    def event(self, event_id: str, *, now: float | None = None) -> dict[str, Any] | None:
        """Return one event with every delivery and its attempts, or None if it is not stored."""
        now = time.time() if now is None else now
        with self._lock, _reading(self.path):
            conn = self.conn
            row = conn.execute(
                f"SELECT {_EVENT_SELECT} FROM evq_event e WHERE e.id = ?", (event_id,)
            ).fetchone()
            if row is None:
                return None
            event = dict(zip(_EVENT_KEYS, row, strict=True))
            deliveries = [
                dict(zip(_DELIVERY_KEYS, d, strict=True))
                for d in conn.execute(
                    f"SELECT {', '.join(_DELIVERY_KEYS)} FROM evq_delivery"
                    " WHERE event_seq = ? ORDER BY id",
                    (event["seq"],),
                )
            ]
            history: dict[int, list[dict[str, Any]]] = {}
            for attempt in conn.execute(
                f"SELECT {', '.join(_ATTEMPT_KEYS)} FROM evq_attempt WHERE delivery_id IN"
                " (SELECT id FROM evq_delivery WHERE event_seq = ?) ORDER BY delivery_id, attempt",
                (event["seq"],),
            ):
                record = dict(zip(_ATTEMPT_KEYS, attempt, strict=True))
                history.setdefault(record.pop("delivery_id"), []).append(record)
        counts = _zero_counts()
        for delivery in deliveries:
            delivery["state"] = _user_state(
                delivery["state"], delivery["failures"], delivery["due_at"], now
            )
            delivery["replay"] = bool(delivery["replay"])
            delivery["history"] = history.get(delivery["id"], [])
            counts[delivery["state"]] += 1
        event["deliveries"] = counts
        event["status"] = _event_status(event, now)
        event["delivery_list"] = deliveries
        return event

    def replay(
        self,
        selection: EventSelection,
        *,
        receiver: str | None = None,
        now: float | None = None,
        batch_size: int = 1000,
    ) -> int:
        """Deliver the selected events again, as new deliveries marked as replays, due now.

        With `receiver`, one delivery to it per event, whether it had one or not (a backfill);
        else one per receiver that already had a delivery of the event. Events not dispatched
        yet are skipped: they are delivered anyway. Returns how many deliveries were created.
        Events are taken `batch_size` at a time, each batch a short transaction of its own, so
        that a replay of millions of events never holds up workers (nor their lease renewals).
        """
        now = time.time() if now is None else now
        where, params = _event_filter(selection)
        where += " AND e.due_at IS NULL"
        total = 0
        after: str | None = None
        while True:
            with self._write() as conn:
                _register_functions(conn)
                batch_where, batch_params = where, list(params)
                if after is not None:
                    batch_where += " AND e.id > ?"
                    batch_params.append(after)
                rows = conn.execute(
                    f"SELECT e.seq, e.id FROM evq_event e WHERE {batch_where}"
                    " ORDER BY e.id LIMIT ?",
                    (*batch_params, batch_size),
                ).fetchall()
                total += _insert_replays(conn, [seq for seq, _ in rows], receiver, now)
            if len(rows) < batch_size:
                return total
            after = rows[-1][1]

    def replay_count(self, selection: EventSelection, *, receiver: str | None = None) -> int:
        """Return how many deliveries `replay()` would create now (a dry run)."""
        select, params = _replay_select(selection, receiver, time.time())
        with self._lock, _reading(self.path):
            _register_functions(self.conn)
            return int(self.conn.execute(f"SELECT count(*) FROM ({select})", params).fetchone()[0])

    def prune(
        self,
        older_than: float,
        *,
        batch_size: int = 1000,
        max_batches: int | None = None,
        now: float | None = None,
    ) -> int:
        """Delete the finished events published before `older_than`; return how many.

        An event is finished once it was dispatched and every delivery of it is done: an event
        with a pending, scheduled, running, retrying or dead delivery is kept. Its deliveries,
        their attempts and its idempotency key go with it. Each batch of `batch_size` events is
        a short transaction of its own, so that workers are not held up; `max_batches` bounds
        one call. Delivery statistics and heartbeats of workers gone for a day go too.
        """
        total, after = self.prune_step(older_than, batch_size=batch_size, max_batches=max_batches)
        while after is not None and max_batches is None:
            pruned, after = self.prune_step(older_than, after=after, batch_size=batch_size)
            total += pruned
        self.forget_old_statistics(now=now)
        return total

    def prune_step(
        self,
        older_than: float,
        *,
        after: str | None = None,
        batch_size: int = 1000,
        max_batches: int | None = None,
    ) -> tuple[int, str | None]:
        """Prune like `prune`, walking the event log from the event id `after` for at most
        `max_batches` batches; return how many events went, and the id to go on from next
        time (None once the walk reached the cutoff). A worker prunes step by step, so that
        events it must keep at the head of the log (dead letters) never stall it."""
        total = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            with self._write() as conn:
                pruned, after = _prune_batch(conn, older_than, after, batch_size)
            total += pruned
            batches += 1
            if after is None:
                break
        return total, after

    def forget_old_statistics(self, *, now: float | None = None) -> None:
        """Delete delivery statistics and heartbeats of workers older than a day."""
        now = time.time() if now is None else now
        with self._write() as conn:
            conn.execute("DELETE FROM evq_stat WHERE second < ?", (int(now - FORGET_SECONDS),))
            conn.execute("DELETE FROM evq_worker WHERE seen_at < ?", (now - FORGET_SECONDS,))

    def prunable_count(self, older_than: float) -> int:
        """Return how many events `prune(older_than)` would delete now (a dry run)."""
        where, params = _older_than(older_than)
        rows = self._read(
            f"SELECT count(*) FROM evq_event e WHERE {where} AND {_FINISHED_SQL}", params
        )
        return int(rows[0][0])


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


_ID_OF = operator.itemgetter(NewEvent._fields.index("id"))
_KEY_OF = operator.itemgetter(NewEvent._fields.index("key"))


def insert_events(conn: sqlite3.Connection, events: Sequence[NewEvent]) -> list[str]:
    """Insert `events` through `conn` inside its current transaction; return their ids.

    Used by `SqliteQueue.publish` and by the transactional outbox, where `conn` is the
    application's own connection and evq neither commits nor rolls back.
    """
    if not any(map(_KEY_OF, events)):  # No key: nothing can be a duplicate.
        # A NewEvent holds the statement's parameters in their order; sqlite3 binds a plain
        # tuple faster than a tuple subclass, even counting the copy.
        conn.executemany(_INSERT_EVENT, map(tuple, events))
        return list(map(_ID_OF, events))
    ids = []
    for event in events:
        cursor = conn.execute(
            # The conflict target names the partial index on keys (NULL keys are not in it).
            _INSERT_EVENT + " ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING",
            (event.id, event.name, event.payload, event.published_at, event.due_at, event.key),
        )
        if cursor.rowcount == 1:
            ids.append(event.id)
        else:
            row = conn.execute("SELECT id FROM evq_event WHERE key = ?", (event.key,)).fetchone()
            ids.append(row[0])
    return ids


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create evq's tables, or bring those of an older evq up to date, inside the current
    transaction of `conn` (evq's own, or an application's)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= SCHEMA_VERSION:
        return
    if version == 0:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(_CURSOR_TRIGGER)
    if version == 1:
        # 1 -> 2: events to fan out are found from a cursor over seq, no longer from an index
        # on due_at. The cursor starts before the first event not fanned out yet; events after
        # it that were fanned out already (due_at NULL) are skipped by `_dispatch`.
        conn.execute("DROP INDEX IF EXISTS evq_event_due")
        conn.execute(_CURSOR_TRIGGER)
        conn.execute(
            _SET_CURSOR,
            (
                conn.execute(
                    "SELECT coalesce((SELECT min(seq) - 1 FROM evq_event WHERE due_at IS NOT NULL),"
                    " (SELECT max(seq) FROM evq_event), 0)"
                ).fetchone()[0],
            ),
        )
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _next_due(conn: sqlite3.Connection) -> float | None:
    # An event not fanned out yet is due for that at once (since it was published), whatever
    # its delay: its deliveries carry the delay.
    row = conn.execute(
        "SELECT min(due_at) FROM ("
        " SELECT min(due_at) AS due_at FROM evq_delivery WHERE due_at IS NOT NULL"
        " UNION ALL SELECT min(published_at) FROM evq_event"
        f" WHERE seq > {_CURSOR} AND due_at IS NOT NULL)"
    ).fetchone()
    return None if row[0] is None else float(row[0])


def _dispatch(conn: sqlite3.Connection, router: Router, now: float, limit: int) -> None:
    events = conn.execute(
        # Names are read as bytes for the same reason as payloads in `_lease`: one damaged
        # row must not stop every event behind it from being dispatched.
        f"SELECT seq, CAST(name AS BLOB), due_at FROM evq_event WHERE seq > {_CURSOR}"
        " ORDER BY seq LIMIT ?",
        (limit,),
    ).fetchall()
    if not events:
        return
    deliveries: list[tuple[int, str, float, float]] = []
    undeliverable: list[tuple[int, str, float, float, float, str]] = []
    dispatched: list[tuple[float, int]] = []
    for seq, raw_name, due_at in events:
        if due_at is None:
            continue  # Fanned out already, by a worker of schema version 1.
        dispatched.append((now, seq))
        name = _payload_text(raw_name)
        if name is None:
            undeliverable.append(
                (
                    seq,
                    UNDELIVERABLE,
                    now,
                    now,
                    now,
                    "stored event name is not UTF-8 text; no receiver can match it",
                )
            )
        else:
            deliveries.extend(
                (seq, receiver, due_at, now) for receiver in router.receivers_for(name)
            )
    conn.executemany(
        "INSERT INTO evq_delivery (event_seq, receiver, state, due_at, created_at)"
        " VALUES (?, ?, 'pending', ?, ?)",
        deliveries,
    )
    if undeliverable:
        # Kept as a dead letter of no receiver, so that `evq dlq list` shows the damage.
        conn.executemany(
            "INSERT INTO evq_delivery (event_seq, receiver, state, created_at, finished_at,"
            " started_at, last_error) VALUES (?, ?, 'dead', ?, ?, ?, ?)",
            undeliverable,
        )
    conn.executemany(
        "UPDATE evq_event SET due_at = NULL, dispatched_at = ? WHERE seq = ?", dispatched
    )
    conn.execute(_SET_CURSOR, (events[-1][0],))
    conn.execute(_COUNT_DISPATCHED, (len(dispatched),))


def _lease(
    conn: sqlite3.Connection, router: Router, owner: str, limit: int, now: float
) -> tuple[list[Lease], int]:
    rows = conn.execute(
        "SELECT d.id, d.receiver, d.state, d.attempt, d.attempt_base, d.failures, d.lease_owner,"
        " d.started_at,"
        # The payload is read as bytes: a damaged or forged row may hold text that is not
        # UTF-8, which sqlite3 refuses to return and which would stall the queue at this row.
        " d.replay, e.id, e.name, CAST(e.payload AS BLOB), e.published_at"
        " FROM evq_delivery d JOIN evq_event e ON e.seq = d.event_seq"
        " WHERE d.due_at IS NOT NULL AND d.due_at <= ? ORDER BY d.due_at, d.id LIMIT ?",
        (now, limit),
    ).fetchall()
    leases: list[Lease] = []
    taken: list[tuple[float, str, float, int]] = []
    dead = 0
    for (
        delivery_id,
        receiver,
        state,
        attempt,
        attempt_base,
        failures,
        last_owner,
        started_at,
        replay,
        event_id,
        name,
        raw_payload,
        published_at,
    ) in rows:
        policy = router.policy(receiver)
        if state == "running" and leases:
            # A delivery whose worker died is taken alone, in a batch of its own: if it is what
            # kills workers, it must not take the deliveries leased with it down again and
            # again (they would count as lost, and end as dead letters, without ever running).
            break
        if state == "running":
            # The lease expired: the worker that held it died or stalled. That is no failure of
            # the receiver's (a killed worker may not even have started it), so it uses up no
            # retry; but a delivery lost MAX_LOST_ATTEMPTS times is probably what kills its
            # workers, and becomes a dead letter rather than crash them forever.
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
        payload = _payload_text(raw_payload)
        if policy is None:
            error = f"receiver {receiver} is not registered with the worker"
        elif attempt - attempt_base - failures >= MAX_LOST_ATTEMPTS:
            error = (
                f"worker lost {MAX_LOST_ATTEMPTS} times while running this delivery"
                " (the receiver may be crashing its worker)"
            )
        elif payload is None:
            error = f"stored payload is not valid JSON: {len(raw_payload)} bytes, not UTF-8 text"
        if error is not None:
            conn.execute(
                "UPDATE evq_delivery SET state = 'dead', due_at = NULL,"
                " finished_at = ?, last_error = ?, lease_owner = NULL WHERE id = ?",
                (now, error, delivery_id),
            )
            dead += 1
            continue
        assert policy is not None and payload is not None
        lease_seconds = policy[1]
        leases.append(
            Lease(
                delivery_id=delivery_id,
                attempt=attempt + 1,
                attempt_base=attempt_base,
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
        taken.append((now + lease_seconds, owner, now, delivery_id))
        if state == "running":
            break
    conn.executemany(
        "UPDATE evq_delivery SET state = 'running', attempt = attempt + 1,"
        " due_at = ?, lease_owner = ?, started_at = ? WHERE id = ?",
        taken,
    )
    return leases, dead


def _hostname() -> str:
    import socket  # only workers need it; publishing should not pay for importing it

    return socket.gethostname()


def _decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _payload_text(raw: bytes) -> str | None:
    """Return a stored payload as text (whether JSON is checked later), or None if it is not
    UTF-8: garbage bytes or a binary pickle, never to be decoded any further."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


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
    if history:
        # Before the updates below, and only for attempts still running under this lease: a
        # stale worker (its lease expired, the delivery moved on) must not rewrite history.
        conn.executemany(
            "INSERT OR REPLACE INTO evq_attempt SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7"
            " WHERE EXISTS (SELECT 1 FROM evq_delivery WHERE id = ?1 AND attempt = ?2"
            " AND state = 'running')",
            history,
        )
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
    if stats:
        conn.executemany(
            "INSERT INTO evq_stat (second, done, failed) VALUES (?, ?, ?) ON CONFLICT (second)"
            " DO UPDATE SET done = done + excluded.done, failed = failed + excluded.failed",
            [(second, counts[0], counts[1]) for second, counts in stats.items()],
        )


# Inspection: what `evq status`, `evq events`, `evq show`, `evq replay` and `evq prune` read

# The states a person sees. `pending`, `scheduled` and `retrying` are all stored as `pending`:
# scheduled is not due yet (a delayed event), retrying has had an attempt already.
DELIVERY_STATES = ("pending", "scheduled", "running", "retrying", "done", "dead")
WORKER_SEEN_WITHIN_SECONDS = 30.0
RATE_WINDOW_SECONDS = 60
# Delivery statistics and heartbeats of stopped workers older than this are pruned.
FORGET_SECONDS = 86400.0


class EventSelection(NamedTuple):
    """Which stored events an inspection or a replay is about; None selects everything.

    `name` is a subscription pattern (`order.*`); `since` and `until` bound `published_at`
    (Unix timestamps, `since` included, `until` excluded).
    """

    name: str | None = None
    since: float | None = None
    until: float | None = None

    @property
    def everything(self) -> bool:
        """Whether this selects every stored event."""
        return self.name is None and self.since is None and self.until is None


class QueueStatus(NamedTuple):
    """A snapshot of a queue, as `SqliteQueue.status()` reads it (times are Unix timestamps).

    `awaiting_dispatch` counts the events no worker has fanned out yet, `delayed` those among
    them published with a delay that has not ended. `oldest_due_at` is when the delivery that
    has waited longest for a worker became due (for an event not fanned out yet: when it was
    published), or None if nothing is waiting.
    """

    time: float
    published: int
    awaiting_dispatch: int
    delayed: int
    pending: int
    scheduled: int
    retrying: int
    running: int
    dead: int
    oldest_due_at: float | None
    delivered_last_minute: int
    failed_last_minute: int
    workers: list[dict[str, Any]]


_EVENT_KEYS = ("seq", "id", "name", "payload", "published_at", "due_at", "dispatched_at", "key")
_EVENT_SELECT = ", ".join(f"e.{key}" for key in _EVENT_KEYS)
_DELIVERY_KEYS = (
    "id",
    "receiver",
    "state",
    "attempt",
    "failures",
    "replay",
    "created_at",
    "due_at",
    "started_at",
    "finished_at",
    "lease_owner",
    "last_error",
    "traceback",
)
_ATTEMPT_KEYS = (
    "delivery_id",
    "attempt",
    "worker",
    "started_at",
    "finished_at",
    "outcome",
    "error",
)
_WORKER_KEYS = ("id", "hostname", "pid", "started_at", "seen_at", "info")
# The state a person sees of a delivery row; one parameter: now. A pending delivery that has
# failed before is retrying; one given back by a stopping worker, or redriven, is pending.
_STATE_SQL = (
    "CASE WHEN state <> 'pending' THEN state WHEN failures > 0 THEN 'retrying'"
    " WHEN due_at > ? THEN 'scheduled' ELSE 'pending' END"
)
# Each keeps the deliveries in one state, through a partial index (due_at or dead).
_DELIVERY_STATE_WHERE = {
    "pending": "d.due_at <= ? AND d.state = 'pending' AND d.failures = 0",
    "scheduled": "d.due_at > ? AND d.state = 'pending' AND d.failures = 0",
    "retrying": "d.due_at IS NOT NULL AND d.state = 'pending' AND d.failures > 0",
    "running": "d.due_at IS NOT NULL AND d.state = 'running'",
    "dead": "d.state = 'dead'",
}
# Time ranges of events are looked up as id ranges this much wider, then `published_at` is
# compared exactly: an id's time and `published_at` are two reads of the clock microseconds
# apart (and a ULID keeps its last millisecond if the clock steps back a little).
_ID_TIME_MARGIN = 1.0
# Dispatched, and every delivery done: the only events `prune` deletes.
_FINISHED_SQL = (
    "e.due_at IS NULL AND e.dispatched_at IS NOT NULL AND NOT EXISTS"
    " (SELECT 1 FROM evq_delivery d WHERE d.event_seq = e.seq AND d.state <> 'done')"
)


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot read the queue {path!r}: {exc}") from exc


def _register_functions(conn: sqlite3.Connection) -> None:
    # Imported here: the publishing path never needs pattern matching in SQL.
    from evq.names import matches

    conn.create_function("evq_name_matches", 2, matches, deterministic=True)


def _event_filter(selection: EventSelection) -> tuple[str, list[Any]]:
    """Return the WHERE clause (on `evq_event e`) and parameters of a selection."""
    clauses = ["1"]
    params: list[Any] = []
    if selection.name is not None:
        if "*" not in selection.name:
            clauses.append("e.name = ?")
            params.append(selection.name)
        else:
            # The literal segments before the first wildcard are compared in SQL first, so
            # that Python's matcher runs only for names that can match.
            literal = selection.name.split("*", 1)[0]
            if literal:
                clauses.append("substr(e.name, 1, ?) = ?")
                params.extend([len(literal), literal])
            clauses.append("evq_name_matches(?, e.name)")
            params.append(selection.name)
    if selection.since is not None:
        clauses.append("e.id >= ? AND e.published_at >= ?")
        params.extend([event_id_floor(selection.since - _ID_TIME_MARGIN), selection.since])
    if selection.until is not None:
        clauses.append("e.id < ? AND e.published_at < ?")
        params.extend([event_id_floor(selection.until + _ID_TIME_MARGIN), selection.until])
    return " AND ".join(clauses), params


def _event_status_filter(status: str, now: float) -> tuple[str, list[Any]]:
    """Return a clause keeping the events that have a delivery in the state `status`."""
    if status == "done":
        return (
            "e.due_at IS NULL AND EXISTS (SELECT 1 FROM evq_delivery d"
            " WHERE d.event_seq = e.seq AND d.state = 'done')",
            [],
        )
    if status not in _DELIVERY_STATE_WHERE:
        raise InvalidInput(
            f"unknown delivery state {status!r}: use one of {', '.join(DELIVERY_STATES)}"
        )
    where = _DELIVERY_STATE_WHERE[status]
    params: list[Any] = [now] if "?" in where else []
    subquery = f"SELECT d.event_seq FROM evq_delivery d WHERE {where}"
    if status in ("pending", "scheduled"):
        # An event not dispatched yet is pending too (scheduled while its delay runs).
        comparison = "<=" if status == "pending" else ">"
        subquery += (
            f" UNION ALL SELECT seq FROM evq_event WHERE seq > {_CURSOR} AND due_at {comparison} ?"
        )
        params.append(now)
    return f"e.seq IN ({subquery})", params


def _delivery_counts(
    conn: sqlite3.Connection, seqs: Sequence[int], now: float
) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {}
    for chunk in _chunks(seqs):
        marks = ",".join("?" * len(chunk))
        for seq, state, count in conn.execute(
            f"SELECT event_seq, {_STATE_SQL} AS s, count(*) FROM evq_delivery"
            f" WHERE event_seq IN ({marks}) GROUP BY event_seq, s",
            (now, *chunk),
        ):
            counts.setdefault(seq, _zero_counts())[state] += count
    return counts


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(DELIVERY_STATES, 0)


def _user_state(state: str, failures: int, due_at: float | None, now: float) -> str:
    if state != "pending":
        return state
    if failures > 0:
        return "retrying"
    return "scheduled" if due_at is not None and due_at > now else "pending"


def _event_status(event: dict[str, Any], now: float) -> str:
    """The state of an event as a whole: the most urgent state among its deliveries."""
    if event["due_at"] is not None:
        return "scheduled" if event["due_at"] > now else "pending"
    counts = event["deliveries"]
    for state in ("dead", "running", "retrying", "pending", "scheduled"):
        if counts[state]:
            return state
    return "done"


def _insert_replays(
    conn: sqlite3.Connection, seqs: Sequence[int], receiver: str | None, now: float
) -> int:
    """Insert the replay deliveries of the events `seqs`; return how many."""
    if receiver is not None:
        conn.executemany(
            "INSERT INTO evq_delivery (event_seq, receiver, state, due_at, created_at, replay)"
            " VALUES (?, ?, 'pending', ?, ?, 1)",
            [(seq, receiver, now, now) for seq in seqs],
        )
        return len(seqs)
    total = 0
    for chunk in _chunks(seqs):
        total += conn.execute(
            "INSERT INTO evq_delivery (event_seq, receiver, state, due_at, created_at, replay)"
            " SELECT DISTINCT d.event_seq, d.receiver, 'pending', ?, ?, 1 FROM evq_delivery d"
            f" WHERE d.event_seq IN ({','.join('?' * len(chunk))}) AND d.receiver != ?",
            (now, now, *chunk, UNDELIVERABLE),
        ).rowcount
    return total


def _replay_select(
    selection: EventSelection, receiver: str | None, now: float
) -> tuple[str, list[Any]]:
    """Return the SELECT of the rows `replay()` inserts into evq_delivery, and its parameters."""
    where, params = _event_filter(selection)
    where += " AND e.due_at IS NULL"
    if receiver is None:
        return (
            "SELECT DISTINCT e.seq, d.receiver, 'pending', ?, ?, 1 FROM evq_event e"
            f" JOIN evq_delivery d ON d.event_seq = e.seq WHERE {where} AND d.receiver != ?",
            [now, now, *params, UNDELIVERABLE],
        )
    return (
        f"SELECT e.seq, ?, 'pending', ?, ?, 1 FROM evq_event e WHERE {where}",
        [receiver, now, now, *params],
    )


def _prune_batch(
    conn: sqlite3.Connection, older_than: float, after: str | None, size: int
) -> tuple[int, str | None]:
    """Delete the finished events among the next `size` published before `older_than`.

    Walks the id index (ids sort by publish time) from the id `after`, so that old events that
    must be kept are looked at once per call, not once per batch. Returns how many events were
    deleted and where the next batch starts (None when the walk is over).
    """
    where, params = _older_than(older_than)
    if after is not None:
        where += " AND e.id > ?"
        params.append(after)
    rows = conn.execute(
        f"SELECT e.seq, e.id, {_FINISHED_SQL} FROM evq_event e WHERE {where} ORDER BY e.id LIMIT ?",
        (*params, size),
    ).fetchall()
    finished = [seq for seq, _, is_finished in rows if is_finished]
    for chunk in _chunks(finished):
        marks = ",".join("?" * len(chunk))
        conn.execute(
            "DELETE FROM evq_attempt WHERE delivery_id IN"
            f" (SELECT id FROM evq_delivery WHERE event_seq IN ({marks}))",
            chunk,
        )
        conn.execute(f"DELETE FROM evq_delivery WHERE event_seq IN ({marks})", chunk)
        conn.execute(f"DELETE FROM evq_event WHERE seq IN ({marks})", chunk)
    following = rows[-1][1] if len(rows) == size else None
    return len(finished), following


def _older_than(older_than: float) -> tuple[str, list[Any]]:
    """Return the WHERE clause (on `evq_event e`) keeping events published before a time."""
    return "e.id < ? AND e.published_at < ?", [
        event_id_floor(older_than + _ID_TIME_MARGIN),
        older_than,
    ]
