"""Testing code that publishes and receives events, without a worker process.

With pytest, the `evq_queue` fixture (from the plugin `evq.testing.plugin`, active wherever evq
is installed; `-p no:evq` turns it off) gives each test a queue of its own:

    def test_signing_up_sends_a_welcome_email(evq_queue):
        shop.sign_up("ada@example.com")          # calls evq.publish("user.created", ...)

        evq_queue.assert_published("user.created", payload={"email": "ada@example.com"})
        evq_queue.deliver()                      # runs the receivers, as a worker would
        assert shop.outbox == ["Welcome, ada@example.com"]

Without pytest, `use_queue()` does the same in a `with` block. `evq.publish` in the code under
test goes to that queue while it is in use; `deliver()` runs the due deliveries in this process
through the worker's own code (`evq.delivery.run`, the worker's routing, the same storage
calls), so fan-out, retries and dead letters behave as in production, on a clock the test moves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from evq import config, delivery, publisher
from evq import subscriptions as registry
from evq.errors import InvalidInput, NoSubscriptions
from evq.event import Event, timestamp_to_datetime
from evq.headers import decode_headers
from evq.storage import Queue, open_queue
from evq.storage.contract import (
    DeadLetter,
    EventRecord,
    EventSelection,
    Lease,
    Outcome,
    OutcomeKind,
)
from evq.subscriptions import Subscription

__all__ = ["Attempt", "Clock", "DeliveryFailed", "TestQueue", "use_queue"]

#: What `subscriptions=` takes: subscriptions, or receivers (each with the subscriptions
#: registered for it with `@evq.subscriber` or `evq.subscribe`).
Subscriptions = Sequence[Subscription | Callable[..., Any]]

# Every deliver() stops after this many attempts with work still due: a receiver that
# publishes what it receives would otherwise run for ever.
MAX_ATTEMPTS = 10_000


class Clock:
    """The time a test queue delivers at: the process's clock, plus how far the test moved
    it forward with `advance()`. Events published now are due at once; a retry in 60 s or
    an event delayed by a minute is due after `advance(60)`."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        """The time now, as a Unix timestamp."""
        return time.time() + self.offset

    def advance(self, seconds: float | dt.timedelta, /) -> None:
        """Move the clock forward by `seconds` (a number or a timedelta)."""
        if isinstance(seconds, dt.timedelta):
            seconds = seconds.total_seconds()
        if not seconds >= 0:
            raise InvalidInput(f"a clock only moves forward: got {seconds!r} seconds")
        self.offset += seconds

    def advance_to(self, when: float, /) -> None:
        """Move the clock forward to the Unix time `when`, if it is not there already."""
        self.offset += max(0.0, when - self())


class Attempt(NamedTuple):
    """One delivery attempt that `TestQueue.deliver()` ran: the event as the receiver got it
    (`event.attempt` counts its attempts), the receiver (`module:qualname`), and the outcome:
    `done`, `retry` (due again at `retry_at`) or `dead` (a dead letter), with the receiver's
    error and traceback when it failed."""

    event: Event
    receiver: str
    outcome: OutcomeKind
    error: str | None = None
    traceback: str | None = None
    retry_at: float | None = None

    @property
    def failed(self) -> bool:
        """Whether the receiver failed (or could not be called)."""
        return self.outcome in ("retry", "dead")

    def describe(self) -> str:
        """One line: the event, the receiver, the attempt and what became of it."""
        line = (
            f"{self.event.name} {self.event.id} -> {self.receiver}"
            f" (attempt {self.event.attempt}): {self.outcome}"
        )
        if self.error:
            line += f": {self.error}"
        return line


class DeliveryFailed(Exception):
    """Raised by `TestQueue.deliver()` when a receiver failed: the message names each failed
    attempt and holds the receiver's traceback. Every outcome was recorded first, as a worker
    records it (retries are scheduled, dead letters kept); `attempts` lists them all."""

    def __init__(self, attempts: list[Attempt], dead_lettered: int) -> None:
        self.attempts = attempts
        failed = [a for a in attempts if a.failed]
        lines = [f"{len(failed)} of {len(attempts)} delivery attempts failed:"]
        for failure in failed:
            lines.append("")
            lines.append(failure.describe())
            if failure.traceback:
                lines.append(failure.traceback.rstrip())
        if dead_lettered:
            lines.append("")
            lines.append(
                f"{dead_lettered} deliveries became dead letters without an attempt"
                " (their receiver is not among the test's subscriptions): see dead_letters()"
            )
        super().__init__("\n".join(lines))


class TestQueue:
    """A queue for one test: what was published to it, and its deliveries run on demand.

    `url` is the queue (by default a fresh `memory://` queue of this process);
    `subscriptions` are the ones `deliver()` delivers to (by default, every subscription
    registered in this process once the installed packages' are loaded). `clock` is the time
    deliveries run at; `storage` is the queue itself, for anything else (`status()`,
    `event(id)`).
    """

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, url: str | None = None, *, subscriptions: Subscriptions | None = None):
        self._own_url = url is None
        self.url = f"memory://test-{uuid.uuid4().hex}" if url is None else url
        self.storage: Queue = open_queue(self.url)
        self.storage.check()
        self.clock = Clock()
        self._chosen = None if subscriptions is None else _chosen(subscriptions)
        if self._chosen is None:
            registry.load(entry_points=True)
        self._owner = f"evq.testing/{socket.gethostname()}:{os.getpid()}"

    @property
    def subscriptions(self) -> list[Subscription]:
        """The subscriptions `deliver()` delivers to."""
        return registry.subscriptions() if self._chosen is None else list(self._chosen)

    # What was published

    def published(self, name_pattern: str | None = None) -> list[Event]:
        """The events published to this queue, in the order they were published; with
        `name_pattern` (`order.paid`, `order.*`), only those whose name matches it."""
        if name_pattern is not None:
            from evq.names import validate_pattern

            validate_pattern(name_pattern)
        records = self.storage.events(EventSelection(name=name_pattern), limit=None)
        return [_published_event(record) for record in reversed(records)]

    def assert_published(
        self,
        name_pattern: str,
        /,
        *,
        payload: dict[str, Any] | None = None,
        count: int | None = None,
    ) -> list[Event]:
        """Check that an event matching `name_pattern` (with exactly `payload`, if given) was
        published (exactly `count` such events, if given); return those events. On failure,
        the `AssertionError` lists what was published instead."""
        found = [
            event
            for event in self.published(name_pattern)
            if payload is None or event.payload == payload
        ]
        if (len(found) == count) if count is not None else found:
            return found
        wanted = f"{name_pattern}" + ("" if payload is None else f" with payload {payload!r}")
        expected = f"{count} event(s) {wanted}" if count is not None else f"an event {wanted}"
        raise AssertionError(f"expected {expected}, found {len(found)}; {self._listing()}")

    def assert_not_published(self, name_pattern: str, /) -> None:
        """Check that no event matching `name_pattern` was published."""
        if self.published(name_pattern):
            raise AssertionError(f"expected no event {name_pattern}; {self._listing()}")

    def _listing(self) -> str:
        events = self.published()
        if not events:
            return "nothing was published"
        lines = [f"{len(events)} event(s) were published:"]
        lines += [f"  {event.name} {json.dumps(event.payload)}" for event in events]
        return "\n".join(lines)

    # Deliveries

    def deliver(self, *, skip_delays: bool = False, check: bool = True) -> list[Attempt]:
        """Run every delivery that is due on `clock`, in this process, as a worker would:
        fan each event out to the subscriptions, call the receivers, record each outcome
        (done, a retry after its delay, a dead letter), and go on until nothing is due, the
        events the receivers publish included. Returns the attempts, in the order they ran.

        Retries and delayed events wait for their time on `clock`: `clock.advance(60)` then
        `deliver()` again runs what became due. With `skip_delays`, the clock is moved
        forward to each next due time instead, until nothing is left to run.

        With `check` (the default), a failed attempt raises `DeliveryFailed`, with the
        receiver's traceback, once everything due has run and been recorded. With no
        subscription to deliver to, it raises `NoSubscriptions`, as `evq worker` does.
        """
        from evq.worker import Receivers

        served = self.subscriptions
        if not served:
            # As `evq worker` refuses to: fanning events out to nobody would mark them
            # delivered, and a subscription registered later would never get them.
            raise NoSubscriptions(
                "no subscriptions to deliver to: import the module that subscribes the"
                " receivers (or install its package), or choose them with subscriptions=[...]"
            )
        receivers = Receivers(served, config.DEFAULT_LEASE_SECONDS)
        attempts: list[Attempt] = []
        dead_lettered = 0
        outcomes: list[Outcome] = []
        while True:
            batch = self.storage.lease(
                receivers.routing,
                owner=self._owner,
                limit=config.DEFAULT_PREFETCH,
                outcomes=outcomes,
                now=self.clock(),
            )
            outcomes = []
            dead_lettered += batch.dead_lettered
            if not batch.leases:
                if skip_delays and batch.next_due is not None:
                    self.clock.advance_to(batch.next_due)
                    continue
                break
            if len(attempts) >= MAX_ATTEMPTS:
                self.storage.record(
                    [Outcome(lease, "release", None, self.clock()) for lease in batch.leases],
                    owner=self._owner,
                )
                raise DeliveryFailed(attempts, dead_lettered) from RuntimeError(
                    f"deliver() ran {MAX_ATTEMPTS} attempts and work is still due:"
                    " does a receiver publish the events it receives?"
                )
            for lease in batch.leases:
                outcome = delivery.run(
                    lease, receivers.subscription(lease.receiver), clock=self.clock
                )
                outcomes.append(outcome)
                if outcome.kind == "release":  # Ctrl-C in a receiver: stop the test run
                    self.storage.record(outcomes, owner=self._owner)
                    raise KeyboardInterrupt
                attempts.append(_attempt(lease, outcome))
        if check and (dead_lettered or any(a.failed for a in attempts)):
            raise DeliveryFailed(attempts, dead_lettered)
        return attempts

    def dead_letters(self) -> list[DeadLetter]:
        """The dead letters of this queue, newest first."""
        return self.storage.dead_letters()

    # Lifetime

    def close(self) -> None:
        """Close the queue; a `memory://` queue made for this test is dropped."""
        publisher.forget_queue(self.url)
        self.storage.close()
        if self._own_url:
            from evq.storage.memory import drop

            drop(self.url)


@contextlib.contextmanager
def use_queue(
    url: str | None = None, *, subscriptions: Subscriptions | None = None
) -> Iterator[TestQueue]:
    """Make a `TestQueue` (see its arguments) the queue `evq.publish` publishes to for the
    `with` block; then put the previous settings back and close it."""
    queue = TestQueue(url, subscriptions=subscriptions)
    previous = config.replace_settings(config.current()._replace(url=queue.url))
    try:
        yield queue
    finally:
        config.replace_settings(previous)
        queue.close()


# Private


def _chosen(items: Subscriptions) -> list[Subscription]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InvalidInput("subscriptions must be a list of subscriptions or receivers")
    chosen: list[Subscription] = []
    for item in items:
        if isinstance(item, Subscription):
            chosen.append(item)
            continue
        name = registry.receiver_name(item)
        found = [s for s in registry.subscriptions() if s.name == name]
        if not found:
            raise InvalidInput(
                f"receiver {name} has no subscription: decorate it with @evq.subscriber(...),"
                " or pass the Subscription that evq.subscribe(...) returns"
            )
        chosen.extend(found)
    return chosen


def _published_event(record: EventRecord) -> Event:
    return Event(
        id=record.id,
        name=record.name,
        payload=json.loads(record.payload),
        published_at=timestamp_to_datetime(record.published_at),
        headers=decode_headers(record.headers),
    )


def _attempt(lease: Lease, outcome: Outcome) -> Attempt:
    try:
        payload = json.loads(lease.payload)
    except ValueError:
        payload = {}
    return Attempt(
        event=delivery.event_of(lease, payload),
        receiver=lease.receiver,
        outcome=outcome.kind,
        error=outcome.error,
        traceback=outcome.traceback,
        retry_at=outcome.retry_at,
    )
