"""The Redis backend: `redis://[:password@]host[:port][/db][?prefix=P]`, `rediss://` (TLS),
`unix:///path/to/socket?db=N`. Needs redis-py (`pip install 'evq[redis]'`).

Every key of a queue starts with `{evq:P}:` (`{evq}:` without a prefix): one hash tag, so that
a queue lives in one Cluster slot, and two queues can share a server. The keys:

- `inbox` (a stream: events due now, published and not yet moved into the log; see
  `publishing`); `e:<event id>` (hash: name, payload, published_at, due_at until fanned
  out, dispatched_at, key); `log` (the event ids, sorted by id, which sorts by publish time)
  and `n:<name>` (the same, per name, with `names` listing the names); `keys` (idempotency
  key -> event id);
  `undispatched` (events not fanned out yet, by publish order) and `delayed` (those among them
  with a delay, by due time); `event_seq` (events moved into the log); `counters` (events
  fanned out).
- `d:<delivery id>` (hash: event_id, receiver, state, due_at, attempt, failures,
  attempt_base, lease_owner, times, last_error, traceback, replay); `ed:<event id>` (the
  event's delivery ids, in order); `h:<delivery id>` (attempt -> its history, JSON).
- `due:pending`, `due:retrying`, `due:running` (unfinished deliveries by due time; a running
  one's score is its lease's expiry) and `dead` (dead letters by when they died): leases,
  status and `events --status` read these, never the finished deliveries.
- `stats`, `stat_seconds`, `workers`, `workers_seen`, `meta`, and the stream `wake` that
  every other write of new work adds to: idle workers block reading it and the inbox.

A publish of one event due now without a key is one XADD to the inbox; every other step
that writes is one Lua script (`*.lua`, beside this file, loaded by name with `lib.lua`
before it): a worker killed at any instant leaves each delivery either leased
(taken back when its lease expires, by the server's clock) or in exactly one state.

The package: `connection` (URL, client, scripts, errors, durability settings), `publishing`,
`delivering`, `inspecting` and `wakeup`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from evq.errors import OutboxUnsupported
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
    Queue,
    QueueStatus,
    Role,
    Routing,
)
from evq.storage.redis import publishing
from evq.storage.redis.connection import Connection, durability_warnings, parse_url

CAPABILITIES = Capabilities(wakeup=True, outbox=(), durability=())


class RedisQueue:
    """One process's handle on a queue in Redis (see the package docstring). Thread-safe:
    threads share redis-py's pool; a forked child opens connections of its own."""

    backend = "Redis"
    capabilities = CAPABILITIES

    def __init__(self, url: str, *, role: Role = "publish", create: bool = True) -> None:
        self.url = url
        self.address = parse_url(url)
        self._connection = Connection(self.address)
        self._checked = False
        self._peeked: list[tuple[str, str]] | None = None
        if not create:
            # Inspection of a queue that is not there is a mistake (a wrong prefix or
            # database), not an empty queue.
            self._connection.ensure_queue(create=False)

    @property
    def location(self) -> str:
        """The server, database and prefix, without the password."""
        return self.address.location

    @property
    def source(self) -> str:
        """`evq+` and the location: a URI naming this queue."""
        return "evq+" + self.location

    def close(self) -> None:
        """Close this process's connections."""
        self._connection.close()

    def check(self) -> None:
        """Reach the server, check its version and the queue's layout (marking a new queue)."""
        self._connection.ensure_queue(create=True)
        self._checked = True

    # Publishing

    def publish(self, events: Sequence[NewEvent], *, now: float | None = None) -> list[str]:
        """Store `events`: one XADD, or one script, all or none (see `publishing`). (`now` is
        not needed: the server moves the events' times onto its clock when the two differ.)"""
        if not events:
            return []
        if not self._checked:
            # Once per handle (one process's publishes): a server too old for the worker's
            # commands is refused before it is given events no worker could deliver.
            self._connection.ensure_queue(create=True)
            self._checked = True
        return publishing.insert_events(self._connection, events)

    def publish_within(self, connection: Any, events: Sequence[NewEvent]) -> list[str]:
        """Redis cannot join the caller's transaction: always `OutboxUnsupported`."""
        raise OutboxUnsupported(
            "the Redis backend cannot publish inside your database transaction (there is no"
            " transactional outbox on Redis): publish after your commit, with an idempotency"
            " key, or keep an outbox table of your own and publish from it"
        )

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
        """Record `outcomes`, fan new events out and lease due deliveries, in one script
        (after a read of the events to route). Without outcomes and with nothing due, only
        the read runs."""
        from evq.storage.redis import delivering  # not on the publishing path

        # What the previous lease read for this one (see `delivering.lease`): taken, so that
        # two threads never both use it (if they did, a fan-out would only be skipped).
        peeked, self._peeked = self._peeked, None
        batch, self._peeked = delivering.lease(
            self._connection, routing, owner, limit, outcomes, dispatch_limit, now, peeked
        )
        return batch

    def record(self, outcomes: Sequence[Outcome], *, owner: str, now: float | None = None) -> None:
        """Record the outcomes of leased attempts, fenced by their leases. (Retry times are
        moved onto the server's clock by the script; `now` is not needed.)"""
        from evq.storage.redis import delivering

        if outcomes:
            delivering.record(self._connection, outcomes, owner)

    def renew(self, leases: Sequence[tuple[Lease, float]], *, now: float | None = None) -> int:
        """Extend running leases; return how many were still held. (Expiries are moved onto
        the server's clock by the script; `now` is not needed.)"""
        from evq.storage.redis import delivering

        return delivering.renew(self._connection, leases) if leases else 0

    def next_due(self, receivers: frozenset[str] | None = None) -> float | None:
        """When the earliest delivery (to one of `receivers`, if given) or event to fan out
        is due, if any."""
        from evq.storage.redis import delivering

        return delivering.next_due(self._connection, receivers)

    def running_count(self, owner_prefix: str) -> int:
        """How many unexpired leases owners with this prefix hold."""
        from evq.storage.redis import delivering

        return delivering.running_count(self._connection, owner_prefix)

    def watch(self) -> ChangeWatcher:
        """A watcher that blocks reading the queue's inbox and wake-up streams."""
        from evq.storage.redis.wakeup import ChangeWatcher

        return ChangeWatcher(self._connection)

    # Workers

    def worker_seen(
        self, worker_id: str, *, hostname: str, pid: int, started_at: float, info: str
    ) -> None:
        """Record that the worker `worker_id` is alive now."""
        from evq.storage.redis import inspecting

        record = {
            "id": worker_id,
            "hostname": hostname,
            "pid": pid,
            "started_at": started_at,
            "seen_at": time.time(),
            "info": info,
        }
        inspecting.worker_seen(self._connection, worker_id, record)

    def worker_stopped(self, worker_id: str) -> None:
        """Forget the worker `worker_id`."""
        from evq.storage.redis import inspecting

        inspecting.worker_stopped(self._connection, worker_id)

    # Dead letters

    def dead_letters(
        self,
        *,
        ids: Sequence[str] = (),
        receiver: str | None = None,
        older_than: float | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Dead deliveries with their event, newest first."""
        from evq.storage.redis import dead_letters

        return dead_letters.dead_letters(self._connection, ids, receiver, older_than, limit)

    def redrive(self, ids: Sequence[str]) -> int:
        """Put dead letters back in the queue, due now by the server's clock."""
        from evq.storage.redis import dead_letters

        return dead_letters.redrive(self._connection, ids, None)

    def purge(self, ids: Sequence[str]) -> int:
        """Delete dead letters and their history."""
        from evq.storage.redis import dead_letters

        return dead_letters.purge(self._connection, ids)

    # Inspection

    def status(self, *, now: float | None = None) -> QueueStatus:
        """Counts from counters and sorted sets, with warnings about the server's settings."""
        from evq.storage.redis import inspecting

        warnings = durability_warnings(self._connection)
        return inspecting.status(self._connection, now, warnings)

    def finished_per_minute(self, *, minutes: int, now: float | None = None) -> list[MinuteCount]:
        """Return the deliveries finished in each of the last minutes (on the server's clock)."""
        from evq.storage.redis import inspecting

        now = inspecting.server_time(self._connection) if now is None else now
        return inspecting.finished_per_minute(self._connection, minutes, now)

    def events(
        self,
        selection: EventSelection | None = None,
        *,
        status: DeliveryState | None = None,
        limit: int | None = 50,
        now: float | None = None,
    ) -> list[EventRecord]:
        """The selected events, newest first, with their delivery counts by state."""
        from evq.storage.redis import inspecting

        now = inspecting.server_time(self._connection) if now is None else now
        return inspecting.events(
            self._connection, selection or EventSelection(), status, limit, now
        )

    def event(self, event_id: str, *, now: float | None = None) -> EventRecord | None:
        """One event with every delivery and its attempts, or None."""
        from evq.storage.redis import inspecting

        now = inspecting.server_time(self._connection) if now is None else now
        return inspecting.event(self._connection, event_id, now)

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
        """Create (or count) the replay deliveries of the next batch, in one script."""
        from evq.storage.redis import retention

        return retention.replay_step(
            self._connection, selection, receiver, after, batch_size, now, dry_run
        )

    def prune_step(
        self, older_than: float, *, after: str | None, batch_size: int, dry_run: bool
    ) -> tuple[int, str | None]:
        """Delete (or count) the finished events of the next batch, in one script."""
        from evq.storage.redis import retention

        return retention.prune_step(self._connection, older_than, after, batch_size, dry_run)

    def forget_old_statistics(self, *, now: float | None = None) -> None:
        """Delete delivery statistics and heartbeats of workers older than a day."""
        from evq.storage.redis import retention

        retention.forget_old_statistics(self._connection, now)


def _implements_the_contract(queue: RedisQueue) -> Queue:
    """Never called: mypy checks here that `RedisQueue` implements `Queue`."""
    return queue
