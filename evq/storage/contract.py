"""The storage contract: what crosses the seam between evq and a queue backend.

Every backend (`evq.storage.sqlite` today) implements `Queue` and speaks only in the types
below. A backend *stores and fetches*; the rules of the domain (which state a person sees, when
a delivery becomes a dead letter, what a replay delivers, when an event may be pruned) live in
`evq.storage.rules`, written once, and every backend applies them from there.

Times are Unix timestamps (seconds, float). Ids that cross the seam (events, deliveries, dead
letters) are opaque strings: a backend may store them as it likes, and an id it does not know
(or cannot even parse) is simply not found.

The promises a backend makes, which the contract suite (`tests/contract/`) checks on each:

- **Atomic**: `publish` stores all of its events or none; `lease` records its outcomes, fans
  new events out and takes its leases in one step; `redrive`, `purge`, each replay batch and each
  prune batch are one step each. A crash between two steps loses nothing and repeats at most
  the attempts whose outcome was not recorded yet.
- **Fenced by the lease**: an outcome, and a renewal, count only while the delivery is still at
  the attempt the worker leased (`Lease.attempt` is the fencing token). A worker whose lease
  expired and was taken over cannot overwrite the newer attempt, nor its history.
- **Clocks**: a backend with a clock of its own (a database server's) reckons every due time
  and lease expiry on it, so that hosts whose clocks differ agree. Times a caller gives (a
  retry at, a lease until, a delay) are on the caller's clock; such a backend moves them onto
  its own by the difference between the two clocks. A method given `now` uses that instead
  of any clock, and takes the caller's times as they are: that is how tests move time. The
  times a backend returns in records are on its clock; `next_due` (of `lease` and
  `next_due()`), which a worker compares with its own clock, is on the caller's: a backend
  moves it by the difference it just read when the two clocks differ by more than a second
  (`rules.on_caller_clock`).
- **Lazy where allowed**: fan-out happens when a worker leases, not at publish; statistics and
  heartbeats of workers may be dropped after a day; a backend may count status numbers from
  counters and indexes instead of scanning.

Only the standard library is imported: publishing must start fast. (For the same reason there
is no `from __future__ import annotations` here: typing.NamedTuple turns every string
annotation into a compiled ForwardRef, which cost `evq publish` 2 ms.)
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol

# What a publish needs lives apart, so that `evq publish` does not build the classes below
# (1.5 ms of its start-up); it is part of this contract all the same.
from evq.storage.publishing import Capabilities as Capabilities
from evq.storage.publishing import NewEvent as NewEvent
from evq.storage.publishing import Role as Role

#: What happened to one leased attempt: `done`; `retry` (run again at `Outcome.retry_at`);
#: `dead` (a dead letter); `release` (interrupted by a shutdown, or never started: the delivery
#: is available again at once, and an attempt that never started gives its number back).
OutcomeKind = Literal["done", "retry", "dead", "release"]
OUTCOME_KINDS: tuple[OutcomeKind, ...] = ("done", "retry", "dead", "release")

#: The state a person sees of a delivery (see `evq.storage.rules.user_state`).
DeliveryState = Literal["pending", "scheduled", "running", "retrying", "done", "dead"]
DELIVERY_STATES: tuple[DeliveryState, ...] = (
    "pending",
    "scheduled",
    "running",
    "retrying",
    "done",
    "dead",
)

#: What a backend stores of a delivery's state: `pending` covers pending, scheduled and
#: retrying, which differ only by the delivery's due time and failures.
StoredState = Literal["pending", "running", "done", "dead"]


class Lease(NamedTuple):
    """A delivery a worker has taken, with what it needs to call the receiver.

    `attempt` is the attempt number this lease runs and the fencing token of its outcome;
    `attempt_base` is where the receiver's count starts (a redrive restarts it), so the
    receiver sees `attempt - attempt_base`.
    """

    delivery_id: str
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
    headers: str | None = None


class Outcome(NamedTuple):
    """What happened to one leased attempt; recorded with `Queue.record()` or `Queue.lease()`.

    `started_at` is None for an attempt that never called the receiver. `counts_as_failure`
    is False when the receiver is not to blame (it was never called, say): the failure count,
    which decides retries, is left alone.
    """

    lease: Lease
    kind: OutcomeKind
    started_at: float | None
    finished_at: float
    retry_at: float | None = None
    error: str | None = None
    traceback: str | None = None
    counts_as_failure: bool = True


class LeaseBatch(NamedTuple):
    """The result of one `Queue.lease()` call: the leases taken, when the next delivery is
    due (if none was taken), and how many deliveries became dead letters meanwhile."""

    leases: list[Lease]
    next_due: float | None
    dead_lettered: int = 0


_ROUTING_CACHE_SIZE = 10_000


class Routing:
    """What a worker tells the queue about the receivers it serves, as plain data.

    `subscriptions` pairs each subscription pattern with its receiver (`module:qualname`);
    `lease_seconds` gives, for every receiver this worker runs, how long a lease on one of its
    deliveries lasts. A backend never calls back into application code: matching a name
    against the patterns (`receivers_for`) is pure and cached.

    `selected` is None for a worker that runs every receiver it knows: a due delivery to a
    receiver it does not know is a dead letter (`rules.dead_reason`). A worker that runs only
    some receivers (`evq worker --receiver`) names them in `selected` (the keys of
    `lease_seconds`): it still fans events out to every subscription, but leases only the
    deliveries of its selected receivers, and leaves every other delivery, known or not, for
    other workers. Its `next_due` is that of its selected receivers' deliveries.
    """

    __slots__ = ("_cache", "lease_seconds", "selected", "subscriptions")

    def __init__(
        self,
        *,
        subscriptions: tuple[tuple[str, str], ...],
        lease_seconds: Mapping[str, float],
        selected: frozenset[str] | None = None,
    ) -> None:
        self.subscriptions = subscriptions
        self.lease_seconds = lease_seconds
        self.selected = selected
        self._cache: dict[str, tuple[str, ...]] = {}

    def receivers_for(self, name: str, /) -> tuple[str, ...]:
        """Return each receiver subscribed to the event `name` once, in subscription order."""
        receivers = self._cache.get(name)
        if receivers is None:
            from evq.names import matches

            receivers = tuple(
                dict.fromkeys(r for pattern, r in self.subscriptions if matches(pattern, name))
            )
            if len(self._cache) >= _ROUTING_CACHE_SIZE:
                self._cache.clear()  # endless distinct names must not grow a worker forever
            self._cache[name] = receivers
        return receivers

    def lease_for(self, receiver: str, /) -> float | None:
        """Return the lease of `receiver`'s deliveries, or None if this worker does not run it."""
        return self.lease_seconds.get(receiver)


class EventSelection(NamedTuple):
    """Which stored events an inspection or a replay is about; None selects everything.

    `name` is a subscription pattern (`order.*`); `since` and `until` bound `published_at`
    (`since` included, `until` excluded). `before` is an event id: only events whose ids sort
    before it (ids sort by publish time), the cursor of a newest-first listing's next page,
    which stays exact when many events share one publish time.
    """

    name: str | None = None
    since: float | None = None
    until: float | None = None
    before: str | None = None

    @property
    def everything(self) -> bool:
        """Whether this selects every stored event."""
        return (
            self.name is None
            and self.since is None
            and self.until is None
            and (self.before is None)
        )


class WorkerRecord(NamedTuple):
    """A worker seen recently: its id, where it runs, and what it told (`info`, JSON text)."""

    id: str
    hostname: str
    pid: int
    started_at: float
    seen_at: float
    info: str


class QueueStatus(NamedTuple):
    """A snapshot of a queue, read from counters and indexes.

    `published` counts every event ever stored, pruned ones included. `awaiting_dispatch`
    counts the events no worker has fanned out yet, `delayed` those among them published with a
    delay that has not ended. `oldest_due_at` is when the delivery that has waited longest for a
    worker became due (for an event not fanned out yet: when it was published), or None if
    nothing is waiting. `warnings` are one line each about how the storage may lose events
    (a Redis server without persistence, say), for `evq status` and a worker's start.
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
    workers: list[WorkerRecord]
    warnings: tuple[str, ...] = ()


class AttemptRecord(NamedTuple):
    """One finished attempt of a delivery: its outcome (`done`, `retry`, `dead`, `lost`,
    `interrupted`), the worker that ran it, and its error."""

    attempt: int
    outcome: str
    worker: str | None
    started_at: float | None
    finished_at: float
    error: str | None


class DeliveryRecord(NamedTuple):
    """One delivery of an event to a receiver, as a person sees it, with its history."""

    id: str
    receiver: str
    state: DeliveryState
    attempts: int
    failures: int
    replay: bool
    created_at: float
    due_at: float | None
    started_at: float | None
    finished_at: float | None
    worker: str | None
    last_error: str | None
    traceback: str | None
    history: tuple[AttemptRecord, ...] = ()


class EventRecord(NamedTuple):
    """A stored event with its status and the number of its deliveries in each state.

    `due_at` is set while no worker has fanned the event out yet; `deliveries` is filled by
    `Queue.event()` only. `headers` is the event's headers as JSON text, None if it has none.
    """

    id: str
    name: str
    payload: str
    published_at: float
    due_at: float | None
    dispatched_at: float | None
    key: str | None
    status: DeliveryState
    counts: Mapping[DeliveryState, int]
    deliveries: tuple[DeliveryRecord, ...] = ()
    headers: str | None = None


class DeadLetter(NamedTuple):
    """A delivery that became a dead letter, with its event."""

    id: str
    receiver: str
    attempts: int
    failures: int
    dead_at: float
    error: str | None
    traceback: str | None
    created_at: float
    event_id: str
    name: str
    payload: str
    published_at: float
    headers: str | None = None


class MinuteCount(NamedTuple):
    """The deliveries that finished in one minute (from `minute`, a Unix time, on for 60 s):
    `delivered` done, `failed` attempts that failed (retried or dead)."""

    minute: float
    delivered: int
    failed: int


class StoredCounts(NamedTuple):
    """How many deliveries a backend holds in one stored state, split as `rules.user_state`
    needs it: by whether they failed before and whether they are due after `now`."""

    state: StoredState
    failed: bool
    later: bool
    deliveries: int


class ChangeWatcher(Protocol):
    """Wakes an idle worker when the queue may have new work (a backend capability)."""

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a change; tell whether there may be one."""
        ...

    def close(self) -> None:
        """Release what the watcher holds (connections, descriptors)."""
        ...


class Queue(Protocol):
    """What evq needs from a queue backend; one handle per process, safe across threads."""

    url: str
    #: The backend's name, for people: "SQLite", "PostgreSQL".
    backend: str
    capabilities: Capabilities

    @property
    def location(self) -> str:
        """Where the queue lives, for people: a file's absolute path, a server's address
        (never a password)."""
        ...

    @property
    def source(self) -> str:
        """The CloudEvents `source` of the events stored here (`evq:///path/to/evq.db`)."""
        ...

    def check(self) -> None:
        """Make sure the queue can be used: reach it, create or upgrade its tables, and check
        its integrity as far as the backend can; raise `QueueUnusable` (or `StorageError`)
        if not. A worker calls it once at start, so that a broken queue stops it at once."""
        ...

    # Publishing

    def publish(self, events: Sequence[NewEvent], *, now: float | None = None) -> list[str]:
        """Store `events` durably, atomically; return their ids. An event whose idempotency
        key is already stored is not stored again: its place holds the first event's id.
        Each event's delay (`due_at - published_at`) runs from the queue's clock (see
        "Clocks"), or with `now` given, its `due_at` is taken as it is."""
        ...

    def publish_within(self, connection: Any, events: Sequence[NewEvent]) -> list[str]:
        """Store `events` inside the caller's open transaction on `connection`, which the
        caller commits or rolls back (the transactional outbox). A backend without the
        capability raises `OutboxUnsupported`."""
        ...

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
        """Atomically: record `outcomes` (fenced), fan up to `dispatch_limit` new events out to
        `routing`'s receivers, and lease up to `limit` due deliveries to `owner` (only those
        of `routing.selected` receivers, if it names some).

        Deliveries that `rules.dead_reason` condemns become dead letters instead of leases; a
        delivery whose lease expired (its worker was lost) is leased alone (`rules`). When
        nothing is due and there is nothing to record, a backend may skip the write."""
        ...

    def record(self, outcomes: Sequence[Outcome], *, owner: str, now: float | None = None) -> None:
        """Atomically record outcomes of leased attempts (with their history and statistics),
        each fenced: only if the delivery is still at the attempt its lease took. Their retry
        times are on the caller's clock (see "Clocks")."""
        ...

    def renew(self, leases: Sequence[tuple[Lease, float]], *, now: float | None = None) -> int:
        """Extend running leases to the given expiry times (fenced, on the caller's clock:
        see "Clocks"); return how many were still held."""
        ...

    def next_due(self, receivers: frozenset[str] | None = None) -> float | None:
        """Return when the earliest delivery (to one of `receivers`, if given) is due; an
        event not fanned out yet counts as due since it was published."""
        ...

    def running_count(self, owner_prefix: str) -> int:
        """Return how many unexpired leases owners with this prefix hold (a read)."""
        ...

    def watch(self) -> ChangeWatcher | None:
        """Return a watcher of new work, or None if the backend has no `wakeup` capability."""
        ...

    # Workers

    def worker_seen(
        self, worker_id: str, *, hostname: str, pid: int, started_at: float, info: str
    ) -> None:
        """Record a worker's heartbeat (for `status` only: a backend may keep it lazily and
        drop it after a day)."""
        ...

    def worker_stopped(self, worker_id: str) -> None:
        """Forget a worker that stopped cleanly."""
        ...

    # Dead letters

    def dead_letters(
        self,
        *,
        ids: Sequence[str] = (),
        receiver: str | None = None,
        older_than: float | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Return dead letters with their events, newest first (a read). An id this backend
        could not have made is simply not found."""
        ...

    def redrive(self, ids: Sequence[str]) -> int:
        """Atomically put dead letters back in the queue, due now, with a fresh attempt count
        (the fencing token keeps counting); return how many."""
        ...

    def purge(self, ids: Sequence[str]) -> int:
        """Atomically delete dead letters and their history; return how many."""
        ...

    # Inspection

    def status(self, *, now: float | None = None) -> QueueStatus:
        """Return counts, the oldest wait, throughput and the workers seen lately, from one
        consistent read. Lazy: a backend may count from counters and indexes, and must stay
        instant with millions of finished events stored."""
        ...

    def finished_per_minute(self, *, minutes: int, now: float | None = None) -> list[MinuteCount]:
        """Return the deliveries finished in each minute of the last `minutes` minutes and the
        current one, oldest first, from the delivery statistics (a minute without any is left
        out). Cheap: at most `minutes` * 60 statistics rows are read."""
        ...

    def events(
        self,
        selection: EventSelection | None = None,
        *,
        status: DeliveryState | None = None,
        limit: int | None = 50,
        now: float | None = None,
    ) -> list[EventRecord]:
        """Return the selected events, newest first, with their delivery counts; `status`
        keeps those with a delivery in that state (`rules.event_has_state`)."""
        ...

    def event(self, event_id: str, *, now: float | None = None) -> EventRecord | None:
        """Return one event with every delivery and its history, or None (a read)."""
        ...

    # Replay and retention: one short step each; `evq.storage.rules` walks them.

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
        """Create (or with `dry_run` only count) the replay deliveries of the next
        `batch_size` dispatched events after the event id `after`, atomically; return how many
        and the id to go on from (None at the end). `rules.replay_receivers` says which."""
        ...

    def prune_step(
        self, older_than: float, *, after: str | None, batch_size: int, dry_run: bool
    ) -> tuple[int, str | None]:
        """Delete (or with `dry_run` only count) the events among the next `batch_size`
        published before `older_than` (after the id `after`) that `rules.is_finished` allows,
        with their deliveries, history and keys, atomically; return how many and where to go
        on (None at the end)."""
        ...

    def forget_old_statistics(self, *, now: float | None = None) -> None:
        """Delete delivery statistics and heartbeats of workers older than a day. Lazy: a
        backend may expire them by itself instead."""
        ...

    def close(self) -> None:
        """Release this process's connections."""
        ...


class StreamingQueue(Queue, Protocol):
    """A queue that can store a long run of events while the caller is still preparing them
    (`evq publish --jsonl`); optional. `evq.publisher.store_stream` uses it where a backend has
    it (PostgreSQL, through COPY: the server stores one batch while the client reads the next)
    and otherwise gathers every batch and calls `Queue.publish` once."""

    def publish_stream(
        self, batches: Iterable[Sequence[NewEvent]], *, now: float | None = None
    ) -> list[str]:
        """Store the events of `batches`, in order, as `Queue.publish` stores them all at
        once: atomically, durably when it returns; return their ids. An exception raised while
        `batches` yields one stores none of them, and is raised again as it was."""
        ...
