"""Where the queue lives: the interface every storage backend implements, and `open_queue()`.

evq has one backend today, SQLite (`evq.storage.sqlite`, which holds all of its SQL). Redis and
PostgreSQL backends are to implement the same `Queue` protocol, so that publishing, the worker
and every command work unchanged on them: `open_queue()` is the one place that picks a backend
from the URL. (The transactional outbox, `publish(..., connection=...)`, and the idle worker's
wake-up, `evq.wakeup`, are SQLite's own and stay with it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from evq.storage.sqlite import (
        EventSelection,
        Lease,
        LeaseBatch,
        NewEvent,
        Outcome,
        QueueStatus,
        Router,
    )


class Queue(Protocol):
    """What evq needs from a queue backend. Times are Unix timestamps."""

    url: str
    path: str  # where the queue lives, as shown to people

    # Publishing
    def publish(self, events: Sequence[NewEvent]) -> list[str]:
        """Store `events` durably in one transaction; return their ids (the first id stored
        for an idempotency key already seen)."""
        ...

    # Delivering
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
        """Record `outcomes`, fan new events out to `router`'s receivers and lease up to
        `limit` due deliveries, atomically."""
        ...

    def record(self, outcomes: Sequence[Outcome], *, owner: str) -> None:
        """Record outcomes of leased attempts, each only if its lease is still current."""
        ...

    def renew(self, leases: Sequence[tuple[Lease, float]]) -> int:
        """Extend running leases; return how many were still held."""
        ...

    def next_due(self) -> float | None:
        """Return when the earliest delivery is due; an event not fanned out yet counts as due
        since it was published."""
        ...

    def running_count(self, owner_prefix: str) -> int:
        """Return how many unexpired leases owners with this prefix hold."""
        ...

    def worker_seen(self, worker_id: str, *, started_at: float, info: str) -> None:
        """Record a worker's heartbeat."""
        ...

    def worker_stopped(self, worker_id: str) -> None:
        """Forget a worker that stopped cleanly."""
        ...

    # Dead letters
    def dead_letters(
        self,
        *,
        ids: Sequence[int] = (),
        receiver: str | None = None,
        older_than: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Return dead deliveries with their events, newest first."""
        ...

    def redrive(self, delivery_ids: Sequence[int]) -> int:
        """Put dead deliveries back in the queue with a fresh attempt count."""
        ...

    def purge(self, delivery_ids: Sequence[int]) -> int:
        """Delete dead deliveries and their history."""
        ...

    # Inspection and retention
    def status(self, *, now: float | None = None) -> QueueStatus:
        """Return counts, the oldest wait, throughput and the workers seen."""
        ...

    def events(
        self,
        selection: EventSelection | None = None,
        *,
        status: str | None = None,
        limit: int | None = 50,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Return stored events, newest first, with their delivery counts."""
        ...

    def event(self, event_id: str, *, now: float | None = None) -> dict[str, Any] | None:
        """Return one event with every delivery and its history."""
        ...

    def replay(
        self,
        selection: EventSelection,
        *,
        receiver: str | None = None,
        now: float | None = None,
        batch_size: int = 1000,
    ) -> int:
        """Create replay deliveries for the selected events; return how many."""
        ...

    def replay_count(self, selection: EventSelection, *, receiver: str | None = None) -> int:
        """Return how many deliveries `replay` would create."""
        ...

    def prune(
        self,
        older_than: float,
        *,
        batch_size: int = 1000,
        max_batches: int | None = None,
        now: float | None = None,
    ) -> int:
        """Delete finished events published before `older_than`; return how many."""
        ...

    def prune_step(
        self,
        older_than: float,
        *,
        after: str | None = None,
        batch_size: int = 1000,
        max_batches: int | None = None,
    ) -> tuple[int, str | None]:
        """Prune part of the log from `after`; return the count and where to go on."""
        ...

    def prunable_count(self, older_than: float) -> int:
        """Return how many events `prune` would delete."""
        ...

    def forget_old_statistics(self, *, now: float | None = None) -> None:
        """Delete old throughput statistics and worker heartbeats."""
        ...

    def close(self) -> None:
        """Release this process's connection."""
        ...


def open_queue(url: str, *, sync: str = "full", create: bool = True) -> Queue:
    """Return a handle on the queue at `url`: a SQLite path or `sqlite:///path` URL.

    `sync` is how durably writes wait for the disk; with `create=False`, a queue that does not
    exist yet is an error (`QueueNotFound`) instead of being created.
    """
    from evq.storage.sqlite import SqliteQueue

    return SqliteQueue(url, sync=sync, create=create)
