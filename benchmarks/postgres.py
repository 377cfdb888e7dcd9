"""Benchmark evq on PostgreSQL against PostgreSQL's own limits and procrastinate, in one run.

    python benchmarks/postgres.py [--url postgresql://...] [--repeats R] [--smoke]
                                  [--output benchmarks/RESULTS-postgres.md]

The URL (default: ``EVQ_BENCH_POSTGRES_URL``) names a database this script may create and
drop schemas in; every measurement runs in a fresh schema of its own (``evq_bench_...``),
dropped afterwards. The baselines are measured in the same run, interleaved repeat by repeat,
so the ratios compare like with like on a shared, noisy machine (issue 11, item 10).

* publish: single-row ``INSERT`` + ``COMMIT`` on one psycopg 3 connection into a table shaped
  like ``evq_event``, against single ``evq.publish()`` calls; ``COPY`` of the same rows (one
  transaction) against ``evq.publish_many``.
* drain: ``events`` events x 3 receivers published first (not timed), then ``evq worker
  --burst`` with 1 worker and with 4 worker processes; procrastinate draining the same work
  (one job per receiver, deferred first, ``run_worker(concurrency=4, wait=False)`` in a
  subprocess). The clock runs from just before the spawn to the last receiver's timestamp.
* latency: an ``evq worker`` (1 receiver) idle for ``--idle`` seconds, then events published
  one at a time 20-120 ms apart; ``publish()`` returning to the receiver starting.
* publish (batch from a file): ``evq publish --jsonl`` of ``jsonl_events`` lines (wall time of
  the command, start-up included) against ``COPY`` of as many rows.
* scale: a queue holding ``stored_small`` and one holding ``stored_large`` events delivered long
  ago (3 done deliveries and 3 attempts each, built server-side with ``generate_series``, then
  ``VACUUM ANALYZE``) plus ``pending`` events not fanned out yet; one publish (the two queues
  in turns, one publish each at a time), one dequeue cycle (record 16 done, lease 16) and ``evq
  status`` timed on both, interleaved.
* crash: ``crash_events`` x 3 receivers, ``evq worker --workers 4 --worker-type process
  --lease 2s`` SIGKILLed with its children mid-backlog (while it holds leases), then a fresh
  ``evq worker --lease 2s``; no command is run by hand. Counted: deliveries that never ran
  (lost), deliveries not done once the lease has expired and the fresh worker had time (stuck),
  and the seconds from the kill until every delivery was done.

The receivers are those of ``benchmarks/run.py`` (one fixed-width record per call).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from baselines import (
    RECORD_SOURCE,
    _RecordedRun,
    _stop_process,
    command_wall_time,
    percentile,
)
from run import (
    _APP_TEMPLATE,
    APP_MODULE,
    EVENT_NAME,
    LEASE_LIMIT,
    RECEIVERS,
    ROOT,
    WARMUP_SEQ,
    Report,
    Row,
    _bench_routing,
    _clean_env,
    _drain_numbers,
    _evq_command,
    _EvqApp,
    _fmt,
    _git,
    _items,
    _lease_cycle_seconds,
    _log,
    _payload,
    _table,
    _use_bytecode_cache,
    run_sections,
    write_results,
)

import evq
import evq.config
from evq import publisher
from evq.storage import open_queue

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "RESULTS-postgres.md"
URL_ENV = "EVQ_BENCH_POSTGRES_URL"
SECTIONS = ("publish", "drain", "latency", "scale", "crash")
_STARTED = time.monotonic()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each measurement is."""

    events: int
    batch_events: int
    drain_events: int
    repeats: int
    idle: float
    latency_events: int
    jsonl_events: int
    stored_small: int
    stored_large: int
    pending: int
    scale_publishes: int
    crash_events: int
    gap: tuple[float, float] = (0.02, 0.12)
    crash_lease: float = 2.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Sizes:
        if args.smoke:
            sizes = cls(
                events=100,
                batch_events=1_000,
                drain_events=100,
                repeats=1,
                idle=1.0,
                latency_events=5,
                jsonl_events=2_000,
                stored_small=1_000,
                stored_large=5_000,
                pending=300,
                scale_publishes=10,
                crash_events=100,
            )
        else:
            sizes = cls(
                events=2_000,
                batch_events=20_000,
                drain_events=2_000,
                repeats=3,
                idle=60.0,
                latency_events=200,
                jsonl_events=100_000,
                stored_small=1_000,
                stored_large=1_000_000,
                pending=1_000,
                scale_publishes=50,
                crash_events=2_000,
            )
        changes: dict[str, Any] = {}
        for name in ("repeats", "idle"):
            if getattr(args, name) is not None:
                changes[name] = getattr(args, name)
        return dataclasses.replace(sizes, **changes)


# --------------------------------------------------------------------------- schemas


def _with_schema(server: str, schema: str) -> str:
    separator = "&" if "?" in server else "?"
    return f"{server}{separator}options={quote(f'-csearch_path={schema}', safe='')}"


@contextmanager
def _schema(server: str) -> Iterator[str]:
    """A fresh, empty schema on `server`; yields a URL whose search path is it; dropped after."""
    name = f"evq_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield _with_schema(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@contextmanager
def _evq_on(url: str) -> Iterator[None]:
    """Point this process's evq.publish() at `url`; close the handle afterwards."""
    evq.configure(url=url)
    try:
        yield
    finally:
        publisher.queue().close()
        evq.config.reset()


# --------------------------------------------------------------------------- 1. publish

_RAW_TABLE = """CREATE TABLE raw_event (
    seq bigserial PRIMARY KEY,
    id text COLLATE "C" NOT NULL UNIQUE,
    name text COLLATE "C" NOT NULL,
    payload text NOT NULL,
    published_at double precision NOT NULL
)"""


def _raw_rows(n: int) -> list[tuple[str, str, str, float]]:
    now = time.time()
    return [(uuid.uuid4().hex, EVENT_NAME, json.dumps(_payload(seq)), now) for seq in range(n)]


def pg_commit_rate(url: str, n: int) -> float:
    """Single-row INSERT + COMMIT on one connection, into a table shaped like evq_event."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_RAW_TABLE)
        rows = _raw_rows(n)
        conn.autocommit = False
        sql = "INSERT INTO raw_event (id, name, payload, published_at) VALUES (%s, %s, %s, %s)"
        start = time.perf_counter()
        for row in rows:
            conn.execute(sql, row)
            conn.commit()
        return n / (time.perf_counter() - start)


def pg_copy_rate(url: str, n: int) -> float:
    """COPY of the same rows in one transaction."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_RAW_TABLE)
        rows = _raw_rows(n)
        conn.autocommit = False
        start = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("COPY raw_event (id, name, payload, published_at) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return n / (time.perf_counter() - start)


def evq_single_rate(url: str, n: int) -> float:
    with _evq_on(url):
        evq.publish(EVENT_NAME, payload=_payload(-1))  # Creates the tables; not timed.
        start = time.perf_counter()
        for seq in range(n):
            evq.publish(EVENT_NAME, payload=_payload(seq))
        return n / (time.perf_counter() - start)


def evq_many_rate(url: str, items: list[dict[str, Any]]) -> float:
    with _evq_on(url):
        evq.publish(EVENT_NAME, payload=_payload(-1))
        start = time.perf_counter()
        evq.publish_many(items)
        return len(items) / (time.perf_counter() - start)


def evq_jsonl_rate(url: str, jsonl: str, count: int) -> float:
    """Wall time of `evq publish --jsonl` (start-up included) into tables made beforehand."""
    queue = open_queue(url)
    try:
        queue.check()
    finally:
        queue.close()
    cmd = [*_evq_command(), "publish", "--jsonl", jsonl, "--url", url]
    wall_ms = command_wall_time(cmd, 1, env=_clean_env(), warmup=0)["median_ms"]
    return count / (wall_ms / 1000.0)


def _write_jsonl(path: str, count: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(item) + "\n" for item in _items(0, count))


def bench_publish(report: Report, sizes: Sizes, server: str) -> None:
    n, batch, lines = sizes.events, sizes.batch_events, sizes.jsonl_events
    items = _items(0, batch)
    keys = ("insert", "single", "copy", "many", "copy_lines", "jsonl")
    values: dict[str, list[float]] = {k: [] for k in keys}
    with tempfile.TemporaryDirectory(prefix="bench-evq-pg-") as tmp:
        jsonl = os.path.join(tmp, "events.jsonl")
        _write_jsonl(jsonl, lines)
        for r in range(sizes.repeats):
            _log(f"publish: repeat {r + 1}/{sizes.repeats}")
            with _schema(server) as url:
                values["insert"].append(pg_commit_rate(url, n))
            with _schema(server) as url:
                values["single"].append(evq_single_rate(url, n))
            with _schema(server) as url:
                values["copy"].append(pg_copy_rate(url, batch))
            with _schema(server) as url:
                values["many"].append(evq_many_rate(url, items))
            with _schema(server) as url:
                values["copy_lines"].append(pg_copy_rate(url, lines))
            with _schema(server) as url:
                values["jsonl"].append(evq_jsonl_rate(url, jsonl, lines))
    s = "publish"
    single = report.add(s, f"evq.publish() single events ({n:,})", "events/s", values["single"])
    insert = report.add(s, "PostgreSQL 1-row INSERT+COMMIT", "commits/s", values["insert"])
    many = report.add(s, f"evq.publish_many ({batch:,} events)", "events/s", values["many"])
    copy = report.add(s, f"PostgreSQL COPY ({batch:,} rows, 1 tx)", "rows/s", values["copy"])
    jsonl_row = report.add(
        s, f"`evq publish --jsonl` ({lines:,} lines, wall)", "events/s", values["jsonl"]
    )
    copy_lines = report.add(
        s, f"PostgreSQL COPY ({lines:,} rows, 1 tx)", "rows/s", values["copy_lines"]
    )
    c1 = report.compare("single publish / 1-row INSERT+COMMIT", single, insert)
    c2 = report.compare("publish_many / COPY", many, copy)
    c3 = report.compare("`evq publish --jsonl` / COPY", jsonl_row, copy_lines)
    report.target("single publish >= 0.8x 1-row INSERT+COMMIT", c1.ratio, "x", 0.8, at_most=False)
    report.target("publish_many >= 0.5x COPY", c2.ratio, "x", 0.5, at_most=False)
    report.target(
        "`evq publish --jsonl` >= 0.5x COPY",
        c3.ratio,
        "x",
        0.5,
        at_most=False,
        detail="wall time of the command, start-up included",
    )


# --------------------------------------------------------------------------- 2. drain


def _publish_backlog(url: str, events: int) -> None:
    with _evq_on(url):
        evq.publish_many(_items(0, events), batch_size=10_000)


def evq_drain_once(tmp: str, url: str, n: int, workers: int, timeout: float) -> dict[str, float]:
    app = _EvqApp(tmp)
    app.db_path = url  # Passed to `evq worker --url`.
    _publish_backlog(url, n)
    expected = n * RECEIVERS
    args = ["--burst", "--workers", str(workers)]
    if workers > 1:
        args += ["--worker-type", "process"]
    start = time.time()  # Wall clock: compared with time.time() written by the receivers.
    proc = app.start_worker(*args)
    try:
        returncode = proc.wait(timeout)
    finally:
        _stop_process(proc)
    stamps = sorted(ts for _, ts in app.records())
    if returncode != 0 or len(stamps) != expected:
        raise RuntimeError(
            f"evq worker --burst exited {returncode} after {len(stamps)}/{expected} deliveries:\n"
            f"{app.log_tail()}"
        )
    return _drain_numbers(stamps, start)


_PROC_MODULE = "evq_bench_procrastinate"
_PROC_TEMPLATE = '''\
"""procrastinate tasks for the evq PostgreSQL benchmark (generated)."""
import os
import time

import procrastinate

OUT_PATH = {out!r}
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo={url!r}))


{record}'''

_PROC_TASK = """

@app.task(name="receiver_{i}")
def receiver_{i}(seq):
    _record(seq)
"""


class _ProcrastinateApp(_RecordedRun):
    process_name = "procrastinate worker"

    def __init__(self, tmp: str, url: str) -> None:
        self.dir = tmp
        self.out_path = os.path.join(tmp, "executions.log")
        self.log_path = os.path.join(tmp, "worker.log")
        source = _PROC_TEMPLATE.format(out=self.out_path, url=url, record=RECORD_SOURCE) + "".join(
            _PROC_TASK.format(i=i) for i in range(RECEIVERS)
        )
        with open(os.path.join(tmp, f"{_PROC_MODULE}.py"), "w", encoding="utf-8") as fh:
            fh.write(source)

    def env(self) -> dict[str, str]:
        return _clean_env({"PYTHONPATH": os.pathsep.join(filter(None, [self.dir, str(ROOT)]))})

    def run_python(self, code: str, timeout: float) -> subprocess.CompletedProcess[bytes]:
        with open(self.log_path, "ab") as log:
            return subprocess.run(
                [sys.executable, "-c", code],
                cwd=self.dir,
                env=self.env(),
                stdout=log,
                stderr=log,
                timeout=timeout,
                check=False,
            )

    def start_worker(self, concurrency: int) -> subprocess.Popen[bytes]:
        code = (
            f"import {_PROC_MODULE} as m\n"
            "with m.app.open():\n"
            f"    m.app.run_worker(concurrency={concurrency}, wait=False)\n"
        )
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=self.dir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )


def procrastinate_drain_once(
    tmp: str, url: str, n: int, concurrency: int, timeout: float
) -> dict[str, float]:
    app = _ProcrastinateApp(tmp, url)
    # Schema and jobs first, not timed: one job per receiver per event, deferred in batches.
    setup = (
        f"import {_PROC_MODULE} as m\n"
        "with m.app.open():\n"
        "    m.app.schema_manager.apply_schema()\n"
        f"    for start in range(0, {n}, 1000):\n"
        f"        seqs = range(start, min({n}, start + 1000))\n"
        f"        for i in range({RECEIVERS}):\n"
        "            getattr(m, f'receiver_{i}').batch_defer(*({'seq': s} for s in seqs))\n"
    )
    done = app.run_python(setup, timeout)
    if done.returncode != 0:
        raise RuntimeError(f"procrastinate setup failed:\n{app.log_tail()}")
    expected = n * RECEIVERS
    start = time.time()
    proc = app.start_worker(concurrency)
    try:
        returncode = proc.wait(timeout)
    finally:
        _stop_process(proc)
    stamps = sorted(ts for _, ts in app.records())
    if returncode != 0 or len(stamps) != expected:
        raise RuntimeError(
            f"procrastinate worker exited {returncode} after {len(stamps)}/{expected}:\n"
            f"{app.log_tail()}"
        )
    return _drain_numbers(stamps, start)


def bench_drain(report: Report, sizes: Sizes, server: str) -> None:
    n = sizes.drain_events
    timeout = 60.0 + n * RECEIVERS / 50.0
    runs: dict[str, list[dict[str, float]]] = {"evq1": [], "evq4": [], "proc": []}
    with tempfile.TemporaryDirectory(prefix="bench-evq-pg-") as tmp:
        for r in range(sizes.repeats):
            for key, label in (("evq1", "evq 1 worker"), ("evq4", "evq 4 processes")):
                _log(f"drain: repeat {r + 1}/{sizes.repeats}, {label}")
                run_dir = tempfile.mkdtemp(dir=tmp)
                with _schema(server) as url:
                    workers = 4 if key == "evq4" else 1
                    runs[key].append(evq_drain_once(run_dir, url, n, workers, timeout))
                shutil.rmtree(run_dir, ignore_errors=True)
            _log(f"drain: repeat {r + 1}/{sizes.repeats}, procrastinate concurrency 4")
            run_dir = tempfile.mkdtemp(dir=tmp)
            with _schema(server) as url:
                runs["proc"].append(procrastinate_drain_once(run_dir, url, n, 4, timeout))
            shutil.rmtree(run_dir, ignore_errors=True)
    s = "drain"
    what = f"{n:,} events x {RECEIVERS} receivers"
    rows = {}
    for key, label in (
        ("evq1", "evq worker --burst, 1 worker"),
        ("evq4", "evq worker --burst, 4 processes"),
        ("proc", "procrastinate, concurrency 4"),
    ):
        rows[key] = report.add(
            s, f"{label}, {what}", "deliveries/s", [x["deliveries_per_s"] for x in runs[key]]
        )
        report.add(s, f"{label}: spawn to first delivery", "s", [x["startup_s"] for x in runs[key]])
        report.add(
            s, f"{label}: steady rate", "deliveries/s", [x["steady_per_s"] for x in runs[key]]
        )
    report.compare("drain: 4 processes / 1 worker", rows["evq4"], rows["evq1"])
    best = rows["evq4"] if rows["evq4"].median >= rows["evq1"].median else rows["evq1"]
    cp = report.compare("drain: evq (best of 1 / 4 processes) / procrastinate", best, rows["proc"])
    per_repeat = [
        a["deliveries_per_s"] / b["deliveries_per_s"]
        for a, b in zip(runs["evq4"], runs["evq1"], strict=True)
    ]
    report.target(
        "drain: 4 processes never slower than 1 (worst repeat's ratio)",
        min(per_repeat),
        "x",
        1.0,
        at_most=False,
        detail="ratios per repeat: " + ", ".join(f"{x:.2f}" for x in per_repeat),
    )
    report.target("drain >= 10x procrastinate (concurrency 4)", cp.ratio, "x", 10.0, at_most=False)


# --------------------------------------------------------------------------- 3. latency


def evq_latency_once(
    tmp: str, url: str, n: int, idle: float, gap: tuple[float, float], rng: random.Random
) -> dict[str, float]:
    app = _EvqApp(tmp, receivers=1)
    app.db_path = url
    with _evq_on(url):
        evq.publish(EVENT_NAME, payload=_payload(WARMUP_SEQ))  # Tables exist before the worker.
        proc = app.start_worker()
        try:
            app.wait_executions(1, proc, timeout=60.0)
            time.sleep(idle)
            published: list[float] = []
            for seq in range(n):
                if seq:
                    time.sleep(rng.uniform(*gap))
                evq.publish(EVENT_NAME, payload=_payload(seq))
                published.append(time.time())
            app.wait_executions(n + 1, proc, timeout=60.0)
        finally:
            _stop_process(proc)
    started = dict(app.records())
    latencies = [(started[seq] - published[seq]) * 1000.0 for seq in range(n)]
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "first_ms": latencies[0],
        "max_ms": max(latencies),
    }


def bench_latency(report: Report, sizes: Sizes, server: str) -> None:
    n, idle, gap = sizes.latency_events, sizes.idle, sizes.gap
    _log(f"latency: evq worker idle {idle:g} s, then {n} events")
    with tempfile.TemporaryDirectory(prefix="bench-evq-pg-") as tmp, _schema(server) as url:
        stats = evq_latency_once(tmp, url, n, idle, gap, random.Random(12345))
    s = "latency"
    what = f"idle {idle:g} s, {n} events, gaps {gap[0] * 1000:.0f}-{gap[1] * 1000:.0f} ms"
    report.add(s, f"evq p50 ({what})", "ms", [stats["p50_ms"]])
    report.add(s, "evq p99", "ms", [stats["p99_ms"]])
    report.add(s, "evq first event after the idle period", "ms", [stats["first_ms"]])
    report.add(s, "evq max", "ms", [stats["max_ms"]])
    report.target(
        f"latency p50 <= 5 ms after {idle:g} s idle", stats["p50_ms"], "ms", 5.0, at_most=True
    )
    report.target(
        f"latency p99 <= 15 ms after {idle:g} s idle", stats["p99_ms"], "ms", 15.0, at_most=True
    )


# --------------------------------------------------------------------------- 4. scale

# As a worker leaves an event delivered long ago: fanned out, 3 deliveries done, 3 attempts.
_HISTORY_EVENTS = """INSERT INTO evq_event (id, name, payload, published_at, due_at, dispatched_at)
SELECT md5(g::text), %(name)s, %(payload)s, %(at)s + g * 0.001, NULL, %(at)s + g * 0.001
FROM generate_series(1, %(count)s) AS g"""
_HISTORY_DELIVERIES = """INSERT INTO evq_delivery
    (event_seq, receiver, state, due_at, attempt, created_at, started_at, finished_at)
SELECT e.seq, r.receiver, 'done', NULL, 1, e.published_at, e.published_at, e.published_at
FROM evq_event e CROSS JOIN unnest(%(receivers)s::text[]) AS r(receiver) ORDER BY e.seq"""
_HISTORY_ATTEMPTS = """INSERT INTO evq_attempt
    (delivery_id, attempt, worker, started_at, finished_at, outcome)
SELECT id, 1, 'bench', started_at, finished_at, 'done' FROM evq_delivery ORDER BY id"""
_HISTORY_COUNTER = """INSERT INTO evq_counter (name, shard, value)
VALUES ('dispatched', 0, %(count)s)
ON CONFLICT (name, shard) DO UPDATE SET value = excluded.value"""


def _build_history(url: str, stored: int, pending: int) -> float:
    """Fill a fresh schema with `stored` events: all but `pending` delivered long ago (written
    server-side in one transaction, then vacuumed and analyzed as autovacuum would), the last
    `pending` published through evq and not fanned out yet. Returns the seconds it took."""
    started = time.monotonic()
    queue = open_queue(url)
    try:
        queue.check()  # evq's tables, as `evq migrate` makes them
    finally:
        queue.close()
    done = stored - pending
    params = {
        "name": EVENT_NAME,
        "payload": json.dumps(_payload(0)),
        "at": time.time() - 86_400.0 * 30,
        "count": done,
        "receivers": [receiver for _, receiver in _bench_routing().subscriptions],
    }
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        with conn.transaction():
            for statement in (
                _HISTORY_EVENTS,
                _HISTORY_DELIVERIES,
                _HISTORY_ATTEMPTS,
                _HISTORY_COUNTER,
            ):
                conn.execute(statement, params)
        conn.execute("VACUUM ANALYZE evq_event, evq_delivery, evq_attempt")
    _publish_backlog(url, pending)
    return time.monotonic() - started


def _publish_seconds(urls: dict[str, str], n: int) -> dict[str, list[float]]:
    """Seconds of `n` single publishes (validate, then store in one transaction, as
    `evq.publish()` does) into each queue, taking turns one publish at a time: a commit waits
    for an fsync, whose time swings with the rest of the machine, so each side meets the same
    swings."""
    queues = {key: open_queue(url) for key, url in urls.items()}
    times: dict[str, list[float]] = {key: [] for key in urls}
    try:
        for queue in queues.values():
            queue.publish([publisher.prepare(EVENT_NAME, payload=_payload(-1))])  # Connects.
        for seq in range(n):
            for key in sorted(queues, reverse=seq % 2 == 1):
                start = time.perf_counter()
                queues[key].publish([publisher.prepare(EVENT_NAME, payload=_payload(seq))])
                times[key].append(time.perf_counter() - start)
    finally:
        for queue in queues.values():
            queue.close()
    return times


def _status_ms(url: str) -> float:
    """Median wall time of `evq status` (3 runs after 1 untimed)."""
    cmd = [*_evq_command(), "status", "--url", url]
    return command_wall_time(cmd, 3, env=_clean_env(), warmup=1)["median_ms"]


def bench_scale(report: Report, sizes: Sizes, server: str) -> None:
    small_n, large_n, pending = sizes.stored_small, sizes.stored_large, sizes.pending
    cycles = max(5, min(50, pending * RECEIVERS // (LEASE_LIMIT * sizes.repeats) - 2))
    labels = {"small": f"{small_n:,} stored", "large": f"{large_n:,} stored"}
    values: dict[tuple[str, str], list[float]] = {}
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        for key, stored in (("small", small_n), ("large", large_n)):
            urls[key] = stack.enter_context(_schema(server))
            _log(f"scale: filling a queue with {stored:,} events ({pending:,} pending)")
            values[(key, "fill")] = [_build_history(urls[key], stored, pending)]
            values[(key, "size")] = [_schema_megabytes(urls[key])]
        for r in range(sizes.repeats):
            _log(f"scale: repeat {r + 1}/{sizes.repeats}")
            # Alternate which goes first: the first of a pair met colder caches.
            for key in ("small", "large") if r % 2 == 0 else ("large", "small"):
                url = urls[key]
                lease = statistics.median(_lease_cycle_seconds(url, cycles)) * 1e6
                values.setdefault((key, "lease"), []).append(lease)
                values.setdefault((key, "status"), []).append(_status_ms(url))
            for key, seconds in _publish_seconds(urls, sizes.scale_publishes).items():
                values.setdefault((key, "publish"), []).append(statistics.median(seconds) * 1e6)
    s = "scale"
    rows: dict[tuple[str, str], Row] = {}
    for key in ("small", "large"):
        report.add(s, f"{labels[key]}: evq tables and indexes", "MiB", values[(key, "size")])
        report.add(s, f"{labels[key]}: time to build them (setup)", "s", values[(key, "fill")])
        rows[(key, "publish")] = report.add(
            s,
            f"{labels[key]}: one publish (the two queues in turns)",
            "us",
            values[(key, "publish")],
        )
        rows[(key, "lease")] = report.add(
            s,
            f"{labels[key]}: one dequeue cycle (ack 16 + lease 16, {cycles} cycles)",
            "us",
            values[(key, "lease")],
        )
        rows[(key, "status")] = report.add(
            s, f"{labels[key]}: `evq status` wall time", "ms", values[(key, "status")]
        )
    for what, name in (("publish", "publish"), ("lease", "dequeue"), ("status", "`evq status`")):
        comparison = report.compare(
            f"{name}: {labels['large']} / {labels['small']}",
            rows[("large", what)],
            rows[("small", what)],
        )
        report.target(
            f"{name} cost with {large_n:,} stored <= 1.5x with {small_n:,}",
            comparison.ratio,
            "x",
            1.5,
            at_most=True,
        )


def _schema_megabytes(url: str) -> float:
    """The size of evq's tables with their indexes (and TOAST) in the URL's schema."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
            " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
        ).fetchone()
    return float(row[0] or 0) / 2**20 if row else 0.0


# --------------------------------------------------------------------------- 5. crash

# Each receiver records which delivery it ran (event x receiver), after a little work, so that
# a kill lands while deliveries are leased and a lost or repeated delivery can be named.
_CRASH_RECEIVER = """

def receiver_{i}(event, /):
    time.sleep({work!r})
    _record(event.payload["order_id"] * {width} + {i})


evq.subscribe({name!r}, receiver=receiver_{i})
"""
_CRASH_WORK = 0.002  # seconds of "work" per delivery


class _CrashApp(_EvqApp):
    """`_EvqApp` whose receivers record the delivery they ran, not only its event."""

    def __init__(self, tmp: str, url: str) -> None:
        super().__init__(tmp)
        self.db_path = url  # Passed to `evq worker --url`.
        source = _APP_TEMPLATE.format(out=self.out_path, record=RECORD_SOURCE) + "".join(
            _CRASH_RECEIVER.format(i=i, name=EVENT_NAME, work=_CRASH_WORK, width=RECEIVERS)
            for i in range(RECEIVERS)
        )
        with open(os.path.join(tmp, f"{APP_MODULE}.py"), "w", encoding="utf-8") as fh:
            fh.write(source)


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _wait_for(check: Callable[[], bool], timeout: float, poll: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(poll)
    return check()


def evq_crash_once(tmp: str, url: str, n: int, lease: float, kill_at: float) -> dict[str, float]:
    """Publish `n` events x 3 receivers; SIGKILL a 4-process worker (and its children) once
    `kill_at` of the deliveries ran, while it holds leases; then start a fresh worker and
    wait, no command run by hand, until every delivery is done or the lease and a minute
    have passed. Returns what was lost, stuck, repeated and how long recovery took."""
    app = _CrashApp(tmp, url)
    _publish_backlog(url, n)
    expected = {seq * RECEIVERS + i for seq in range(n) for i in range(RECEIVERS)}
    running_sql = "SELECT count(*) FROM evq_delivery WHERE state = 'running'"
    lease_arg = ["--lease", f"{lease:g}s"]
    doomed = app.start_worker("--workers", "4", "--worker-type", "process", *lease_arg)
    try:
        if not _wait_for(lambda: len(app.records()) >= kill_at * len(expected), 120.0):
            raise RuntimeError(f"the worker ran too little before the kill:\n{app.log_tail()}")
        os.killpg(doomed.pid, signal.SIGSTOP)  # Frozen: count the leases it holds, then kill.
        held = _count(url, running_sql)
        os.killpg(doomed.pid, signal.SIGKILL)
        killed = time.monotonic()
        doomed.wait()
    finally:
        _stop_process(doomed)
    ran_before = len(app.records())
    fresh = app.start_worker(*lease_arg)
    done_sql = "SELECT count(*) FROM evq_delivery WHERE state = 'done'"
    try:
        _wait_for(lambda: _count(url, done_sql) >= len(expected), lease + 60.0, poll=0.05)
        recovered = time.monotonic() - killed
    finally:
        _stop_process(fresh)
    ran = [seq for seq, _ in app.records()]
    return {
        "lost": float(len(expected - set(ran))),
        "stuck": float(_count(url, "SELECT count(*) FROM evq_delivery WHERE state <> 'done'")),
        "missing_rows": float(len(expected) - _count(url, "SELECT count(*) FROM evq_delivery")),
        "held": float(held),
        "ran_before": float(ran_before),
        "repeated": float(len(ran) - len(set(ran))),
        "recovery_s": recovered,
    }


def bench_crash(report: Report, sizes: Sizes, server: str) -> None:
    n, lease = sizes.crash_events, sizes.crash_lease
    runs: list[dict[str, float]] = []
    kill_points = (0.25, 0.5, 0.75)
    with tempfile.TemporaryDirectory(prefix="bench-evq-pg-") as tmp:
        for r in range(sizes.repeats):
            kill_at = kill_points[r % len(kill_points)]
            _log(f"crash: repeat {r + 1}/{sizes.repeats}, SIGKILL after {kill_at:.0%}")
            run_dir = tempfile.mkdtemp(dir=tmp)
            with _schema(server) as url:
                runs.append(evq_crash_once(run_dir, url, n, lease, kill_at))
            shutil.rmtree(run_dir, ignore_errors=True)
    s = "crash"
    what = f"{n:,} events x {RECEIVERS} receivers, lease {lease:g} s"
    kills = ", ".join(f"{kill_points[r % len(kill_points)]:.0%}" for r in range(len(runs)))
    report.add(
        s,
        f"leases held by the killed worker ({what}; killed after {kills})",
        "deliveries",
        [x["held"] for x in runs],
    )
    report.add(s, "deliveries run before the kill", "deliveries", [x["ran_before"] for x in runs])
    report.add(
        s,
        "deliveries run twice (at least once: the killed worker's)",
        "deliveries",
        [x["repeated"] for x in runs],
    )
    report.add(
        s,
        "kill to every delivery done (the fresh worker drains the rest)",
        "s",
        [x["recovery_s"] for x in runs],
    )
    lost = max(x["lost"] + x["missing_rows"] for x in runs)
    stuck = max(x["stuck"] for x in runs)
    report.add(s, "deliveries lost (worst run)", "deliveries", [lost])
    report.add(s, "deliveries stuck once the lease expired (worst run)", "deliveries", [stuck])
    held = ", ".join(f"{x['held']:.0f}" for x in runs)
    report.target(
        "crash: 0 deliveries lost",
        lost,
        "deliveries",
        0.0,
        at_most=True,
        detail=f"{len(runs)} kills; leases held when killed: {held}",
    )
    report.target(
        "crash: 0 stuck once the lease has expired, nothing run by hand",
        stuck,
        "deliveries",
        0.0,
        at_most=True,
    )


# --------------------------------------------------------------------------- output


def _versions(server: str) -> list[tuple[str, str]]:
    import platform

    import procrastinate

    with psycopg.connect(server) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW synchronous_commit").fetchone()
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return [
        ("cores", str(os.cpu_count())),
        ("Python", platform.python_version()),
        ("PostgreSQL", row[0] if row else "?"),
        ("synchronous_commit", fsync[0] if fsync else "?"),
        ("psycopg", psycopg.__version__),
        ("procrastinate", getattr(procrastinate, "__version__", "?")),
        ("evq", f"{evq.__version__} (git {commit or '?'}{', uncommitted' if dirty else ''})"),
    ]


def render(report: Report, sizes: Sizes, server: str, argv: Sequence[str], elapsed: float) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# evq on PostgreSQL: benchmark results",
        f"Generated by `python benchmarks/postgres.py {' '.join(argv)}`".rstrip()
        + f" on {now}, in {elapsed / 60:.1f} min. Every ratio compares medians measured in"
        " this same run; PostgreSQL on the same machine (TCP, 127.0.0.1).",
        "## Machine\n\n" + _table(("", ""), _versions(server)),
        "## Sizes\n\n"
        + _table(
            ("", ""), [(f.name, str(getattr(sizes, f.name))) for f in dataclasses.fields(sizes)]
        ),
        "## Targets\n\n"
        + _table(
            ("target", "measured", "goal", "result", "note"),
            [
                (
                    t.label,
                    "-" if t.measured is None else f"{_fmt(t.measured)} {t.unit}",
                    f"{'<=' if t.at_most else '>='} {_fmt(t.goal)} {t.unit}",
                    f"**{t.result}**" + (f" ({t.by_how_much()})" if t.by_how_much() else ""),
                    t.detail,
                )
                for t in report.targets
            ],
        ),
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
        ),
        "## All measurements\n\nSpread is min-max over the repeats.\n\n"
        + _table(
            ("section", "measurement", "median", "spread", "unit", "runs"),
            [
                (r.section, r.label, _fmt(r.median), r.spread_text(), r.unit, str(len(r.values)))
                for r in report.rows
            ],
        ),
    ]
    if report.notes or report.errors:
        parts.append(
            "## Notes and errors\n\n"
            + "\n".join([f"- {n}" for n in report.notes] + [f"- ERROR {e}" for e in report.errors])
        )
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- main

BENCHES: dict[str, Callable[[Report, Sizes, str], None]] = {
    "publish": bench_publish,
    "drain": bench_drain,
    "latency": bench_latency,
    "scale": bench_scale,
    "crash": bench_crash,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get(URL_ENV), help=f"server (${URL_ENV})")
    parser.add_argument("--repeats", type=int, help="repeats of publish and drain (3)")
    parser.add_argument("--idle", type=float, help="seconds a worker idles before latency (60)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error(f"give --url or set {URL_ENV}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    sizes = Sizes.from_args(args)
    report = Report()
    sections = args.only or SECTIONS
    if args.only:
        report.notes.append(f"partial run: only {', '.join(sections)}")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _use_bytecode_cache()
    run_sections(report, sections, lambda name: BENCHES[name](report, sizes, args.url))
    shown = [a if not a.startswith(("postgres://", "postgresql://")) else "URL" for a in argv]
    text = render(report, sizes, args.url, shown, time.monotonic() - _STARTED)
    print(text)
    write_results(args.output, text)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
