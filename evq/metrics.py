"""Prometheus metrics: a worker's deliveries and its queue's depth, for
`evq worker --metrics-port` and `evq status --format prometheus`.

prometheus-client (the `prometheus` extra) writes the text format and serves it; this module is
imported only when one of those options is used, so nothing else pays for it.

- Deliveries: counted by the process that runs them. Threads update the counters directly; a
  forked process worker (`--worker-type process`) writes one short JSON line per outcome to a
  pipe made before the fork, which a thread of the parent, the process that serves the
  metrics, adds to its counters. So every worker type reports from one place, and the
  application's own use of prometheus-client is left alone (no multiprocess mode to switch on).
- The queue: `Queue.status()`, which reads counters and indexes only (instant with millions of
  events stored), and the run's held leases, read at most once per `QUEUE_READ_SECONDS`
  however often Prometheus scrapes.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from evq.errors import EvqError, MetricsPortUnavailable, MissingExtra
from evq.storage.contract import Outcome, QueueStatus

if TYPE_CHECKING:
    from evq.worker import EvqHuey

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import CollectorRegistry
except ImportError:  # pragma: no cover - tested in a subprocess without the package
    raise MissingExtra(
        "Prometheus metrics need prometheus-client: pip install 'evq[prometheus]'"
    ) from None

# Read the queue at most this often, however many scrapers ask.
QUEUE_READ_SECONDS = 5.0
# Attempt durations, from a few milliseconds to the longest receivers' minutes.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# The outcome label of each kind of outcome a worker counts (a delivery given back because the
# worker stops is none of them: it will run again).
OUTCOME_LABELS = {"done": "done", "retry": "retried", "dead": "dead"}
DELIVERY_STATES = ("pending", "scheduled", "running", "retrying", "dead")
# A line of up to 4096 bytes (PIPE_BUF) written to a pipe arrives whole, never interleaved with
# another process's: a receiver name longer than this (6 bytes a character at most, escaped)
# is cut.
_MAX_RECEIVER_CHARS = 600


def queue_metrics(snapshot: QueueStatus) -> list[Metric]:
    """Return the queue-level gauges of a status snapshot."""
    deliveries = GaugeMetricFamily(
        "evq_queue_deliveries",
        "Deliveries in the queue by state (pending: due; scheduled: waiting for their time;"
        " running: leased; retrying: waiting after a failed attempt; dead: dead letters).",
        labels=["state"],
    )
    for state in DELIVERY_STATES:
        deliveries.add_metric([state], getattr(snapshot, state))
    age = (
        0.0 if snapshot.oldest_due_at is None else max(0.0, snapshot.time - snapshot.oldest_due_at)
    )
    return [
        deliveries,
        GaugeMetricFamily(
            "evq_queue_events_awaiting_dispatch",
            "Events no worker has fanned out to their receivers yet (delayed ones included).",
            value=snapshot.awaiting_dispatch,
        ),
        GaugeMetricFamily(
            "evq_queue_events_delayed",
            "Events awaiting dispatch whose publish delay has not ended.",
            value=snapshot.delayed,
        ),
        CounterMetricFamily(
            "evq_events_published",
            "Events ever published to the queue, pruned ones included.",
            value=snapshot.published,
        ),
        GaugeMetricFamily(
            "evq_oldest_waiting_seconds",
            "How long the delivery (or event not fanned out yet) that has waited longest for a"
            " worker has waited; 0 when nothing is waiting.",
            value=age,
        ),
        GaugeMetricFamily(
            "evq_workers_seen",
            "Workers that recorded a heartbeat in the last 30 seconds.",
            value=len(snapshot.workers),
        ),
    ]


def exposition(metrics: Iterable[Metric]) -> str:
    """Return `metrics` in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(metrics)))
    return prometheus_client.generate_latest(registry).decode("utf-8")


class WorkerMetrics:
    """The metrics of one `evq worker` run: made before the consumer forks, served from the
    process that started it (`serve`), fed by `record` in every thread and process."""

    def __init__(self, *, url: str) -> None:
        self._parent_pid = os.getpid()
        self._deliveries = prometheus_client.Counter(
            "evq_deliveries",
            "Delivery attempts finished by this worker, by receiver and outcome (done,"
            " retried: failed and scheduled again, dead: became a dead letter).",
            ["receiver", "outcome"],
            registry=None,
        )
        self._durations = prometheus_client.Histogram(
            "evq_delivery_duration_seconds",
            "How long receivers ran, per attempt, by receiver.",
            ["receiver"],
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self._counters: dict[tuple[str, str], Any] = {}
        self._histograms: dict[str, Any] = {}
        self._started_at = time.time()
        self._info: dict[str, str] = {}
        self._queue = _QueueReader(url)
        self._server: Any = None
        self._registry: CollectorRegistry | None = None
        self._read_fd, self._write_fd = os.pipe()
        threading.Thread(target=self._receive, name="evq-metrics-pipe", daemon=True).start()
        _LIVE.add(self)

    def attach(self, huey: EvqHuey) -> None:
        """Count the outcomes of `huey`'s deliveries, and the leases of its run; call it
        before the consumer forks process workers."""
        from evq import __version__

        storage = huey.storage
        receivers = sorted(storage.receivers.routing.lease_seconds)  # the receivers it runs
        for receiver in receivers:  # zeros from the start, so that rate() sees the first one
            self._durations.labels(receiver)
            for outcome in OUTCOME_LABELS.values():
                self._deliveries.labels(receiver, outcome)
        self._info = {
            "version": __version__,
            "worker_type": storage.options.worker_type,
            "workers": str(storage.options.workers),
        }
        self._queue.run_id = storage.run_id
        huey.outcome_listeners.append(self.record)

    def record(self, outcome: Outcome) -> None:
        """Count a finished attempt (an outcome listener of the worker)."""
        label = OUTCOME_LABELS.get(outcome.kind)
        if label is None:
            return
        receiver = outcome.lease.receiver[:_MAX_RECEIVER_CHARS]
        took = None
        if outcome.started_at is not None:
            took = max(0.0, outcome.finished_at - outcome.started_at)
        if os.getpid() == self._parent_pid:
            self._count(receiver, label, took)
            return
        line = json.dumps({"r": receiver, "o": label, "d": took}).encode() + b"\n"
        with contextlib.suppress(OSError):  # the parent is gone: this process stops too
            os.write(self._write_fd, line)

    def serve(self, port: int, *, registry: CollectorRegistry | None = None) -> None:
        """Serve these metrics (and the registry's others: the process's, the application's)
        over HTTP on every interface, from a thread of this process."""
        registry = prometheus_client.REGISTRY if registry is None else registry
        registry.register(self)
        self._registry = registry
        try:
            self._server, _thread = prometheus_client.start_http_server(port, registry=registry)
        except OSError as exc:
            registry.unregister(self)
            self._registry = None
            raise MetricsPortUnavailable(
                f"cannot serve metrics on port {port}: {exc.strerror or exc}"
            ) from None

    def close(self) -> None:
        """Stop serving, and forget the registry."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._registry is not None:
            self._registry.unregister(self)
            self._registry = None
        self._queue.close()
        _LIVE.discard(self)
        if self._write_fd >= 0:
            # The reader sees the end of the pipe once every process worker has exited too.
            os.close(self._write_fd)
            self._write_fd = -1

    def describe(self) -> Iterable[Metric]:
        # Nothing: the queue is read at scrape time only, never at registration.
        return []

    def collect(self) -> Iterable[Metric]:
        """Return every metric of the run, reading the queue if the last read is old."""
        yield from self._deliveries.collect()
        yield from self._durations.collect()
        yield GaugeMetricFamily(
            "evq_worker_start_time_seconds",
            "When this worker started, in seconds since the Unix epoch.",
            value=self._started_at,
        )
        if self._info:
            info = GaugeMetricFamily(
                "evq_worker_info",
                "This worker's evq version and settings (always 1).",
                labels=sorted(self._info),
            )
            info.add_metric([self._info[key] for key in sorted(self._info)], 1)
            yield info
        yield from self._queue.metrics()

    # Private

    def _count(self, receiver: str, outcome: str, took: float | None) -> None:
        # The labelled children are looked up once: labels() costs more than inc() itself.
        counter = self._counters.get((receiver, outcome))
        if counter is None:
            counter = self._counters[receiver, outcome] = self._deliveries.labels(receiver, outcome)
        counter.inc()
        if took is not None:
            histogram = self._histograms.get(receiver)
            if histogram is None:
                histogram = self._histograms[receiver] = self._durations.labels(receiver)
            histogram.observe(took)

    def _receive(self) -> None:
        with open(self._read_fd, "rb") as pipe:
            for line in pipe:
                try:
                    entry = json.loads(line)
                    self._count(str(entry["r"]), str(entry["o"]), entry["d"])
                except (ValueError, KeyError, TypeError):  # a line cut short: drop it
                    continue

    def _after_fork_in_child(self) -> None:
        # A process worker neither serves nor reads the pipe: only the parent does. Closing the
        # read end also makes a write fail (rather than block) once the parent is gone.
        os.close(self._read_fd)
        if self._server is not None:
            self._server.socket.close()
            self._server = None
        self._registry = None
        _LIVE.discard(self)  # a fork of this child has nothing left to close


class _QueueReader:
    """The queue-level gauges and the run's held leases, read at most every
    `QUEUE_READ_SECONDS` on a connection of their own."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.run_id: str | None = None  # set once the worker's run exists
        self._lock = threading.Lock()
        self._queue: Any = None
        self._read_at = -QUEUE_READ_SECONDS
        self._metrics: list[Metric] = []

    def metrics(self) -> list[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= QUEUE_READ_SECONDS:
                self._read_at = time.monotonic()
                self._metrics = self._read()
            return self._metrics

    def _read(self) -> list[Metric]:
        from evq.storage import open_queue

        try:
            if self._queue is None:
                self._queue = open_queue(self._url, role="inspect", create=False)
            snapshot = self._queue.status()
            held = None if self.run_id is None else self._queue.running_count(self.run_id)
        except EvqError:
            # Not this scrape's to report: the worker logs outages; the gauges are left out
            # (Prometheus then shows them absent) until a read works again.
            return []
        metrics = queue_metrics(snapshot)
        if held is not None:
            leases = GaugeMetricFamily(
                "evq_leases_held",
                "Deliveries this worker has leased (prefetched or running), all its processes.",
                value=held,
            )
            metrics.insert(0, leases)
        return metrics

    def close(self) -> None:
        with self._lock:
            if self._queue is not None:
                self._queue.close()
                self._queue = None


class _Fixed:
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


_LIVE: weakref.WeakSet[WorkerMetrics] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for metrics in list(_LIVE):
        metrics._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
