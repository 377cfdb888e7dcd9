"""The PostgreSQL backend: `postgresql://user@host:5432/db` (or `postgres://`; libpq's `PG*`
variables fill in what the URL leaves out), for many workers on many hosts.

The tables (`schema.sql`, prefixed `evq_`, in the connection's current schema) mirror the
SQLite backend's: one row per event, one per (event, receiver) delivery, one per attempt.
What each guarantee rests on here:

- **No double work, no waiting**: workers fan events out and lease due deliveries with
  `FOR UPDATE SKIP LOCKED`, so a row one worker is taking is skipped by the others. Events to
  fan out are found by a partial index on those not fanned out yet, never by a cursor over
  sequence numbers (a transaction that took a lower number may commit later).
- **The server's clock**: a lease's expiry, a delay, a retry time and "due now" are all
  reckoned on the server's clock (`clock_timestamp()`), so hosts whose clocks differ agree.
  Times a caller gives (a retry at, a lease until) are moved onto the server's clock by the
  difference between the two clocks, read in the same statement; a caller that passes `now`
  moves time itself (the contract suite does) and its times are taken as they are.
- **Fencing**: an outcome or a renewal changes a delivery only while it is still running the
  attempt the worker leased (`Lease.attempt`).
- **Wake-up**: each publish sends `NOTIFY evq_wakeup` in its transaction; idle workers
  `LISTEN` on a connection of their own (`wakeup`).
- **The outbox**: `publish(..., connection=conn)` inserts on the application's psycopg 3 or
  psycopg2 connection, inside its transaction (`outbox`).

Connections: one per process for work (shared by its threads, reopened after a fork or once
the server dropped it), and one more in a worker process for `LISTEN`.

The package: `connection` (URL, connections, errors without passwords), `schema`
(`schema.sql`, `evq migrate`), `queries` (`queries.sql`, by name), `delivering` (publish,
fan-out, leases, outcomes), `inspecting` (status, events, dead letters, replay, retention),
`outbox` and `wakeup`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from evq.storage import rules
from evq.storage.contract import (
    Capabilities,
    ChangeWatcher,
    DeadLetter,
    DeliveryState,
    EventRecord,
    EventSelection,
    Lease,
    LeaseBatch,
    MinuteCount,
    NewEvent,
    Outcome,
    QueueStatus,
    Role,
    Routing,
    StreamingQueue,
)
from evq.storage.postgres import delivering, schema
from evq.storage.postgres.connection import Connection, Server
from evq.storage.postgres.queries import QUERIES

CAPABILITIES = Capabilities(wakeup=True, outbox=("psycopg", "psycopg2"))


class PostgresQueue:
    """One process's handle on evq's tables in a PostgreSQL database (see the package
    docstring). Thread-safe: threads share one connection behind a lock."""

    backend = "PostgreSQL"
    capabilities = CAPABILITIES

    def __init__(self, url: str, *, role: Role = "publish", create: bool = True) -> None:
        self.url = url
        self.role = role
        self._server = Server(url)
        self._create = create
        self._db = Connection(self._server, on_connect=self._on_connect)

    def _on_connect(self, conn: psycopg.Connection[Any]) -> None:
        """Check the tables of a new connection: create them if this handle may (in a
        transaction of evq's own), refuse a newer evq's, and a database without any."""
        version = schema.installed_version(conn)
        if (version is None or version < schema.SCHEMA_VERSION) and self._create:
            schema.migrate(conn, self.location)
            return
        # A handle that may not create (the read commands) reads this evq's columns: tables of
        # an older evq are refused with what to run, not failed on one query after another.
        schema.check_current(version, self.location)

    @property
    def location(self) -> str:
        """`host:port/database`, never with a password."""
        return self._server.location

    @property
    def source(self) -> str:
        """`evq://host:port/database`."""
        from urllib.parse import quote

        return "evq://" + quote(self.location, safe=":/[]")

    def close(self) -> None:
        """Close this process's connection (a later call opens a new one)."""
        self._db.close()

    def check(self) -> None:
        """Reach the server, and create evq's tables or bring them up to date (`evq migrate`)
        under an advisory lock, so that workers starting at once do not fail."""
        with self._db.read() as conn:
            schema.migrate(conn, self.location)

    def _shift(self, now: float | None) -> float | None:
        # The caller's clock, read now, for the server to move the caller's times onto its
        # own; None when the caller gave the time (see the package docstring).
        return time.time() if now is None else None

    # Publishing

    def publish(self, events: Sequence[NewEvent], *, now: float | None = None) -> list[str]:
        """Store `events` in one transaction (atomic, durable when it returns): one statement,
        or COPY for a large batch without keys; return their ids. Delays run from the
        server's clock, or from `now` if given."""
        if not events:
            return []
        if delivering.copies(events):
            with self._db.transaction() as conn:
                return delivering.stream_events(conn, [events], now=now)
        with self._db.read() as conn:
            return delivering.insert_events(conn.cursor(), events, now=now)

    def publish_stream(
        self, batches: Iterable[Sequence[NewEvent]], *, now: float | None = None
    ) -> list[str]:
        """Store the events of `batches` in one transaction as they come: the batches without
        keys stream in with COPY, which the server stores while the caller prepares the next
        batch. An exception raised by `batches` rolls all of them back."""
        batches = iter(batches)
        head = list(itertools.islice(batches, 2))
        if len(head) < 2:  # one batch: as `publish`, which may not need COPY
            return self.publish(head[0] if head else [], now=now)
        with self._db.transaction() as conn:
            return delivering.stream_events(conn, itertools.chain(head, batches), now=now)

    def publish_within(self, connection: Any, events: Sequence[NewEvent]) -> list[str]:
        """Store `events` inside the caller's transaction on a psycopg 3 or psycopg2
        connection; evq neither commits nor rolls back."""
        from evq.storage.postgres.outbox import publish_within

        return publish_within(connection, events, self.location)

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
        one transaction, on the server's clock (or at `now`). When nothing is due and there is
        nothing to record, no transaction is opened."""
        given = now
        if not outcomes:
            # A worker of selected receivers is not woken by the others' due deliveries.
            caller_now = time.time()
            next_due, server_now = self._next_due(routing.selected)
            if next_due is None or next_due > (server_now if given is None else given):
                return LeaseBatch([], self._for_caller(next_due, server_now, caller_now, given))
        shard = delivering.shard_of(owner)
        shift = self._shift(given)
        with self._db.transaction() as conn:
            now = self._server_now(conn, given)
            if outcomes:
                delivering.record(conn, outcomes, owner, shift, shard)
            dispatched = delivering.dispatch(conn, routing, now, dispatch_limit)
            leases, dead = delivering.lease(conn, routing, owner, limit, now)
            next_due = None
            if not leases:
                caller_now = time.time()
                due, server_now = delivering.next_due(conn, routing.selected)
                next_due = self._for_caller(due, server_now, caller_now, given)
            # Shared counters last, so that their row locks are held for the shortest time.
            delivering.count_dispatched(conn, dispatched, shard)
        return LeaseBatch(leases, next_due, dead)

    @staticmethod
    def _for_caller(
        due: float | None, server_now: float, caller_now: float, given: float | None
    ) -> float | None:
        # `next_due` on the caller's clock, which a worker compares it with; as stored when
        # the caller gave the time (tests move time).
        return due if given is not None else rules.on_caller_clock(due, server_now, caller_now)

    def record(self, outcomes: Sequence[Outcome], *, owner: str, now: float | None = None) -> None:
        """Record the outcomes of leased attempts, fenced by their leases."""
        if outcomes:
            with self._db.transaction() as conn:
                delivering.record(
                    conn, outcomes, owner, self._shift(now), delivering.shard_of(owner)
                )

    def renew(self, leases: Sequence[tuple[Lease, float]], *, now: float | None = None) -> int:
        """Extend running leases to the given expiry times (on the caller's clock, moved onto
        the server's); return how many were still held."""
        if not leases:
            return 0
        with self._db.read() as conn:
            return delivering.renew(conn.cursor(), leases, self._shift(now))

    def _next_due(self, receivers: frozenset[str] | None = None) -> tuple[float | None, float]:
        with self._db.read() as conn:
            return delivering.next_due(conn, receivers)

    def next_due(self, receivers: frozenset[str] | None = None) -> float | None:
        """Return when the earliest delivery (to one of `receivers`, if given) or event to
        fan out is due, on the caller's clock (see `rules.on_caller_clock`)."""
        caller_now = time.time()
        due, server_now = self._next_due(receivers)
        return rules.on_caller_clock(due, server_now, caller_now)

    def running_count(self, owner_prefix: str) -> int:
        """Return the number of unexpired leases held by owners whose id starts with the prefix."""
        with self._db.read() as conn:
            (count,) = conn.execute(
                QUERIES["running_count"], {"length": len(owner_prefix), "prefix": owner_prefix}
            ).fetchall()[0]
        return int(count)

    def watch(self) -> ChangeWatcher:
        """Return a watcher that `LISTEN`s on a connection of its own."""
        from evq.storage.postgres.wakeup import NotificationWatcher

        return NotificationWatcher(self._server)

    # Workers

    def worker_seen(
        self, worker_id: str, *, hostname: str, pid: int, started_at: float, info: str
    ) -> None:
        """Record that the worker `worker_id` is alive now (on the server's clock)."""
        with self._db.read() as conn:
            conn.execute(
                QUERIES["worker_seen"],
                {
                    "id": worker_id,
                    "hostname": hostname,
                    "pid": pid,
                    "started_at": started_at,
                    "info": info,
                },
            )

    def worker_stopped(self, worker_id: str) -> None:
        """Forget the worker `worker_id`: it stopped cleanly."""
        with self._db.read() as conn:
            conn.execute(QUERIES["worker_stopped"], {"id": worker_id})

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
        from evq.storage.postgres import inspecting

        with self._db.read() as conn:
            return inspecting.dead_letters(conn, ids, receiver, older_than, limit)

    def redrive(self, ids: Sequence[str]) -> int:
        """Put dead letters back in the queue, due now, with a fresh attempt count."""
        from evq.storage.postgres import inspecting

        with self._db.transaction() as conn:
            return inspecting.redrive(conn, ids, self._server_now(conn))

    def purge(self, ids: Sequence[str]) -> int:
        """Delete dead letters and their history; return how many."""
        from evq.storage.postgres import inspecting

        with self._db.transaction() as conn:
            return inspecting.purge(conn, ids)

    # Inspection

    @staticmethod
    def _server_now(conn: psycopg.Connection[Any], now: float | None = None) -> float:
        if now is not None:
            return now
        ((server_now,),) = conn.execute(QUERIES["server_now"]).fetchall()
        return float(server_now)

    def status(self, *, now: float | None = None) -> QueueStatus:
        """Return what the queue holds and does now (one snapshot, on the server's clock)."""
        from evq.storage.postgres import inspecting

        with self._db.snapshot() as conn:
            return inspecting.status(conn, self._server_now(conn, now))

    def finished_per_minute(self, *, minutes: int, now: float | None = None) -> list[MinuteCount]:
        """Return the deliveries finished in each of the last minutes (on the server's clock)."""
        from evq.storage.postgres import inspecting

        with self._db.snapshot() as conn:
            return inspecting.finished_per_minute(conn, minutes, self._server_now(conn, now))

    def events(
        self,
        selection: EventSelection | None = None,
        *,
        status: DeliveryState | None = None,
        limit: int | None = 50,
        now: float | None = None,
    ) -> list[EventRecord]:
        """Return the selected events, newest first, with their delivery counts by state."""
        from evq.storage.postgres import inspecting

        with self._db.snapshot() as conn:
            return inspecting.events(
                conn, selection or EventSelection(), status, limit, self._server_now(conn, now)
            )

    def event(self, event_id: str, *, now: float | None = None) -> EventRecord | None:
        """Return one event with every delivery and its attempts, or None if not stored."""
        from evq.storage.postgres import inspecting

        with self._db.snapshot() as conn:
            return inspecting.event(conn, event_id, self._server_now(conn, now))

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
        from evq.storage.postgres import inspecting

        with self._db.transaction() as conn:
            return inspecting.replay_step(
                conn, selection, receiver, after, batch_size, now, dry_run
            )

    def prune_step(
        self, older_than: float, *, after: str | None, batch_size: int, dry_run: bool
    ) -> tuple[int, str | None]:
        """Delete (or count) the finished events of the next batch, atomically."""
        from evq.storage.postgres import inspecting

        with self._db.transaction() as conn:
            return inspecting.prune_step(conn, older_than, after, batch_size, dry_run)

    def forget_old_statistics(self, *, now: float | None = None) -> None:
        """Delete delivery statistics and heartbeats of workers older than a day."""
        from evq.storage.postgres import inspecting

        with self._db.transaction() as conn:
            inspecting.forget_old_statistics(conn, self._server_now(conn, now))


def _implements_the_contract(queue: PostgresQueue) -> StreamingQueue:
    """Never called: mypy checks here that `PostgresQueue` implements `StreamingQueue`."""
    return queue
