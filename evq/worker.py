"""The worker: huey's consumer delivering events from evq's leased queue.

huey runs the worker threads or processes, signals, health checks and its housekeeping thread;
evq changes it only at its seams:

- `LeasedStorage` (the storage class): `dequeue()` takes a *lease* on due deliveries instead of
  deleting them, fanning events out to their receivers in the same transaction. It prefetches a
  few leases per process, keeps them alive from a heartbeat thread, and records outcomes in
  batches together with the next lease.
- `EvqHuey` (the `Huey` subclass): `execute()` runs one attempt and hands its outcome (done,
  retry at a time, dead letter) back to the storage, so that a failure and its retry are one
  write; huey's own retry path would enqueue the retry and delete the task in two.
- `JSONSerializer`: what huey reads and writes is JSON, never pickle.
- `DeliveryConsumer` / `DeliveryWorker` / `Housekeeper`: SIGTERM, SIGINT and SIGHUP are
  graceful and a second one stops at once; leases are given back on shutdown; an idle worker
  wakes within milliseconds of a commit (the queue's watcher) instead of polling every 10 s;
  `--burst`; retention.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from huey import Huey
from huey.constants import WORKER_PROCESS
from huey.consumer import Consumer, ConsumerStopped, ProcessEnvironment, Scheduler, Worker
from huey.registry import Message
from huey.storage import BaseStorage

from evq import config, delivery
from evq.errors import NoSubscriptions, StorageError, StorageFull
from evq.outage import Outage
from evq.serializer import JSONSerializer
from evq.storage import open_queue, rules
from evq.storage.contract import ChangeWatcher, Lease, LeaseBatch, Outcome, Routing
from evq.subscriptions import Subscription, select_receivers, subscriptions

logger = logging.getLogger("evq.worker")

TASK_NAME = "evq.deliver"
# An idle worker sleeps until a commit (the queue's watcher), but wakes this often to notice a
# stop; on a backend that cannot wake it, it looks for work this often.
STOP_CHECK_SECONDS = 0.1
# Each stops a worker gracefully; a second one, any of them, stops it at once. SIGHUP too: a
# worker whose terminal closes gives its leases back rather than dying with them.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Outcomes wait to be written with the next lease, but never longer than this.
FLUSH_SECONDS = 1.0
WORKER_HEARTBEAT_SECONDS = 5.0
# Retention: finished events older than WorkerOptions.retention_seconds are pruned shortly after
# start, then every few minutes, at most PRUNE_MAX_BATCHES transactions of 1000 events at a time
# so that heartbeats go on in between.
PRUNE_FIRST_DELAY_SECONDS = 5.0
PRUNE_INTERVAL_SECONDS = 300.0
PRUNE_MAX_BATCHES = 20
PRUNE_BATCH_SIZE = 1000


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """How `evq worker` runs; see `evq worker --help`."""

    url: str
    workers: int = 1
    worker_type: str = "thread"
    burst: bool = False
    lease_seconds: float = config.DEFAULT_LEASE_SECONDS
    shutdown_timeout: float = config.DEFAULT_SHUTDOWN_TIMEOUT_SECONDS
    # Leased per transaction: fewer transactions, and a slow receiver holds back at most this
    # many others in its process (the rest of the queue stays free for other workers).
    prefetch: int = config.DEFAULT_PREFETCH
    # None keeps every finished event (no automatic pruning).
    retention_seconds: float | None = config.DEFAULT_RETENTION_SECONDS
    # `module:qualname` patterns of the receivers this worker runs; none: every receiver.
    receivers: tuple[str, ...] = ()


class Receivers:
    """The receivers this worker runs: their subscriptions, and the routing the queue needs.

    Events are fanned out to every loaded subscription; with `selected` receivers (`evq
    worker --receiver`), only their deliveries are leased here, and the others are left for
    other workers.
    """

    def __init__(
        self,
        served: Sequence[Subscription],
        lease_seconds: float,
        selected: frozenset[str] | None = None,
    ) -> None:
        self._by_receiver: dict[str, Subscription] = {}
        for subscription in served:
            if selected is None or subscription.name in selected:
                self._by_receiver.setdefault(subscription.name, subscription)
        self.routing = Routing(
            subscriptions=tuple((s.pattern, s.name) for s in served),
            lease_seconds={
                name: lease_of(subscription, lease_seconds)
                for name, subscription in self._by_receiver.items()
            },
            selected=selected,
        )

    @property
    def names(self) -> list[str]:
        """The names of the receivers this worker runs, sorted."""
        return sorted(self._by_receiver)

    def subscription(self, receiver: str) -> Subscription | None:
        """Return the subscription of the receiver named `receiver`, if it is registered."""
        return self._by_receiver.get(receiver)

    def shortest_lease(self, default: float) -> float:
        """The shortest lease among the receivers (`default` if there are none)."""
        return min(self.routing.lease_seconds.values(), default=default)


def lease_of(subscription: Subscription, lease_seconds: float) -> float:
    """How long a lease on a delivery to `subscription` lasts: the worker's lease, or, for a
    receiver with a timeout, a little longer than the timeout."""
    if subscription.timeout is None:
        return lease_seconds
    return subscription.timeout + min(5.0, max(1.0, subscription.timeout))


class LeasedStorage(BaseStorage):  # type: ignore[misc]
    """huey storage whose queue is evq's delivery table, taken by lease.

    One instance lives in each worker process (huey closes it before forking; a child starts
    afresh). Threads of a process share its prefetched leases, so a slow receiver never holds
    up deliveries another thread could run.
    """

    blocking = False
    #: The clock an idle wait reckons its deadline on (`time.time`, the queue's clock for due
    #: times). A test gives one that stands still, so that only a wake-up can end a wait.
    clock: Callable[[], float] = staticmethod(time.time)

    def __init__(self, name: str = "evq", *, options: WorkerOptions, **kwargs: Any) -> None:
        super().__init__(name)
        self.options = options
        self.run_id = uuid.uuid4().hex[:8]
        self.receivers = Receivers(
            subscriptions(), options.lease_seconds, select_receivers(options.receivers)
        )
        self.serializer = JSONSerializer()
        self.task_name = TASK_NAME
        self._creator_pid = os.getpid()
        # Made before any fork, so that process workers share what it records.
        self.outage = Outage(burst=options.burst)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self.queue = open_queue(self.options.url, role="work")
        self.owner = f"{self.run_id}/{socket.gethostname()}:{self._pid}"
        self._lock = threading.Condition()
        self._buffer: collections.deque[Lease] = collections.deque()
        self._running: dict[str, tuple[Lease, float]] = {}
        self._outcomes: list[Outcome] = []
        self._outcomes_since = 0.0
        self._next_due: float | None = None
        self._watcher: ChangeWatcher | None = None
        self._polling = False
        self._heartbeat: threading.Thread | None = None
        self._sizes = _TransactionSizes(self.options.prefetch)

    def in_forked_child(self) -> bool:
        """Tell whether this is a process worker forked by the consumer."""
        return os.getpid() != self._creator_pid

    def _ensure_process(self) -> None:
        if self._pid != os.getpid():
            self._reset()
        if self._heartbeat is not None:
            return
        with self._lock:  # the first threads of a process may get here together
            if self._watcher is None:
                # Before the first lease, so that no commit after it goes unnoticed.
                self._watcher = self._change_watcher()
            if self._heartbeat is None:
                self._heartbeat = threading.Thread(
                    target=self._renew_leases, name="evq-lease-heartbeat", daemon=True
                )
                self._heartbeat.start()

    # huey's storage interface

    def enqueue(self, data: bytes, priority: float | None = None) -> None:
        raise NotImplementedError("evq publishes events with evq.publish(), not huey.enqueue()")

    def dequeue(self) -> bytes | None:
        """Return the next leased delivery as a JSON huey message, or None if nothing is due.
        (huey's interface; `EvqHuey` takes the message itself, with no JSON round trip.)"""
        message = self.dequeue_message()
        return None if message is None else bytes(self.serializer.serialize(message))

    def dequeue_message(self) -> Message | None:
        """Return the next leased delivery as a huey message, or None if nothing is due."""
        self._ensure_process()
        with self._lock:
            if not self._buffer:
                outcomes, self._outcomes = self._outcomes, []
                try:
                    batch = self._lease(outcomes)
                except BaseException as exc:
                    self._keep_or_drop(outcomes, exc)
                    raise
                if outcomes or batch.leases:  # a write committed
                    self.outage.recovered()
                self._buffer.extend(batch.leases)
                self._next_due = batch.next_due
            elif self._outcomes and time.monotonic() - self._outcomes_since > FLUSH_SECONDS:
                # Slow receivers keep the prefetched batch from emptying: write what finished
                # anyway, so that a crash now repeats little and `evq status` stays current.
                outcomes, self._outcomes = self._outcomes, []
                try:
                    self.queue.record(outcomes, owner=self.owner)
                except BaseException as exc:
                    self._keep_or_drop(outcomes, exc)
                    raise
                self.outage.recovered()
            if not self._buffer:
                return None
            lease = self._buffer.popleft()
            self._running[lease.delivery_id] = (lease, time.time())
        message = Message(
            id=f"{lease.delivery_id}.{lease.attempt}",
            name=self.task_name,
            args=(),
            kwargs=lease._asdict(),
        )
        try:
            _check_json_values(lease)
        except (TypeError, ValueError) as exc:
            # A damaged row (a publish time that is not a number, ...): a dead letter, never a
            # lease held and renewed by the heartbeat for ever.
            self.finished(delivery.undeliverable(lease, exc))
            return None
        return message

    def _keep_or_drop(self, outcomes: list[Outcome], exc: BaseException) -> None:
        """After a failed write: keep the outcomes for the next try if the file was busy or
        unwritable for a while; drop them if they themselves cannot be written, so that one
        bad outcome cannot stop the process (their deliveries run again: a duplicate, not a
        loss)."""
        if isinstance(exc, StorageError | KeyboardInterrupt):
            self._outcomes[:0] = outcomes
        elif outcomes:
            logger.error(
                "could not record %d outcomes (%s); their deliveries will run again",
                len(outcomes),
                exc,
            )

    def _lease(self, outcomes: list[Outcome]) -> LeaseBatch:
        try:
            batch = self.queue.lease(
                self.receivers.routing,
                owner=self.owner,
                limit=self._sizes.leases,
                outcomes=outcomes,
                dispatch_limit=self._sizes.dispatch,
            )
        except StorageFull:
            self._sizes.shrink()
            raise
        self._sizes.grow()
        if batch.dead_lettered:
            logger.warning(
                "%d deliveries became dead letters (see `evq dlq list`)", batch.dead_lettered
            )
        return batch

    def queue_size(self) -> int:
        return len(self._buffer)

    def close(self) -> bool:
        # huey closes the storage before it forks process workers, and evq when the run is
        # over: no thread of this process is waiting on the watcher then.
        with self._lock:
            if self._watcher is not None:
                self._watcher.close()
                self._watcher = None
            self.queue.close()
        return True

    # evq's additions

    def finished(self, outcome: Outcome) -> None:
        """Take the outcome of a leased attempt. It is written with the next lease, which the
        same thread asks for next: one transaction records a batch and takes the next one."""
        with self._lock:
            self._running.pop(outcome.lease.delivery_id, None)
            if not self._outcomes:
                self._outcomes_since = time.monotonic()
            self._outcomes.append(outcome)

    def wait_for_work(self, stop_flag: Any, max_wait: float = 1.0) -> None:
        """Sleep until another connection commits, the next delivery is due, or `max_wait`."""
        deadline = self.clock() + max_wait
        if self._next_due is not None:
            deadline = min(deadline, self._next_due)
        with self._lock:
            if self._polling:
                # Another thread of this process watches the file; it wakes us.
                self._lock.wait(max(0.0, min(deadline - self.clock(), 0.1)))
                return
            self._polling = True
        try:
            watcher = self._change_watcher()
            while not stop_flag.is_set():
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return
                # Wake at least every STOP_CHECK_SECONDS to notice a stop (and, without a
                # watcher, to look for work).
                if watcher is None:
                    stop_flag.wait(min(remaining, STOP_CHECK_SECONDS))
                    return
                if watcher.wait(min(remaining, STOP_CHECK_SECONDS)):
                    return
        finally:
            with self._lock:
                self._polling = False
                self._lock.notify_all()

    def _change_watcher(self) -> ChangeWatcher | None:
        if self._watcher is None and self.queue.capabilities.wakeup:
            self._watcher = self.queue.watch()
        return self._watcher

    def release_unstarted(self) -> None:
        """Give back prefetched leases that never started, and write pending outcomes."""
        now = time.time()
        with self._lock:
            unstarted = [Outcome(lease, "release", None, now) for lease in self._buffer]
            self._buffer.clear()
            outcomes, self._outcomes = self._outcomes + unstarted, []
        self._record_quietly(outcomes)

    def release_running(self) -> None:
        """Give back the leases of attempts still running, so another worker takes them now."""
        now = time.time()
        with self._lock:
            running = [
                Outcome(lease, "release", started, now) for lease, started in self._running.values()
            ]
            self._running.clear()
        self._record_quietly(running)

    def burst_finished(self) -> bool:
        """Tell whether nothing is due, prefetched, or running in this worker run."""
        with self._lock:
            if self._buffer or self._running or self._outcomes:
                return False
        next_due = self.queue.next_due(self.receivers.routing.selected)
        if next_due is not None and next_due <= time.time():
            return False
        return self.queue.running_count(self.run_id) == 0

    def _record_quietly(self, outcomes: list[Outcome]) -> None:
        try:
            self.queue.record(outcomes, owner=self.owner)
        except StorageError as exc:  # stopping anyway: the leases expire, and run again
            logger.error("could not give back %d leases (%s); they will expire", len(outcomes), exc)
        except Exception:
            logger.exception("could not give back %d leases; they will expire", len(outcomes))

    def _renew_leases(self) -> None:
        lease = self.receivers.shortest_lease(self.options.lease_seconds)
        interval = max(0.2, min(self.options.lease_seconds, lease) / 3)
        while True:
            time.sleep(interval)
            now = time.time()
            with self._lock:
                # Finished attempts too: their outcome is written with the next lease, after
                # the rest of the batch, and their delivery must not be run again meanwhile.
                held = [
                    *self._buffer,
                    *(lease for lease, _ in self._running.values()),
                    *(outcome.lease for outcome in self._outcomes),
                ]
            try:
                if self.queue.renew([(lease, now + lease.lease_seconds) for lease in held]):
                    self.outage.recovered()
            except StorageError as exc:
                self.outage.failed(exc, None)  # logged once per outage; the threads retry too
            except Exception:
                # Never let the heartbeat die: without it, long receivers would run twice.
                logger.exception("could not renew leases")


_JSON_VALUES = frozenset({str, int, bool, type(None)})


def _check_json_values(lease: Lease) -> None:
    """Raise as `json.dumps` would if a value of `lease` (from a damaged row) cannot travel
    in a huey message as JSON, without building the JSON."""
    for value in lease:
        if type(value) is float:
            if not math.isfinite(value):
                raise ValueError("Out of range float values are not JSON compliant")
        elif type(value) not in _JSON_VALUES:
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class _TransactionSizes:
    """How much one lease transaction may write: halved each time the storage is full, so
    that a worker makes progress with little free space (down to one event and one delivery
    a transaction), and doubled back after each success."""

    DISPATCH = 256  # events fanned out per lease, at most

    def __init__(self, prefetch: int) -> None:
        self._prefetch = prefetch
        self.leases = prefetch
        self.dispatch = self.DISPATCH

    def shrink(self) -> None:
        self.leases = max(1, self.leases // 2)
        self.dispatch = max(1, self.dispatch // 2)

    def grow(self) -> None:
        # Both, until each is back: a prefetch above DISPATCH has more halvings to undo.
        if self.dispatch < self.DISPATCH or self.leases < self._prefetch:
            self.leases = min(self._prefetch, self.leases * 2)
            self.dispatch = min(self.DISPATCH, self.dispatch * 2)


class EvqHuey(Huey):  # type: ignore[misc]
    """huey whose storage is evq's leased queue and whose execute() records outcomes."""

    storage: LeasedStorage

    def __init__(self, options: WorkerOptions) -> None:
        super().__init__(
            name="evq",
            results=False,
            serializer=JSONSerializer(),
            storage_class=LeasedStorage,
            options=options,
        )
        wrapper = self.task(name=TASK_NAME)(_deliver)
        self.storage.task_name = self._registry.task_to_string(wrapper.task_class)
        # Called with each outcome, in the thread (or forked process) that ran the attempt:
        # metrics, for one. Add them before `run()` forks process workers.
        self.outcome_listeners: list[Callable[[Outcome], None]] = []

    def dequeue(self) -> Any:
        """The next leased delivery as a huey task, built from the storage's message as it
        is: serializing it to JSON and back cost a tenth of a worker's time per delivery."""
        message = self.storage.dequeue_message()
        return None if message is None else self._registry.create_task(message)

    def execute(self, task: Any, timestamp: Any = None) -> None:
        """Run one leased attempt and hand its outcome to the storage."""
        lease = Lease(**task.kwargs)
        subscription = self.storage.receivers.subscription(lease.receiver)
        self._tasks_in_flight.add(task)
        try:
            outcome = delivery.run(lease, subscription)
        finally:
            self._tasks_in_flight.discard(task)
        self.storage.finished(outcome)
        _log_outcome(outcome)
        for listener in self.outcome_listeners:
            listener(outcome)


def _deliver(**kwargs: Any) -> None:  # pragma: no cover - EvqHuey.execute runs deliveries
    """huey's task entry for deliveries; registered so huey can build the task from JSON."""


class DeliveryWorker(Worker):  # type: ignore[misc]
    """huey worker that sleeps until there is work (not for up to 10 s) and gives its leases
    back when it stops."""

    huey: EvqHuey
    #: Attempts run, by this worker's thread alone; a process worker counts into its slot of
    #: `counts` instead, memory its consumer shares with the processes it forks.
    delivered = 0
    counts: Any = None
    slot = 0

    def loop(self, now: Any = None) -> None:
        """Take the next delivery and run it; ride out a queue that fails for a while."""
        storage = self.huey.storage
        try:
            task = self.huey.dequeue()
        except StorageError as exc:
            self.stop_flag.wait(storage.outage.failed(exc, self.stop_flag))
            return
        except Exception:  # a bug of evq's: huey's own handling (a traceback, then a pause)
            self._logger.exception("Error reading from queue")
            self.stop_flag.wait(1.0)
            return
        if task is None:
            self.sleep()
            return
        try:
            self.huey.execute(task, now)
        except Exception:
            self._logger.exception("Unhandled error during execution of task %s.", task.id)
        if self.counts is None:
            self.delivered += 1
        else:  # one writer per slot: no lock, none left held by a killed process either
            self.counts[self.slot] += 1

    def sleep(self) -> None:
        storage = self.huey.storage
        try:
            if storage.options.burst and storage.burst_finished():
                self.stop_flag.set()
                return
        except StorageError as exc:
            self.stop_flag.wait(storage.outage.failed(exc, self.stop_flag))
            return
        storage.wait_for_work(self.stop_flag)

    def shutdown(self) -> None:
        storage = self.huey.storage
        storage.release_unstarted()
        if storage.in_forked_child():
            # A process worker's only thread is this one: whatever it still holds as running
            # was interrupted, and goes back now rather than when its lease expires.
            storage.release_running()
        super().shutdown()


class Housekeeper(Scheduler):  # type: ignore[misc]
    """huey's scheduler thread, which evq uses to record that the worker is alive."""

    huey: EvqHuey

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._started_at = time.time()
        self._next_heartbeat = 0.0
        self._next_prune = time.monotonic() + PRUNE_FIRST_DELAY_SECONDS
        self._prune_after: str | None = None

    def loop(self, now: Any = None) -> None:
        if time.monotonic() >= self._next_heartbeat:
            self._next_heartbeat = time.monotonic() + WORKER_HEARTBEAT_SECONDS
            storage = self.huey.storage
            info = json.dumps(
                {
                    "workers": storage.options.workers,
                    "worker_type": storage.options.worker_type,
                    "receivers": storage.receivers.names,
                }
            )
            try:
                storage.queue.worker_seen(
                    storage.run_id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=self._started_at,
                    info=info,
                )
            except StorageError as exc:
                storage.outage.failed(exc, self.stop_flag)
            else:
                storage.outage.recovered()
        if time.monotonic() >= self._next_prune:
            self._prune()
        self.stop_flag.wait(1.0)

    def _prune(self) -> None:
        """Delete finished events older than the retention period, a bounded amount at a time."""
        self._next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
        retention = self.huey.storage.options.retention_seconds
        if retention is None:
            return
        queue = self.huey.storage.queue
        try:
            pruned, self._prune_after = rules.prune_steps(
                queue,
                time.time() - retention,
                after=self._prune_after,
                batch_size=PRUNE_BATCH_SIZE,
                max_batches=PRUNE_MAX_BATCHES,
            )
            if self._prune_after is None:
                queue.forget_old_statistics()
        except StorageError as exc:
            self.huey.storage.outage.failed(exc, self.stop_flag)
            return
        if pruned:
            logger.info("pruned %d finished events older than the retention period", pruned)
        if self._prune_after is not None:
            # The walk is not done: go on in a second (deliveries run in between), from where
            # it stopped, rather than in five minutes from the start of the log again.
            self._next_prune = time.monotonic()


class _ProcessEnvironment(ProcessEnvironment):  # type: ignore[misc]
    # Children ignore SIGINT and SIGTERM (a terminal's Ctrl-C and systemd's stop reach the whole
    # process group): the parent alone decides, and interrupts a child with SIGUSR1.
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._parent_pid = os.getpid()

    def init_child(self, process: Any) -> None:
        super().init_child(process)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threading.Thread(
            target=_stop_when_orphaned,
            args=(self._parent_pid, process.stop_flag),
            name="evq-parent-watch",
            daemon=True,
        ).start()


def _stop_when_orphaned(parent_pid: int, stop_flag: Any) -> None:
    # A child ignores SIGTERM and SIGINT, so if its parent is killed (SIGKILL, the OOM killer)
    # nothing would ever stop it: it would go on taking deliveries unsupervised. Stop as the
    # parent would have: finish the running receiver and give the prefetched leases back.
    while not stop_flag.wait(0.5):
        if os.getppid() != parent_pid:
            stop_flag.set()
            return


class DeliveryConsumer(Consumer):  # type: ignore[misc]
    """huey's consumer with evq's worker, housekeeping and shutdown."""

    worker_class = DeliveryWorker
    scheduler_class = Housekeeper
    huey: EvqHuey

    _previous_handlers: dict[int, Any] = {}  # noqa: RUF012 - replaced per instance
    _counts: Any = None

    @property
    def delivered(self) -> int:
        """How many attempts the workers ran, in all their threads or processes."""
        if self._counts is not None:
            return sum(self._counts)
        return sum(worker.delivered for worker, _ in getattr(self, "worker_threads", ()))

    def _create_worker(self) -> DeliveryWorker:
        worker: DeliveryWorker = super()._create_worker()
        if self.worker_type == WORKER_PROCESS:
            if self._counts is None:  # made before the processes are forked
                self._counts = multiprocessing.get_context("fork").RawArray("q", self.workers)
            worker.counts, worker.slot = self._counts, len(self.worker_threads)
        return worker

    def get_environment(self, worker_type: str) -> Any:
        if worker_type == WORKER_PROCESS:
            return _ProcessEnvironment(signal.SIGINT, signal.SIGUSR1)
        return super().get_environment(worker_type)

    def _set_signal_handlers(self) -> None:
        self._previous_handlers = {
            signum: signal.signal(signum, self._graceful_stop) for signum in STOP_SIGNALS
        }

    def _graceful_stop(self, signum: int, frame: Any) -> None:
        self._signum = signum
        self._restart, self._graceful = False, True
        for other in STOP_SIGNALS:
            # A second signal, either one, stops at once.
            signal.signal(other, signal.default_int_handler)

    def stop(self, graceful: bool = False) -> None:
        super().stop(graceful=graceful)
        # Attempts still running after the shutdown timeout go back to the queue now rather
        # than when their lease expires. (Process workers give theirs back themselves.)
        self.huey.storage.release_running()

    def run(self) -> None:
        """Deliver until a signal (or, with --burst, until nothing is left that is due)."""
        self.start()
        try:
            health_check_ts = time.monotonic()
            while True:
                try:
                    health_check_ts = self.loop(health_check_ts)
                except ConsumerStopped:
                    break
            if self._signum is None:
                # --burst: the workers set the stop flag themselves when nothing was left to do.
                self._join_workers()
            self.huey.storage.release_unstarted()
            with contextlib.suppress(StorageError):
                self.huey.storage.queue.worker_stopped(self.huey.storage.run_id)
            self.huey.storage.outage.ended()
            self.huey.storage.close()
        finally:
            # A process that runs a consumer (a test, an application) gets its handlers back.
            for signum, handler in self._previous_handlers.items():
                signal.signal(signum, handler)


def create_consumer(options: WorkerOptions) -> DeliveryConsumer:
    """Return a consumer ready to `run()` the deliveries of the subscriptions loaded here."""
    if not subscriptions():
        # Dispatching to nobody would mark every event delivered: refuse instead.
        raise NoSubscriptions(
            "no subscriptions loaded: install a package with evq.subscriptions entry points,"
            " or name a module with --app / EVQ_APP"
        )
    huey = EvqHuey(options)
    return DeliveryConsumer(
        huey,
        workers=options.workers,
        worker_type=options.worker_type,
        periodic=False,
        shutdown_timeout=options.shutdown_timeout,
        check_worker_health=True,
    )


def _log_outcome(outcome: Outcome) -> None:
    lease = outcome.lease
    took = ""
    if outcome.started_at is not None:
        took = f" in {(outcome.finished_at - outcome.started_at) * 1000:.1f} ms"
    where = f"{lease.name} {lease.event_id} -> {lease.receiver} (attempt {lease.attempt})"
    extra = {"delivery": delivery_fields(outcome)}  # for --log-format json
    if outcome.kind == "done":
        logger.info("done     %s%s", where, took, extra=extra)
    elif outcome.kind == "retry":
        wait = (outcome.retry_at or outcome.finished_at) - outcome.finished_at
        logger.warning(
            "retry    %s%s: %s; next attempt in %.1f s",
            where,
            took,
            outcome.error,
            wait,
            extra=extra,
        )
    elif outcome.kind == "dead":
        logger.error("dead     %s%s: %s", where, took, outcome.error, extra=extra)
    else:
        logger.warning("released %s: the worker is stopping", where, extra=extra)


def delivery_fields(outcome: Outcome) -> dict[str, Any]:
    """Return the fields of an outcome that a structured log line carries (`evq worker
    --log-format json`): the event, the receiver, the attempt, its duration and error."""
    lease = outcome.lease
    fields: dict[str, Any] = {
        "outcome": outcome.kind,
        "event_id": lease.event_id,
        "event_name": lease.name,
        "receiver": lease.receiver,
        "delivery_id": lease.delivery_id,
        "attempt": lease.attempt,
    }
    if outcome.started_at is not None:
        fields["duration_seconds"] = round(outcome.finished_at - outcome.started_at, 6)
    if outcome.retry_at is not None:
        fields["retry_in_seconds"] = round(max(0.0, outcome.retry_at - outcome.finished_at), 3)
    if outcome.error is not None:
        fields["error"] = outcome.error
    if outcome.traceback is not None:
        fields["traceback"] = outcome.traceback
    return fields
