"""What a `memory://` queue holds: its events, deliveries, attempts, statistics and workers,
as Python objects behind one lock, with the indexes the contract's reads need (events not
fanned out yet, unfinished deliveries, dead letters).

An event keeps the `NewEvent` it was published as, whole: a field added to `NewEvent` (and to
the records that show it) is carried through without a change here (see `event_fields`).
"""

from __future__ import annotations

import dataclasses
import heapq
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from evq.storage.contract import AttemptRecord, NewEvent, StoredState, WorkerRecord

T = TypeVar("T")


@dataclasses.dataclass(slots=True, eq=False)
class StoredEvent:
    """A published event: as published, plus where it is in the log and its deliveries."""

    seq: int
    new: NewEvent
    # When the event is due to be fanned out (its delay's end); None once it was.
    due_at: float | None
    dispatched_at: float | None = None
    deliveries: list[StoredDelivery] = dataclasses.field(default_factory=list)

    @property
    def id(self) -> str:
        return self.new.id


@dataclasses.dataclass(slots=True, eq=False)
class StoredDelivery:
    """One delivery of an event to a receiver, with its history of attempts."""

    number: int
    event: StoredEvent
    receiver: str
    state: StoredState
    # When a pending delivery may run, or a running one's lease expires; None once finished.
    due_at: float | None
    created_at: float
    replay: bool = False
    attempt: int = 0
    attempt_base: int = 0
    failures: int = 0
    lease_owner: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    last_error: str | None = None
    traceback: str | None = None
    history: dict[int, AttemptRecord] = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.number)


_DueEntry = tuple[float, int, int, StoredDelivery]


class Store:
    """One in-memory queue. Every read and write holds `lock`: each contract method is one
    atomic step, as a transaction is on the other backends."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.RLock()
        # Notified after every write that may bring new work (see `ChangeWatcher`).
        self.changed = threading.Condition(self.lock)
        self.generation = 0
        with self.lock:
            self.clear()

    def clear(self) -> None:
        """Forget everything the queue holds (the caller holds the lock)."""
        self.events: dict[str, StoredEvent] = {}
        self.keys: dict[str, str] = {}
        self.undispatched: dict[int, StoredEvent] = {}  # by seq: publish order
        self.deliveries: dict[str, StoredDelivery] = {}
        self.unfinished: dict[str, StoredDelivery] = {}  # pending and running
        # (due_at, number, push, delivery) of unfinished deliveries, earliest first (`push`
        # tells apart two entries of one delivery). An entry whose delivery has since moved on
        # (another due time, finished) is stale: `due()` and `next_due()` drop it.
        self.due_heap: list[_DueEntry] = []
        self._pushes = 0
        self.dead: dict[str, StoredDelivery] = {}
        self.stats: dict[int, list[int]] = {}  # second -> [done, failed]
        self.workers: dict[str, WorkerRecord] = {}
        self.published = 0
        self._next_seq = 0
        self._next_delivery = 0
        self.wake()

    def add_event(self, new: NewEvent) -> StoredEvent:
        self._next_seq += 1
        event = StoredEvent(seq=self._next_seq, new=new, due_at=new.due_at)
        self.events[new.id] = event
        self.undispatched[event.seq] = event
        if new.key is not None:
            self.keys[new.key] = new.id
        self.published += 1
        return event

    def add_delivery(
        self, event: StoredEvent, receiver: str, *, due_at: float, created_at: float, replay: bool
    ) -> StoredDelivery:
        self._next_delivery += 1
        delivery = StoredDelivery(
            number=self._next_delivery,
            event=event,
            receiver=receiver,
            state="pending",
            due_at=due_at,
            created_at=created_at,
            replay=replay,
        )
        self.deliveries[delivery.id] = delivery
        self.unfinished[delivery.id] = delivery
        self._push(due_at, delivery)
        event.deliveries.append(delivery)
        return delivery

    def move(self, delivery: StoredDelivery, state: StoredState, due_at: float | None) -> None:
        """Put `delivery` in `state`, keeping the indexes of unfinished and dead ones."""
        delivery.state = state
        key = delivery.id
        if state in ("pending", "running"):
            self.unfinished[key] = delivery
            assert due_at is not None
            self.set_due(delivery, due_at)
        else:
            delivery.due_at = None
            self.unfinished.pop(key, None)
        if state == "dead":
            self.dead[key] = delivery
        else:
            self.dead.pop(key, None)

    def set_due(self, delivery: StoredDelivery, due_at: float) -> None:
        """Make an unfinished delivery due (or its lease expire) at `due_at`."""
        if delivery.due_at != due_at or delivery.due_at is None:
            delivery.due_at = due_at
            self._push(due_at, delivery)

    def _push(self, due_at: float, delivery: StoredDelivery) -> None:
        self._pushes += 1
        heapq.heappush(self.due_heap, (due_at, delivery.number, self._pushes, delivery))

    def due(self, now: float, limit: int) -> list[StoredDelivery]:
        """The first `limit` unfinished deliveries due at `now`, earliest first (by due
        time, then by when they were made), without taking them off the heap."""
        found: list[StoredDelivery] = []
        heap = self.due_heap
        kept: list[_DueEntry] = []
        while heap and len(found) < limit and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            delivery = entry[3]
            if self._current(entry) and delivery not in found:
                found.append(delivery)
                kept.append(entry)
        for entry in kept:
            heapq.heappush(heap, entry)
        return found

    def next_due(self) -> float | None:
        """When the earliest unfinished delivery is due, dropping stale entries on the way."""
        heap = self.due_heap
        while heap and not self._current(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _current(self, entry: _DueEntry) -> bool:
        due_at, _, _, delivery = entry
        return delivery.due_at == due_at and self.unfinished.get(delivery.id) is delivery

    def remove_delivery(self, delivery: StoredDelivery) -> None:
        for index in (self.deliveries, self.unfinished, self.dead):
            index.pop(delivery.id, None)
        if delivery in delivery.event.deliveries:
            delivery.event.deliveries.remove(delivery)

    def remove_event(self, event: StoredEvent) -> None:
        for delivery in list(event.deliveries):
            self.remove_delivery(delivery)
        self.events.pop(event.id, None)
        self.undispatched.pop(event.seq, None)
        key = event.new.key
        if key is not None and self.keys.get(key) == event.id:
            del self.keys[key]

    def count(self, second: int, *, done: bool) -> None:
        bucket = self.stats.setdefault(second, [0, 0])
        bucket[0 if done else 1] += 1

    def wake(self) -> None:
        """Tell watchers that there may be new work (the caller holds the lock)."""
        self.generation += 1
        self.changed.notify_all()


# The fields a record takes from the event as it was published, under the same name: the
# event's name and payload, its time, and whatever is added to `NewEvent` later.
_NOT_COPIED = frozenset({"id", "due_at"})


def event_fields(record: Callable[..., T], event: StoredEvent) -> dict[str, Any]:
    """The keyword arguments of the record type `record` that `event` fills as published."""
    fields: Iterable[str] = getattr(record, "_fields", ())
    new = event.new
    return {
        field: getattr(new, field)
        for field in fields
        if field not in _NOT_COPIED and field in new._fields
    }
