"""The in-memory backend: `memory://` or `memory://NAME`, a queue that lives inside one Python
process, for tests (`evq.testing`) and for trying evq out.

Every handle opened on the same URL in one process shares one queue: the code under test
publishing with `evq.publish`, the test reading what was published, and a worker running in a
thread of the same process all see the same events. Nothing is written anywhere: the queue is
gone when the process ends (or when `drop(url)` is called), and another process, such as an
`evq worker` started from a shell, can never see it. The command line therefore refuses
`memory://` URLs rather than publish events that no worker would ever deliver. A forked
child gets a copy of the queue as it was, which it does not share with its parent.

It passes the storage contract suite like every other backend: the rules of the domain come
from `evq.storage.rules`, and this package only stores and fetches (`store` holds the data).
Times are the process's clock (`time.time()`), unless a method is given `now`.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from evq.errors import InvalidStorageURL, OutboxUnsupported, QueueNotFound
from evq.storage import rules
from evq.storage.contract import (
    AttemptRecord,
    Capabilities,
    DeadLetter,
    DeliveryRecord,
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
    WorkerRecord,
)
from evq.storage.memory.store import Store, StoredDelivery, StoredEvent, event_fields

SCHEME = "memory"
CAPABILITIES = Capabilities(wakeup=True, outbox=(), durability=())
_NAME = re.compile(r"[A-Za-z0-9_.-]{0,200}")

# Every queue of this process, by name: what `open_queue` finds again.
_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def queue_name(url: str) -> str:
    """The name in `memory://NAME` (empty for `memory://`); raise `InvalidStorageURL`."""
    scheme, _, name = url.partition("://")
    if scheme.lower() != SCHEME or not _NAME.fullmatch(name):
        raise InvalidStorageURL(
            f"invalid in-memory queue URL {url!r}: use memory:// or memory://NAME"
            " (letters, digits, _ . -)"
        )
    return name


def drop(url: str) -> None:
    """Forget the queue at `url` and everything it holds (handles on it see it empty)."""
    with _stores_lock:
        store = _stores.pop(queue_name(url), None)
    if store is not None:
        with store.lock:
            store.clear()


class MemoryQueue:
    """A handle on an in-memory queue of this process (see the package docstring).
    Thread-safe: every method holds the queue's lock while it runs."""

    backend = "memory"
    capabilities = CAPABILITIES

    def __init__(self, url: str, *, role: Role = "publish", create: bool = True) -> None:
        self.url = url
        name = queue_name(url)
        with _stores_lock:
            store = _stores.get(name)
            if store is None:
                if not create:
                    raise QueueNotFound(f"there is no in-memory queue {url!r} in this process")
                store = _stores[name] = Store(name)
        self._store = store

    @property
    def location(self) -> str:
        """`memory://NAME`: the queue's name in this process."""
        return f"{SCHEME}://{self._store.name}"

    @property
    def source(self) -> str:
        """`evq+memory://NAME`."""
        return "evq+" + self.location

    def check(self) -> None:
        """Nothing can be wrong with a queue in memory."""

    def close(self) -> None:
        """Nothing to release: the queue stays for the other handles (see `drop`)."""

    # Publishing

    def publish(self, events: Sequence[NewEvent], *, now: float | None = None) -> list[str]:
        """Store `events` at once; an idempotency key seen before gives the first id back."""
        store = self._store
        ids = []
        with store.lock:
            for event in events:
                first = None if event.key is None else store.keys.get(event.key)
                if first is not None:
                    ids.append(first)
                    continue
                store.add_event(event)
                ids.append(event.id)
            if events:
                store.wake()
        return ids

    def publish_within(self, connection: Any, events: Sequence[NewEvent]) -> list[str]:
        """An in-memory queue cannot join a database transaction: `OutboxUnsupported`."""
        raise OutboxUnsupported(
            "the in-memory backend cannot publish inside your database transaction:"
            " publish after your commit"
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
        """Record `outcomes`, fan new events out and lease due deliveries, in one step."""
        now = time.time() if now is None else now
        store = self._store
        with store.lock:
            if outcomes:
                self._record(outcomes, owner)
            else:
                next_due = self._next_due(routing.selected)
                if next_due is None or next_due > now:
                    return LeaseBatch([], next_due)
            self._dispatch(routing, now, dispatch_limit)
            leases, dead = self._lease(routing, owner, limit, now)
            return LeaseBatch(leases, None if leases else self._next_due(routing.selected), dead)

    def _dispatch(self, routing: Routing, now: float, limit: int) -> None:
        store = self._store
        for event in list(itertools.islice(store.undispatched.values(), limit)):
            due_at = event.due_at if event.due_at is not None else now
            for receiver in routing.receivers_for(event.new.name):
                store.add_delivery(event, receiver, due_at=due_at, created_at=now, replay=False)
            event.due_at, event.dispatched_at = None, now
            del store.undispatched[event.seq]

    def _lease(
        self, routing: Routing, owner: str, limit: int, now: float
    ) -> tuple[list[Lease], int]:
        store = self._store
        due = store.due(now, limit, routing.selected)
        candidates = [
            rules.Candidate(
                d.id,
                d.receiver,
                d.state,
                d.attempt,
                d.attempt_base,
                d.failures,
                d.event.new.payload,
                len(d.event.new.payload.encode()),
                d,
            )
            for d in due
        ]
        plan = rules.lease_plan(candidates, routing)
        for lost in plan.lost:
            d = lost.fetched
            d.history[d.attempt] = AttemptRecord(
                d.attempt, "lost", d.lease_owner, d.started_at, now, rules.LOST_WORKER_ERROR
            )
        for candidate, reason in plan.dead:
            d = candidate.fetched
            store.move(d, "dead", None)
            d.finished_at, d.last_error, d.lease_owner = now, reason, None
        leases = []
        for candidate, lease_seconds in plan.take:
            d = candidate.fetched
            d.attempt += 1
            store.move(d, "running", now + lease_seconds)
            d.lease_owner, d.started_at = owner, now
            leases.append(
                Lease(
                    delivery_id=d.id,
                    attempt=d.attempt,
                    attempt_base=d.attempt_base,
                    failures=d.failures,
                    receiver=d.receiver,
                    event_id=d.event.id,
                    lease_seconds=lease_seconds,
                    replay=d.replay,
                    **event_fields(Lease, d.event),
                )
            )
        return leases, len(plan.dead)

    def record(self, outcomes: Sequence[Outcome], *, owner: str, now: float | None = None) -> None:
        """Record outcomes of leased attempts, each fenced by its lease."""
        if outcomes:
            with self._store.lock:
                self._record(outcomes, owner)

    def _record(self, outcomes: Sequence[Outcome], owner: str) -> None:
        rules.check_outcomes(outcomes)
        store = self._store
        for o in outcomes:
            if o.started_at is not None:
                store.count(int(o.finished_at), done=o.kind == "done")
            d = store.deliveries.get(o.lease.delivery_id)
            if d is None or d.attempt != o.lease.attempt or d.state != "running":
                continue  # fenced off: a newer attempt owns the delivery
            if o.started_at is not None:
                d.history[d.attempt] = AttemptRecord(
                    d.attempt,
                    rules.history_outcome(o),
                    owner,
                    o.started_at,
                    o.finished_at,
                    o.error,
                )
            d.lease_owner = None
            if o.kind == "release":
                d.attempt -= int(o.started_at is None)
                store.move(d, "pending", o.finished_at)
                continue
            d.finished_at = o.finished_at
            if o.kind == "done":
                store.move(d, "done", None)
                continue
            d.failures += int(o.counts_as_failure)
            d.last_error, d.traceback = o.error, o.traceback
            if o.kind == "retry":
                store.move(d, "pending", o.retry_at)
            else:
                store.move(d, "dead", None)
        store.wake()

    def renew(self, leases: Sequence[tuple[Lease, float]], *, now: float | None = None) -> int:
        """Extend running leases (fenced); return how many were still held."""
        held = 0
        with self._store.lock:
            for lease, until in leases:
                d = self._store.deliveries.get(lease.delivery_id)
                if d is not None and d.attempt == lease.attempt and d.state == "running":
                    self._store.set_due(d, until)
                    held += 1
        return held

    def next_due(self, receivers: frozenset[str] | None = None) -> float | None:
        """When the earliest delivery (to one of `receivers`, if given) or event to fan out
        is due, if any."""
        with self._store.lock:
            return self._next_due(receivers)

    def _next_due(self, receivers: frozenset[str] | None = None) -> float | None:
        store = self._store
        times = [e.new.published_at for e in store.undispatched.values()]
        due = store.next_due(receivers)
        if due is not None:
            times.append(due)
        return min(times, default=None)

    def running_count(self, owner_prefix: str) -> int:
        """How many unexpired leases owners with this prefix hold."""
        now = time.time()
        with self._store.lock:
            return sum(
                1
                for d in self._store.unfinished.values()
                if d.state == "running"
                and d.due_at is not None
                and d.due_at > now
                and (d.lease_owner or "").startswith(owner_prefix)
            )

    def watch(self) -> ChangeWatcher:
        """A watcher woken by every write of this process that may bring new work."""
        return ChangeWatcher(self._store)

    # Workers

    def worker_seen(
        self, worker_id: str, *, hostname: str, pid: int, started_at: float, info: str
    ) -> None:
        """Record that the worker `worker_id` is alive now."""
        with self._store.lock:
            known = self._store.workers.get(worker_id)
            record = WorkerRecord(worker_id, hostname, pid, started_at, time.time(), info)
            if known is not None:
                record = known._replace(seen_at=record.seen_at, info=info)
            self._store.workers[worker_id] = record

    def worker_stopped(self, worker_id: str) -> None:
        """Forget the worker `worker_id`."""
        with self._store.lock:
            self._store.workers.pop(worker_id, None)

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
        with self._store.lock:
            dead = self._store.dead
            found = [dead[i] for i in dict.fromkeys(ids) if i in dead] if ids else dead.values()
            letters = [
                _dead_letter(d)
                for d in found
                if (receiver is None or d.receiver == receiver)
                and (older_than is None or (d.finished_at or 0.0) < older_than)
            ]
        letters.sort(key=lambda letter: (letter.dead_at, int(letter.id)), reverse=True)
        return letters if limit is None else letters[:limit]

    def redrive(self, ids: Sequence[str]) -> int:
        """Put dead letters back in the queue, due now, with a fresh attempt count."""
        now = time.time()
        store = self._store
        with store.lock:
            redriven = [store.dead[i] for i in dict.fromkeys(ids) if i in store.dead]
            for d in redriven:
                store.move(d, "pending", now)
                d.attempt_base, d.failures = d.attempt, 0
                d.lease_owner = d.finished_at = None
            if redriven:
                store.wake()
        return len(redriven)

    def purge(self, ids: Sequence[str]) -> int:
        """Delete dead letters and their history."""
        store = self._store
        with store.lock:
            purged = [store.dead[i] for i in dict.fromkeys(ids) if i in store.dead]
            for d in purged:
                store.remove_delivery(d)
        return len(purged)

    # Inspection

    def status(self, *, now: float | None = None) -> QueueStatus:
        """Counts from the indexes of unfinished and dead deliveries, in one read."""
        now = time.time() if now is None else now
        store = self._store
        with store.lock:
            counts = rules.zero_counts()
            for d in (*store.unfinished.values(), *store.dead.values()):
                counts[rules.user_state(d.state, d.failures, d.due_at, now)] += 1
            since = int(now) - rules.RATE_WINDOW_SECONDS
            recent = [b for s, b in store.stats.items() if since <= s < int(now)]
            seen = now - rules.WORKER_SEEN_WITHIN_SECONDS
            workers = sorted(
                (w for w in store.workers.values() if w.seen_at >= seen),
                key=lambda w: (w.started_at, w.id),
            )
            oldest = self._next_due()
            return QueueStatus(
                time=now,
                published=store.published,
                awaiting_dispatch=len(store.undispatched),
                delayed=sum(
                    1
                    for e in store.undispatched.values()
                    if e.due_at is not None and e.due_at > now
                ),
                pending=counts["pending"],
                scheduled=counts["scheduled"],
                retrying=counts["retrying"],
                running=counts["running"],
                dead=counts["dead"],
                oldest_due_at=oldest if oldest is not None and oldest <= now else None,
                delivered_last_minute=sum(b[0] for b in recent),
                failed_last_minute=sum(b[1] for b in recent),
                workers=workers,
            )

    def finished_per_minute(self, *, minutes: int, now: float | None = None) -> list[MinuteCount]:
        """The deliveries finished in each of the last minutes, from the per-second counts."""
        now = time.time() if now is None else now
        start = (int(now) // 60 - minutes) * 60
        per_minute: dict[int, list[int]] = {}
        with self._store.lock:
            for second, (done, failed) in self._store.stats.items():
                if start <= second <= int(now):
                    counts = per_minute.setdefault(second // 60 * 60, [0, 0])
                    counts[0] += done
                    counts[1] += failed
        return [MinuteCount(float(m), d, f) for m, (d, f) in sorted(per_minute.items())]

    def events(
        self,
        selection: EventSelection | None = None,
        *,
        status: DeliveryState | None = None,
        limit: int | None = 50,
        now: float | None = None,
    ) -> list[EventRecord]:
        """The selected events, newest first, with their delivery counts by state."""
        now = time.time() if now is None else now
        selection = selection or EventSelection()
        found = []
        with self._store.lock:
            for event in sorted(self._store.events.values(), key=_by_id, reverse=True):
                if not _selected(event, selection):
                    continue
                record = _event_record(event, now, with_deliveries=False)
                if status is None or _has_state(record, status, now):
                    found.append(record)
                    if limit is not None and len(found) >= limit:
                        break
        return found

    def event(self, event_id: str, *, now: float | None = None) -> EventRecord | None:
        """One event with every delivery and its attempts, or None."""
        now = time.time() if now is None else now
        with self._store.lock:
            event = self._store.events.get(event_id)
            return None if event is None else _event_record(event, now, with_deliveries=True)

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
        """Create (or count) the replay deliveries of the next batch of dispatched events."""
        store = self._store
        with store.lock:
            batch = [
                e
                for e in sorted(store.events.values(), key=_by_id)
                if e.due_at is None and (after is None or e.id > after) and _selected(e, selection)
            ][:batch_size]
            total = 0
            for event in batch:
                had = [d.receiver for d in event.deliveries]
                for target in rules.replay_receivers(had, receiver):
                    total += 1
                    if not dry_run:
                        store.add_delivery(event, target, due_at=now, created_at=now, replay=True)
            if total and not dry_run:
                store.wake()
        return total, batch[-1].id if len(batch) == batch_size else None

    def prune_step(
        self, older_than: float, *, after: str | None, batch_size: int, dry_run: bool
    ) -> tuple[int, str | None]:
        """Delete (or count) the finished events of the next batch."""
        store = self._store
        with store.lock:
            batch = [
                e
                for e in sorted(store.events.values(), key=_by_id)
                if e.new.published_at < older_than and (after is None or e.id > after)
            ][:batch_size]
            finished = [
                e
                for e in batch
                if rules.is_finished(
                    e.due_at is None and e.dispatched_at is not None,
                    sum(d.state != "done" for d in e.deliveries),
                )
            ]
            if not dry_run:
                for event in finished:
                    store.remove_event(event)
        return len(finished), batch[-1].id if len(batch) == batch_size else None

    def forget_old_statistics(self, *, now: float | None = None) -> None:
        """Delete delivery statistics and heartbeats of workers older than a day."""
        cutoff = (time.time() if now is None else now) - rules.FORGET_SECONDS
        store = self._store
        with store.lock:
            for second in [s for s in store.stats if s < int(cutoff)]:
                del store.stats[second]
            for worker in [w for w in store.workers.values() if w.seen_at < cutoff]:
                del store.workers[worker.id]


class ChangeWatcher:
    """Wakes an idle worker thread of this process when a write may have brought new work."""

    def __init__(self, store: Store) -> None:
        self._store = store
        with store.lock:
            self._seen = store.generation

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a write; tell whether there was one."""
        store = self._store
        with store.changed:
            store.changed.wait_for(lambda: store.generation != self._seen, timeout)
            changed = store.generation != self._seen
            self._seen = store.generation
        return changed

    def close(self) -> None:
        """Nothing to release."""


def _by_id(event: StoredEvent) -> str:
    return event.id


def _selected(event: StoredEvent, selection: EventSelection) -> bool:
    published_at = event.new.published_at
    if selection.since is not None and published_at < selection.since:
        return False
    if selection.until is not None and published_at >= selection.until:
        return False
    if selection.before is not None and event.id >= selection.before:
        return False
    if selection.name is None:
        return True
    from evq.names import matches

    return matches(selection.name, event.new.name)


def _has_state(record: EventRecord, state: DeliveryState, now: float) -> bool:
    if record.due_at is not None:
        return rules.undispatched_state(record.due_at, now) == state
    return record.counts[state] > 0


def _event_record(event: StoredEvent, now: float, *, with_deliveries: bool) -> EventRecord:
    counts = rules.zero_counts()
    for d in event.deliveries:
        counts[rules.user_state(d.state, d.failures, d.due_at, now)] += 1
    deliveries = tuple(
        _delivery_record(d, now) for d in sorted(event.deliveries, key=lambda d: d.number)
    )
    return EventRecord(
        id=event.id,
        due_at=event.due_at,
        dispatched_at=event.dispatched_at,
        status=rules.event_status(event.due_at, counts, now),
        counts=counts,
        deliveries=deliveries if with_deliveries else (),
        **event_fields(EventRecord, event),
    )


def _delivery_record(d: StoredDelivery, now: float) -> DeliveryRecord:
    return DeliveryRecord(
        id=d.id,
        receiver=d.receiver,
        state=rules.user_state(d.state, d.failures, d.due_at, now),
        attempts=d.attempt,
        failures=d.failures,
        replay=d.replay,
        created_at=d.created_at,
        due_at=d.due_at,
        started_at=d.started_at,
        finished_at=d.finished_at,
        worker=d.lease_owner,
        last_error=d.last_error,
        traceback=d.traceback,
        history=tuple(d.history[attempt] for attempt in sorted(d.history)),
    )


def _dead_letter(d: StoredDelivery) -> DeadLetter:
    return DeadLetter(
        id=d.id,
        receiver=d.receiver,
        attempts=d.attempt,
        failures=d.failures,
        dead_at=d.finished_at or 0.0,
        error=d.last_error,
        traceback=d.traceback,
        created_at=d.created_at,
        event_id=d.event.id,
        **event_fields(DeadLetter, d.event),
    )


def _implements_the_contract(queue: MemoryQueue) -> Queue:
    """Never called: mypy checks here that `MemoryQueue` implements `Queue`."""
    return queue
