"""The SQLite backend: the queue is one file, `sqlite:///path/to/evq.db?sync=full` or a path.

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

Deliveries are never deleted when a worker takes them: a worker takes a *lease*, and the row is
only changed again when its outcome is known. `attempt` doubles as the fencing token.

The package: `connection` (the file, pragmas, locking), `schema` (`schema.sql` and upgrades),
`publishing`, `delivering` (fan-out, leases, outcomes), `inspecting` (status, events, dead letters,
replay, retention), `outbox` and `wakeup`. Only the standard library is imported: publishing
must start fast.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evq.storage.publishing import Capabilities, NewEvent, Role
from evq.storage.sqlite import publishing
from evq.storage.sqlite.connection import SYNC_MODES, Connection, parse_url, sync_mode

if TYPE_CHECKING:  # The rest of the contract is loaded by the worker and the reading commands.
    from evq.storage.contract import (
        ChangeWatcher,
        DeadLetter,
        DeliveryState,
        EventRecord,
        EventSelection,
        Lease,
        LeaseBatch,
        MinuteCount,
        Outcome,
        Queue,
        QueueStatus,
        Routing,
    )

CAPABILITIES = Capabilities(wakeup=True, outbox=("sqlite3",), durability=SYNC_MODES)


class SqliteQueue:
    """One process's handle on a SQLite queue file (see the package docstring).

    Thread-safe: threads share one connection behind a lock. A forked child opens its own
    connection on first use.
    """

    backend = "SQLite"
    capabilities = CAPABILITIES

    def __init__(self, url: str, *, role: Role = "publish", create: bool = True) -> None:
        self.url = url
        self.path, params = parse_url(url)
        self.sync = sync_mode(params, role)
        self._db = Connection(
            self.path, sync=self.sync, create=create, may_read_only=role == "inspect"
        )

    @property
    def location(self) -> str:
        """The absolute path of the file."""
        return os.path.abspath(self.path)

    @property
    def source(self) -> str:
        """`evq://` and the absolute path of the file, percent-encoded where needed (spaces,
        for one) so that it is a valid URI."""
        from urllib.parse import quote  # only the inspection commands need it

        return "evq://" + quote(self.location)

    def close(self) -> None:
        """Close this process's connection (a later call opens a new one)."""
        self._db.close()

    def check(self) -> None:
        """Open the file (creating or upgrading its tables) and run SQLite's `quick_check`,
        which reads every page: a damaged file stops a worker at start, not at the first
        delivery that reaches the damage."""
        from evq.errors import QueueUnusable

        with self._db.read() as conn:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise QueueUnusable(
                f"the queue {self.path!r} is damaged ({'; '.join(problems)}): restore it from"
                " a backup, or recover what is left with sqlite3's .recover"
            )

    # Publishing

    def publish(self, events: Sequence[NewEvent], *, now: float | None = None) -> list[str]:
        """Store `events` in one durable transaction; return their ids. The queue's clock
        is the publisher's: due times are stored as given, `now` or not."""
        with self._db.write() as conn:
            return publishing.insert_events(conn, events)

    def publish_within(self, connection: Any, events: Sequence[NewEvent]) -> list[str]:
        """Store `events` inside the caller's transaction on a `sqlite3` connection."""
        from evq.storage.sqlite.outbox import publish_within

        return publish_within(connection, events, queue_path=self.path)

    # Delivering

    def lease(
        self,
        routing: Routing,
        *,
        owner: str,
        limit: int,
        outcomes: Sequence[Outcome] = (),
        dispatch_limit: int = 256,
        now: float | None = None,
    ) -> LeaseBatch:
        """Record `outcomes`, fan new events out, and lease up to `limit` due deliveries, in
        one transaction. When nothing is due and there is nothing to record, no write
        transaction is taken."""
        from evq.storage.contract import LeaseBatch
        from evq.storage.sqlite import delivering  # not on the publishing path

        now = time.time() if now is None else now
        if not outcomes:
            # A worker of selected receivers is not woken by the others' due deliveries.
            next_due = self.next_due(routing.selected)
            if next_due is None or next_due > now:
                return LeaseBatch([], next_due)
        with self._db.write() as conn:
            if outcomes:
                delivering.record(conn, outcomes, owner)
            delivering.dispatch(conn, routing, now, dispatch_limit)
            leases, dead = delivering.lease(conn, routing, owner, limit, now)
            next_due = None if leases else delivering.next_due(conn, routing.selected)
        return LeaseBatch(leases, next_due, dead)

    def record(self, outcomes: Sequence[Outcome], *, owner: str, now: float | None = None) -> None:
        """Record the outcomes of leased attempts, fenced by their leases (the queue's clock
        is the worker's: times are stored as given)."""
        from evq.storage.sqlite import delivering  # not on the publishing path

        if outcomes:
            with self._db.write() as conn:
                delivering.record(conn, outcomes, owner)

    def renew(self, leases: Sequence[tuple[Lease, float]], *, now: float | None = None) -> int:
        """Extend running leases to the given expiry times; return how many were still held."""
        from evq.storage.sqlite import delivering  # not on the publishing path

        if not leases:
            return 0
        with self._db.write() as conn:
            return delivering.renew(conn, leases)

    def next_due(self, receivers: frozenset[str] | None = None) -> float | None:
        """Return when the earliest delivery (to one of `receivers`, if given) or event to
        fan out is due, if any."""
        from evq.storage.sqlite import delivering  # not on the publishing path

        with self._db.read() as conn:
            return delivering.next_due(conn, receivers)

    def running_count(self, owner_prefix: str) -> int:
        """Return the number of unexpired leases held by owners whose id starts with the prefix."""
        rows = self._db.fetch(
            "SELECT count(*) FROM evq_delivery WHERE due_at IS NOT NULL AND state = 'running'"
            " AND due_at > ? AND substr(lease_owner, 1, ?) = ?",
            (time.time(), len(owner_prefix), owner_prefix),
        )
        return int(rows[0][0])

    def watch(self) -> ChangeWatcher:
        """Return a watcher that wakes within milliseconds of a commit by any process."""
        from evq.storage.sqlite.wakeup import ChangeWatcher

        return ChangeWatcher(self.path)

    # Workers

    def worker_seen(
        self, worker_id: str, *, hostname: str, pid: int, started_at: float, info: str
    ) -> None:
        """Record that the worker `worker_id` is alive now."""
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO evq_worker (id, hostname, pid, started_at, seen_at, info)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " seen_at = excluded.seen_at, info = excluded.info",
                (worker_id, hostname, pid, started_at, time.time(), info),
            )

    def worker_stopped(self, worker_id: str) -> None:
        """Forget the worker `worker_id`: it stopped cleanly."""
        with self._db.write() as conn:
            conn.execute("DELETE FROM evq_worker WHERE id = ?", (worker_id,))

    # Dead letters

    def dead_letters(
        self,
        *,
        ids: Sequence[str] = (),
        receiver: str | None = None,
        older_than: float | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Return dead deliveries with their event, newest first."""
        from evq.storage.sqlite import inspecting

        with self._db.read() as conn:
            return inspecting.dead_letters(conn, ids, receiver, older_than, limit)

    def redrive(self, ids: Sequence[str]) -> int:
        """Put dead letters back in the queue with a fresh attempt count; return how many."""
        from evq.storage.sqlite import inspecting

        with self._db.write() as conn:
            return inspecting.redrive(conn, ids, time.time())

    def purge(self, ids: Sequence[str]) -> int:
        """Delete dead letters and their history; return how many."""
        from evq.storage.sqlite import inspecting

        with self._db.write() as conn:
            return inspecting.purge(conn, ids)

    # Inspection

    def status(self, *, now: float | None = None) -> QueueStatus:
        """Return what the queue holds and does now, from indexes and counters only."""
        from evq.storage.sqlite import inspecting

        with self._db.read() as conn:
            return inspecting.status(conn, time.time() if now is None else now)

    def finished_per_minute(self, *, minutes: int, now: float | None = None) -> list[MinuteCount]:
        """Return the deliveries finished in each of the last minutes, from `evq_stat`."""
        from evq.storage.sqlite import inspecting

        with self._db.read() as conn:
            return inspecting.finished_per_minute(
                conn, minutes, time.time() if now is None else now
            )

    def events(
        self,
        selection: EventSelection | None = None,
        *,
        status: DeliveryState | None = None,
        limit: int | None = 50,
        now: float | None = None,
    ) -> list[EventRecord]:
        """Return the selected events, newest first, with their delivery counts by state."""
        from evq.storage.contract import EventSelection
        from evq.storage.sqlite import inspecting

        now = time.time() if now is None else now
        with self._db.read() as conn:
            return inspecting.events(conn, selection or EventSelection(), status, limit, now)

    def event(self, event_id: str, *, now: float | None = None) -> EventRecord | None:
        """Return one event with every delivery and its attempts, or None if not stored."""
        from evq.storage.sqlite import inspecting

        with self._db.read() as conn:
            return inspecting.event(conn, event_id, time.time() if now is None else now)

    # Replay and retention

    def replay_step(
        self,
        selection: EventSelection,
        *,
        receiver: str | None,
        after: str | None,
        batch_size: int,
        now: float,
        dry_run: bool,
    ) -> tuple[int, str | None]:
        """Create (or count) the replay deliveries of the next batch of events, atomically."""
        from evq.storage.sqlite import inspecting

        with self._db.write() if not dry_run else self._db.read() as conn:
            return inspecting.replay_step(
                conn, selection, receiver, after, batch_size, now, dry_run
            )

    def prune_step(
        self, older_than: float, *, after: str | None, batch_size: int, dry_run: bool
    ) -> tuple[int, str | None]:
        """Delete (or count) the finished events of the next batch, atomically."""
        from evq.storage.sqlite import inspecting

        with self._db.write() if not dry_run else self._db.read() as conn:
            return inspecting.prune_step(conn, older_than, after, batch_size, dry_run)

    def forget_old_statistics(self, *, now: float | None = None) -> None:
        """Delete delivery statistics and heartbeats of workers older than a day."""
        from evq.storage.sqlite import inspecting

        with self._db.write() as conn:
            inspecting.forget_old_statistics(conn, time.time() if now is None else now)


def _implements_the_contract(queue: SqliteQueue) -> Queue:
    """Never called: mypy checks here that `SqliteQueue` implements `Queue`."""
    return queue
