"""Benchmark evq on Redis against Redis's own limits, RedisHuey and Dramatiq, in one run.

    python benchmarks/redis.py [--url redis://127.0.0.1:6379/13] [--smoke]
                               [--output benchmarks/RESULTS-redis.md]

The targets are those of issue 14, item 10. Every baseline is measured in the same run as evq,
interleaved repeat by repeat; ratios compare medians. Nothing is flushed: every key this script
writes carries a tag of its own (an evq ``?prefix=``, a huey name, a Dramatiq namespace, a
stream name) and is deleted afterwards, so other users of the database are left alone. The
memory figure is the server's ``used_memory`` and so sees them too: use an otherwise idle
database and server for it.

* publish: ``evq.publish()`` against one ``XADD`` per round trip (redis-py, the same name and
  JSON payload); ``evq.publish_many`` against pipelined ``XADD`` of the same entries, one
  pipeline per 1,000 (``publish_many``'s default batch size).
* drain: ``size`` events x 3 receivers published first (not timed), then ``evq worker --burst``
  (1 thread; 4 processes), ``huey_consumer -w 1 -k thread`` on ``RedisHuey`` (one task per
  receiver) and ``dramatiq --processes 1 --threads 4`` on its ``RedisBroker``; the clock runs
  from just before the spawn to the last receiver's timestamp. The receivers are run.py's.
* memory: ``INFO memory`` ``used_memory`` before and after publishing ``memory_events``
  events (in the inbox), after a read moved them into the log, and after one worker has
  delivered them all (3 receivers each).
* scale: ``scale_large`` (1,000,000) and ``scale_small`` (1,000) events stored and fanned out
  under two prefixes; on each, per repeat: single publishes, leasing and recording their
  deliveries in this process, and ``status``; the targets compare the two sizes' medians.
* crash: two worker processes drain ``crash_events`` events (one receiver); one is SIGKILLed
  at a quarter and its replacement at half; the survivor finishes and takes back the leases
  the dead held once they expire (``--lease crash_lease``). Lost and stuck must both be 0.
* latency: a worker (1 thread, 1 receiver) idle for ``--idle`` seconds, then events published
  one at a time with random gaps; ``publish()`` returning to the receiver starting.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file is called redis.py: keep its directory from shadowing redis-py, then add it back
# (at the end) for run.py and baselines.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import redis  # noqa: E402

sys.path.append(str(HERE))

from baselines import (  # noqa: E402
    RECORD_SOURCE,
    _event,
    _HueyApp,
    _RecordedRun,
    _stop_process,
    percentile,
)
from run import (  # noqa: E402
    EVENT_NAME,
    RECEIVERS,
    WARMUP_SEQ,
    Report,
    _drain_numbers,
    _EvqApp,
    _fmt,
    _items,
    _log,
    _machine,
    _payload,
    _table,
    _use_bytecode_cache,
    run_sections,
    write_results,
)

import evq  # noqa: E402
import evq.config  # noqa: E402
from evq import publisher  # noqa: E402
from evq.storage import open_queue  # noqa: E402
from evq.storage.contract import Outcome, Queue, Routing  # noqa: E402

DEFAULT_URL = "redis://127.0.0.1:6379/13"
DEFAULT_OUTPUT = HERE / "RESULTS-redis.md"
PIPELINE = 1000  # publish_many's default batch_size.
TAG = f"evqbench-{os.getpid()}"
_counter = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sizes:
    events: int
    batch_events: int
    drain_events: int
    repeats: int
    memory_events: int
    idle: float
    latency_events: int
    gap: tuple[float, float]
    scale_small: int
    scale_large: int
    scale_probe: int
    crash_events: int
    crash_lease: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Sizes:
        if args.smoke:
            sizes = cls(
                events=100,
                batch_events=1_000,
                drain_events=100,
                repeats=1,
                memory_events=500,
                idle=0.5,
                latency_events=5,
                gap=(0.02, 0.05),
                scale_small=100,
                scale_large=2_000,
                scale_probe=20,
                crash_events=300,
                crash_lease=1.0,
            )
        else:
            sizes = cls(
                events=3_000,
                batch_events=30_000,
                drain_events=5_000,
                repeats=3,
                memory_events=20_000,
                idle=60.0,
                latency_events=200,
                gap=(0.02, 0.12),
                scale_small=1_000,
                scale_large=1_000_000,
                scale_probe=300,
                crash_events=20_000,
                crash_lease=3.0,
            )
        if args.idle is not None:
            sizes = dataclasses.replace(sizes, idle=args.idle)
        return sizes


# --------------------------------------------------------------------------- plumbing


def _server_url(url: str) -> str:
    return url.partition("?")[0]


def _fresh_tag() -> str:
    global _counter
    _counter += 1
    return f"{TAG}-{_counter}"


def _evq_url(url: str, tag: str) -> str:
    return f"{_server_url(url)}?prefix={tag}"


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(_server_url(url))


def _drop(client: redis.Redis, tag: str) -> None:
    """Delete every key this script wrote under `tag`."""
    batch: list[Any] = []
    for key in client.scan_iter(match=f"*{tag}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


class _Evq:
    """evq.publish() in this process pointed at a prefix of its own on the server."""

    def __init__(self, url: str, tag: str) -> None:
        self.url = _evq_url(url, tag)

    def __enter__(self) -> _Evq:
        evq.configure(url=self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        publisher.queue().close()
        evq.config.reset()


def _used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


# --------------------------------------------------------------------------- publish


def _entry(seq: int) -> dict[str, str]:
    return {"name": EVENT_NAME, "payload": json.dumps(_payload(seq))}


def _xadd_rate(client: redis.Redis, tag: str, n: int) -> float:
    stream = f"{tag}:stream"
    client.xadd(stream, _entry(-1))
    start = time.perf_counter()
    for seq in range(n):
        client.xadd(stream, _entry(seq))
    return n / (time.perf_counter() - start)


def _xadd_pipelined_rate(client: redis.Redis, tag: str, n: int) -> float:
    stream = f"{tag}:stream"
    client.xadd(stream, _entry(-1))
    start = time.perf_counter()
    for first in range(0, n, PIPELINE):
        pipe = client.pipeline(transaction=False)
        for seq in range(first, min(n, first + PIPELINE)):
            pipe.xadd(stream, _entry(seq))
        pipe.execute()
    return n / (time.perf_counter() - start)


def _evq_publish_rate(url: str, tag: str, n: int) -> float:
    with _Evq(url, tag):
        evq.publish(EVENT_NAME, payload=_payload(-1))
        start = time.perf_counter()
        for seq in range(n):
            evq.publish(EVENT_NAME, payload=_payload(seq))
        return n / (time.perf_counter() - start)


def _evq_publish_many_rate(url: str, tag: str, n: int) -> float:
    items = _items(0, n)
    with _Evq(url, tag):
        evq.publish(EVENT_NAME, payload=_payload(-1))
        start = time.perf_counter()
        evq.publish_many(items)
        return n / (time.perf_counter() - start)


def bench_publish(report: Report, sizes: Sizes, url: str) -> None:
    client = _client(url)
    values: dict[str, list[float]] = {k: [] for k in ("xadd", "single", "pipe", "many")}
    for r in range(sizes.repeats):
        _log(f"publish: repeat {r + 1}/{sizes.repeats}")
        for key, measure, n in (
            ("xadd", lambda t, n: _xadd_rate(client, t, n), sizes.events),
            ("single", lambda t, n: _evq_publish_rate(url, t, n), sizes.events),
            ("pipe", lambda t, n: _xadd_pipelined_rate(client, t, n), sizes.batch_events),
            ("many", lambda t, n: _evq_publish_many_rate(url, t, n), sizes.batch_events),
        ):
            tag = _fresh_tag()
            try:
                values[key].append(measure(tag, n))
            finally:
                _drop(client, tag)
    s = "publish"
    xadd = report.add(s, "redis-py XADD, one per round trip", "entries/s", values["xadd"])
    single = report.add(s, "evq.publish() single events", "events/s", values["single"])
    pipe = report.add(
        s, f"redis-py XADD pipelined ({PIPELINE}/pipeline)", "entries/s", values["pipe"]
    )
    many = report.add(
        s, f"evq.publish_many ({sizes.batch_events:,} events)", "events/s", values["many"]
    )
    report.compare("single publish / XADD per round trip", single, xadd)
    report.compare("publish_many / pipelined XADD", many, pipe)
    report.target(
        "single publish >= 0.7x one XADD per round trip",
        single.median / xadd.median,
        "x",
        0.7,
        at_most=False,
    )
    report.target(
        "batch publish (publish_many) >= 0.5x pipelined XADD",
        many.median / pipe.median,
        "x",
        0.5,
        at_most=False,
    )


# --------------------------------------------------------------------------- drain


def _publish_backlog(url: str, tag: str, n: int) -> None:
    with _Evq(url, tag):
        evq.publish_many(_items(0, n), batch_size=PIPELINE)


def _evq_drain_once(
    tmp: str, url: str, n: int, workers: int, kind: str, memory: dict[str, float] | None = None
) -> dict[str, float]:
    client = _client(url)
    tag = _fresh_tag()
    app = _EvqApp(tmp)
    app.db_path = _evq_url(url, tag)  # What start_worker passes as --url.
    try:
        before = _used_memory(client)
        _publish_backlog(url, tag, n)
        expected = n * RECEIVERS
        start = time.time()
        proc = app.start_worker("--burst", "--workers", str(workers), "--worker-type", kind)
        try:
            returncode = proc.wait(600)
        finally:
            _stop_process(proc)
        if returncode != 0:
            raise RuntimeError(f"evq worker exited {returncode}:\n{app.log_tail()}")
        stamps = sorted(ts for _, ts in app.records())
        if len(stamps) != expected:
            raise RuntimeError(f"expected {expected} deliveries, found {len(stamps)}")
        if memory is not None:
            memory["after_drain_per_event"] = (_used_memory(client) - before) / n
        return _drain_numbers(stamps, start)
    finally:
        _drop(client, tag)


_HUEY_REDIS_TEMPLATE = '''\
"""RedisHuey receivers for the evq Redis benchmarks (generated)."""
import os
import time

from huey import RedisHuey

OUT_PATH = {out!r}
READY_PATH = {ready!r}

huey = RedisHuey({name!r}, url={url!r})


{record}

@huey.on_startup()
def _ready():
    fd = os.open(READY_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.close(fd)
'''

_HUEY_RECEIVER = """

@huey.task()
def receiver_{i}(seq, event):
    _record(seq)
"""


class _RedisHueyApp(_HueyApp):
    """run.py's huey app with RedisHuey in place of SqliteHuey (same receivers)."""

    def __init__(self, tmp: str, receivers: int, url: str, tag: str) -> None:
        self.dir = tmp
        self.receivers = receivers
        self.out_path = os.path.join(tmp, "executions.log")
        self.ready_path = os.path.join(tmp, "ready")
        self.log_path = os.path.join(tmp, "consumer.log")
        source = _HUEY_REDIS_TEMPLATE.format(
            out=self.out_path, ready=self.ready_path, name=tag, url=url, record=RECORD_SOURCE
        ) + "".join(_HUEY_RECEIVER.format(i=i) for i in range(receivers))
        self.module_path = os.path.join(tmp, "evq_bench_huey_tasks.py")
        with open(self.module_path, "w", encoding="utf-8") as fh:
            fh.write(source)
        self._module = None


def _huey_drain_once(tmp: str, url: str, n: int) -> dict[str, float]:
    client = _client(url)
    tag = _fresh_tag()
    app = _RedisHueyApp(tmp, RECEIVERS, _server_url(url), tag)
    try:
        try:
            tasks = app.tasks()
            for seq in range(n):
                event = _event(seq)
                for task in tasks:
                    task(seq, event)
            queued = app.load().huey.pending_count()
        finally:
            app.close()
        expected = n * RECEIVERS
        if queued != expected:
            raise RuntimeError(f"expected {expected} queued huey tasks, found {queued}")
        start = time.time()
        proc = app.start_consumer(1, "thread")
        try:
            app.wait_executions(expected, proc, timeout=600)
        finally:
            _stop_process(proc)
        return _drain_numbers(sorted(ts for _, ts in app.records()), start)
    finally:
        _drop(client, tag)


_DRAMATIQ_MODULE = "evq_bench_dramatiq_actors"
_DRAMATIQ_TEMPLATE = '''\
"""Dramatiq (Redis broker) receivers for the evq Redis benchmarks (generated)."""
import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

OUT_PATH = {out!r}

broker = RedisBroker(url={url!r}, namespace={tag!r})
dramatiq.set_broker(broker)


{record}'''

_DRAMATIQ_RECEIVER = """

@dramatiq.actor
def receiver_{i}(seq, event):
    _record(seq)
"""


class _DramatiqApp(_RecordedRun):
    process_name = "dramatiq"

    def __init__(self, tmp: str, url: str, tag: str) -> None:
        self.dir = tmp
        self.out_path = os.path.join(tmp, "executions.log")
        self.log_path = os.path.join(tmp, "dramatiq.log")
        source = _DRAMATIQ_TEMPLATE.format(
            out=self.out_path, url=url, tag=tag, record=RECORD_SOURCE
        ) + "".join(_DRAMATIQ_RECEIVER.format(i=i) for i in range(RECEIVERS))
        self.module_path = os.path.join(tmp, f"{_DRAMATIQ_MODULE}.py")
        with open(self.module_path, "w", encoding="utf-8") as fh:
            fh.write(source)

    def enqueue(self, n: int) -> None:
        spec = importlib.util.spec_from_file_location(_DRAMATIQ_MODULE, self.module_path)
        if spec is None or spec.loader is None:
            raise ImportError(self.module_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_DRAMATIQ_MODULE] = module
        try:
            spec.loader.exec_module(module)
            actors = [getattr(module, f"receiver_{i}") for i in range(RECEIVERS)]
            for seq in range(n):
                event = _event(seq)
                for actor in actors:
                    actor.send(seq, event)
            module.broker.close()
        finally:
            del sys.modules[_DRAMATIQ_MODULE]

    def start(self, processes: int, threads: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.dir, env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "dramatiq", _DRAMATIQ_MODULE]
        cmd += ["--processes", str(processes), "--threads", str(threads)]
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                cmd,
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )


def _dramatiq_drain_once(tmp: str, url: str, n: int) -> dict[str, float]:
    client = _client(url)
    tag = _fresh_tag()
    app = _DramatiqApp(tmp, _server_url(url), tag)
    try:
        app.enqueue(n)
        expected = n * RECEIVERS
        start = time.time()
        proc = app.start(1, 4)
        try:
            app.wait_executions(expected, proc, timeout=600)
        finally:
            _stop_process(proc)
        return _drain_numbers(sorted(ts for _, ts in app.records()), start)
    finally:
        _drop(client, tag)


def bench_drain(report: Report, sizes: Sizes, url: str, tmp_root: str | None) -> None:
    n = sizes.drain_events
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in ("evq1", "evq4p", "huey", "dramatiq")}
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="bench-redis-") as tmp:
        for r in range(sizes.repeats):
            _log(f"drain: repeat {r + 1}/{sizes.repeats}")
            for key, measure in (
                ("evq1", lambda d: _evq_drain_once(d, url, n, 1, "thread")),
                ("huey", lambda d: _huey_drain_once(d, url, n)),
                ("evq4p", lambda d: _evq_drain_once(d, url, n, 4, "process")),
                ("dramatiq", lambda d: _dramatiq_drain_once(d, url, n)),
            ):
                sub = tempfile.mkdtemp(dir=tmp)
                runs[key].append(measure(sub))
    s = "drain"
    what = f"{n:,} events x {RECEIVERS} receivers"
    rows = {}
    for key, label in (
        ("evq1", f"evq worker --burst, 1 thread ({what})"),
        ("evq4p", "evq worker --burst, 4 processes"),
        ("huey", "RedisHuey, huey_consumer -w 1 -k thread"),
        ("dramatiq", "Dramatiq RedisBroker, 1 process x 4 threads"),
    ):
        rows[key] = report.add(
            s, label, "deliveries/s", [run["deliveries_per_s"] for run in runs[key]]
        )
        report.add(
            s,
            f"  start-up (spawn to first delivery), {key}",
            "s",
            [run["startup_s"] for run in runs[key]],
        )
    best = max(rows["evq1"].median, rows["evq4p"].median)
    report.compare("evq 1 thread / RedisHuey 1 thread", rows["evq1"], rows["huey"])
    report.compare("evq 4 processes / Dramatiq 4 threads", rows["evq4p"], rows["dramatiq"])
    report.compare("evq 4 processes / evq 1 thread", rows["evq4p"], rows["evq1"])
    report.target(
        "drain >= 3x RedisHuey (one thread, one task per receiver)",
        rows["evq1"].median / rows["huey"].median,
        "x",
        3.0,
        at_most=False,
        detail="evq 1 thread against huey 1 thread",
    )
    report.target(
        "drain >= 5x Dramatiq-Redis (concurrency 4)",
        best / rows["dramatiq"].median,
        "x",
        5.0,
        at_most=False,
        detail="evq's better of 1 thread and 4 processes",
    )
    pairs = [
        a["deliveries_per_s"] / b["deliveries_per_s"]
        for a, b in zip(runs["evq4p"], runs["evq1"], strict=True)
    ]
    report.target(
        "4 worker processes never slower than 1 (worst repeat)",
        min(pairs),
        "x",
        1.0,
        at_most=False,
        detail="ratios per repeat: " + ", ".join(f"{p:.2f}" for p in pairs),
    )


# --------------------------------------------------------------------------- memory


def bench_memory(report: Report, sizes: Sizes, url: str, tmp_root: str | None) -> None:
    client = _client(url)
    n = sizes.memory_events
    tag = _fresh_tag()
    _log(f"memory: {n:,} events")
    try:
        before = _used_memory(client)
        _publish_backlog(url, tag, n)
        stored = (_used_memory(client) - before) / n
        queue = open_queue(_evq_url(url, tag), role="work")
        try:
            queue.events(limit=1)  # a read of the log: it moves the inbox into the log first
        finally:
            queue.close()
        logged = (_used_memory(client) - before) / n
    finally:
        _drop(client, tag)
    drained: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="bench-redis-") as tmp:
        _evq_drain_once(tmp, url, n, 1, "thread", memory=drained)
    s = "memory"
    report.add(
        s,
        f"used_memory per stored event, as published: in the inbox ({n:,} events)",
        "bytes",
        [stored],
    )
    report.add(s, "used_memory per stored event, moved into the log", "bytes", [logged])
    report.add(
        s,
        f"used_memory per event once delivered to {RECEIVERS} receivers",
        "bytes",
        [drained["after_drain_per_event"]],
    )
    report.notes.append(
        f"memory: INFO memory used_memory before and after publishing {n:,} events of"
        f" {len(json.dumps(_payload(n)))}-byte JSON payload (name {EVENT_NAME!r}), after a read"
        " moved them from the inbox into the log, and after"
        " `evq worker --burst` delivered them all; a server-wide figure."
    )


# --------------------------------------------------------------------------- scale

_FILLER = "bench.filler"
_FILL_STEP = 5_000  # events fanned out per lease while filling


def _fill(url: str, tag: str, n: int) -> None:
    """Store `n` events and fan them out (to no receiver: the log, indexes and counters of
    `n` events, without their deliveries' hashes, which would take hours to create)."""
    with _Evq(url, tag):
        for start in range(0, n, 10 * PIPELINE):
            items = [
                {"name": _FILLER, "payload": _payload(seq)}
                for seq in range(start, min(n, start + 10 * PIPELINE))
            ]
            evq.publish_many(items, batch_size=PIPELINE)
    queue = open_queue(_evq_url(url, tag), role="work")
    nobody = Routing(subscriptions=(), lease_seconds={})
    try:
        for _ in range(n // _FILL_STEP + 2):
            queue.lease(nobody, owner="bench-fill", limit=0, dispatch_limit=_FILL_STEP)
    finally:
        queue.close()


def _probe_routing() -> Routing:
    receivers = tuple(f"bench:receiver_{i}" for i in range(RECEIVERS))
    return Routing(
        subscriptions=tuple((EVENT_NAME, receiver) for receiver in receivers),
        lease_seconds=dict.fromkeys(receivers, 30.0),
    )


def _drain_in_process(queue: Queue, routing: Routing) -> int:
    """Lease and record (done) every due delivery, 16 at a time as a worker does."""
    outcomes: list[Outcome] = []
    delivered = 0
    while True:
        batch = queue.lease(routing, owner="bench-probe", limit=16, outcomes=outcomes)
        if not batch.leases and not outcomes:
            return delivered
        now = time.time()
        outcomes = [Outcome(lease, "done", now, now) for lease in batch.leases]
        delivered += len(batch.leases)


def _scale_costs(url: str, tag: str, probe: int, offset: int) -> dict[str, float]:
    """Per-operation cost on a queue: `probe` single publishes, then leasing and recording
    their deliveries (in this process), then `evq status`'s query."""
    with _Evq(url, tag):
        started = time.perf_counter()
        for seq in range(offset, offset + probe):
            evq.publish(EVENT_NAME, payload=_payload(seq))
        publish_us = (time.perf_counter() - started) / probe * 1e6
    queue = open_queue(_evq_url(url, tag), role="work")
    try:
        started = time.perf_counter()
        delivered = _drain_in_process(queue, _probe_routing())
        dequeue_us = (time.perf_counter() - started) / max(delivered, 1) * 1e6
        times = []
        for _ in range(15):
            started = time.perf_counter()
            queue.status()
            times.append((time.perf_counter() - started) * 1e3)
    finally:
        queue.close()
    return {"publish": publish_us, "dequeue": dequeue_us, "status": statistics.median(times)}


def bench_scale(report: Report, sizes: Sizes, url: str) -> None:
    client = _client(url)
    small, large, probe = sizes.scale_small, sizes.scale_large, sizes.scale_probe
    tags = {small: _fresh_tag(), large: _fresh_tag()}
    runs: dict[int, list[dict[str, float]]] = {small: [], large: []}
    memory = 0.0
    try:
        for n, tag in tags.items():
            _log(f"scale: storing {n:,} events")
            before = _used_memory(client)
            _fill(url, tag, n)
            if n == large:
                memory = (_used_memory(client) - before) / n
        for r in range(sizes.repeats):
            _log(f"scale: repeat {r + 1}/{sizes.repeats}")
            for n, tag in tags.items():
                runs[n].append(_scale_costs(url, tag, probe, offset=r * probe))
    finally:
        for tag in tags.values():
            _drop(client, tag)
    s = "scale"
    for key, unit, what in (
        ("publish", "us", "evq.publish(), one event"),
        ("dequeue", "us", f"lease + record, per delivery ({probe} events x {RECEIVERS})"),
        ("status", "ms", "queue.status() (evq status)"),
    ):
        rows = {
            n: report.add(s, f"{what}, {n:,} events stored", unit, [run[key] for run in runs[n]])
            for n in (small, large)
        }
        report.target(
            f"{key} with {large:,} events stored <= 1.5x with {small:,}",
            rows[large].median / rows[small].median,
            "x",
            1.5,
            at_most=True,
        )
    report.add(s, f"used_memory per stored event, fanned out ({large:,} events)", "bytes", [memory])
    report.notes.append(
        f"scale: {large:,} and {small:,} events of {_FILLER!r} stored and fanned out (to no"
        " receiver, so without delivery hashes) under two prefixes, then per repeat, on each:"
        f" {probe} single publishes of {EVENT_NAME!r}, leasing and recording their deliveries"
        " in this process (16 a step), and 15 status queries; medians over the repeats."
    )


# --------------------------------------------------------------------------- crash


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's whole session (it was started in one of its own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def bench_crash(report: Report, sizes: Sizes, url: str, tmp_root: str | None) -> None:
    """Two worker processes (2 threads each) drain a backlog; one is SIGKILLed at a quarter,
    its replacement at half: what they held must come back once the lease expires, taken
    by the worker that lives on."""
    n, lease = sizes.crash_events, sizes.crash_lease
    client = _client(url)
    tag = _fresh_tag()
    _log(f"crash: {n:,} events, workers SIGKILLed twice, lease {lease:g} s")
    args = ("--workers", "2", "--worker-type", "thread", "--lease", f"{lease:g}", "--quiet")
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="bench-redis-") as tmp:
        app = _EvqApp(tmp, receivers=1)
        app.db_path = _evq_url(url, tag)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            _publish_backlog(url, tag, n)
            survivor = app.start_worker(*args)
            victim = app.start_worker(*args)
            procs += [survivor, victim]
            kills = 0
            for share in (4, 2):
                _wait_for(lambda share=share: app.executions() >= n // share, timeout=120)
                _kill(victim)
                killed_at = time.time()
                kills += 1
                victim = app.start_worker(*args)
                procs.append(victim)
            _kill(victim)  # the second replacement too: only the survivor reclaims
            drained = _wait_for(lambda: len({seq for seq, _ in app.records()}) >= n, lease + 60)
            queue = open_queue(app.db_path)
            try:
                status = queue.status()
            finally:
                queue.close()
        finally:
            for proc in procs:
                _stop_process(proc)
            _drop(client, tag)
        records = app.records()
    seqs = [seq for seq, _ in records]
    lost = n - len(set(seqs))
    duplicates = len(seqs) - len(set(seqs))
    stuck = status.pending + status.running + status.retrying + status.awaiting_dispatch
    last = max(ts for _, ts in records) - killed_at if records else float("nan")
    s = "crash"
    report.add(s, f"deliveries lost ({n:,} events, {kills + 1} SIGKILLs)", "deliveries", [lost])
    report.add(s, "deliveries run twice (attempts cut short by a kill)", "deliveries", [duplicates])
    report.add(s, "deliveries stuck after the lease expired", "deliveries", [stuck])
    report.add(s, f"last kill to last delivery (lease {lease:g} s)", "s", [last])
    report.target("crash: 0 lost", lost, "deliveries", 0, at_most=True)
    report.target(
        "crash: 0 stuck once the lease expired (reclaimed by the live worker)",
        stuck if drained else stuck + lost,
        "deliveries",
        0,
        at_most=True,
    )
    report.notes.append(
        f"crash: {n:,} events to one receiver; two `evq worker --workers 2 --worker-type"
        f" thread --lease {lease:g}` processes; the second SIGKILLed (whole process group)"
        " at a quarter of the backlog and its replacement at half, a third replacement"
        " SIGKILLed at once; the first worker alone finishes and reclaims the expired leases."
        " Lost: events never delivered; stuck: deliveries unfinished in `status` afterwards."
    )


# --------------------------------------------------------------------------- latency


def bench_latency(report: Report, sizes: Sizes, url: str, tmp_root: str | None) -> None:
    n, idle, gap = sizes.latency_events, sizes.idle, sizes.gap
    client = _client(url)
    tag = _fresh_tag()
    rng = random.Random(12345)
    _log(f"latency: evq worker idle {idle:g} s, then {n} events")
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="bench-redis-") as tmp:
        app = _EvqApp(tmp, receivers=1)
        app.db_path = _evq_url(url, tag)
        proc = app.start_worker()
        published: list[float] = []
        try:
            with _Evq(url, tag):
                evq.publish(EVENT_NAME, payload=_payload(WARMUP_SEQ))
                app.wait_executions(1, proc, timeout=60.0)
                time.sleep(idle)
                for seq in range(n):
                    if seq:
                        time.sleep(rng.uniform(*gap))
                    evq.publish(EVENT_NAME, payload=_payload(seq))
                    published.append(time.time())
                app.wait_executions(n + 1, proc, timeout=60.0)
        finally:
            _stop_process(proc)
            _drop(client, tag)
        started = dict(app.records())
    latencies = [(started[seq] - published[seq]) * 1000.0 for seq in range(n)]
    s = "latency"
    what = f"idle {idle:g} s, {n} events, gaps {gap[0] * 1000:.0f}-{gap[1] * 1000:.0f} ms"
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    iqr = f"IQR {_fmt(percentile(latencies, 25))}-{_fmt(percentile(latencies, 75))}"
    report.add(s, f"evq p50 ({what})", "ms", [p50], iqr)
    report.add(s, "evq p99", "ms", [p99])
    report.add(s, "evq first event after the idle period", "ms", [latencies[0]])
    report.add(s, "evq max", "ms", [max(latencies)])
    report.target(f"latency p50 <= 2 ms after {idle:g} s idle", p50, "ms", 2.0, at_most=True)
    report.target(f"latency p99 <= 6 ms after {idle:g} s idle", p99, "ms", 6.0, at_most=True)


# --------------------------------------------------------------------------- output


def _server_rows(url: str) -> list[tuple[str, str]]:
    info = _client(url).info()
    return [
        ("Redis", f"{info.get('redis_version')} ({info.get('redis_mode', '')})"),
        (
            "Redis persistence",
            f"aof_enabled={info.get('aof_enabled')},"
            f" rdb_changes_since_last_save={info.get('rdb_changes_since_last_save')}",
        ),
        ("Redis URL", _server_url(url)),
    ]


def render(report: Report, sizes: Sizes, url: str, argv: Sequence[str], elapsed: float) -> str:
    import datetime as dt
    import importlib.metadata as md

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{p} {md.version(p)}" for p in ("redis", "huey", "dramatiq"))
    parts = [
        "# evq on Redis: benchmark results",
        f"Generated by `python benchmarks/redis.py {' '.join(argv)}`".rstrip()
        + f" on {now}, in {elapsed / 60:.1f} min. Every ratio compares medians measured in"
        " this same run.",
        "## Machine\n\n"
        + _table(("", ""), [*_machine(), *_server_rows(url), ("clients", versions)]),
        "## Sizes\n\n"
        + _table(
            ("", ""), [(f.name, str(getattr(sizes, f.name))) for f in dataclasses.fields(sizes)]
        ),
    ]
    target_rows = [
        (
            t.label,
            "-" if t.measured is None else f"{_fmt(t.measured)} {t.unit}",
            f"{'<=' if t.at_most else '>='} {_fmt(t.goal)} {t.unit}",
            f"**{t.result}**" + (f" ({t.by_how_much()})" if t.by_how_much() else ""),
            t.detail,
        )
        for t in report.targets
    ]
    parts.append(
        "## Targets (issue 14, item 10)\n\n"
        + _table(("target", "measured", "goal", "result", "note"), target_rows)
    )
    parts.append(
        "## Comparisons (evq / baseline, medians)\n\n"
        + _table(
            ("comparison", "evq", "baseline", "ratio"),
            [
                (
                    c.label,
                    f"{_fmt(c.evq.median)} {c.evq.unit}",
                    f"{_fmt(c.baseline.median)} {c.baseline.unit}",
                    f"{c.ratio:.2f}x",
                )
                for c in report.comparisons
            ],
        )
    )
    parts.append(
        "## All measurements\n\nSpread is min-max over the repeats (IQR of the samples for"
        " latency p50).\n\n"
        + _table(
            ("section", "measurement", "median", "spread", "unit", "runs"),
            [
                (r.section, r.label, _fmt(r.median), r.spread_text(), r.unit, str(len(r.values)))
                for r in report.rows
            ],
        )
    )
    if report.notes or report.errors:
        parts.append(
            "## Notes and errors\n\n"
            + "\n".join(f"- {n}" for n in report.notes)
            + ("\n" if report.notes and report.errors else "")
            + "\n".join(f"- ERROR {e}" for e in report.errors)
        )
    parts.append("## Method\n\n" + (__doc__ or "").split("\n\n", 2)[2].strip())
    return "\n\n".join(parts) + "\n"


SECTIONS = ("publish", "drain", "memory", "scale", "crash", "latency")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Redis server ({DEFAULT_URL})")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    parser.add_argument("--idle", type=float, help="seconds a worker idles before latency (60)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file")
    parser.add_argument("--tmp-root", help="directory for temporary files")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    sizes = Sizes.from_args(args)
    _client(args.url).ping()
    _use_bytecode_cache()
    started = time.monotonic()
    report = Report()

    def bench(section: str) -> None:
        if section == "publish":
            bench_publish(report, sizes, args.url)
        elif section == "drain":
            bench_drain(report, sizes, args.url, args.tmp_root)
        elif section == "memory":
            bench_memory(report, sizes, args.url, args.tmp_root)
        elif section == "scale":
            bench_scale(report, sizes, args.url)
        elif section == "crash":
            bench_crash(report, sizes, args.url, args.tmp_root)
        else:
            bench_latency(report, sizes, args.url, args.tmp_root)

    run_sections(report, args.only or SECTIONS, bench)
    text = render(report, sizes, args.url, argv, time.monotonic() - started)
    print(text)
    write_results(args.output, text)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
