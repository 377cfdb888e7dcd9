"""Benchmark evq against raw SQLite and raw huey, side by side in one run.

    python benchmarks/run.py [--size N] [--repeats R] [--idle SECONDS] [--smoke]
                             [--output benchmarks/RESULTS.md]

Every baseline (``benchmarks/baselines.py``) is measured in the same run as evq, interleaved
repeat by repeat, so that the ratios compare like with like on a shared, noisy machine. The
tables (medians, min-max spread, ratios, each target with PASS/MISS) are printed and written to
``--output``. Anything below the ``ANALYSIS_MARKER`` line of an existing output file (the
hand-written analysis of misses) is kept when the file is regenerated.

What is measured (the definitions of issue 5):

* publish: single ``evq.publish()`` calls at the default durability (``sync=full``) against
  SQLite's own single-row ``synchronous=FULL`` commit rate and raw huey's enqueue rate (one
  task per receiver, 3 receivers); ``evq.publish_many`` and ``evq publish --jsonl`` (command
  wall time, interpreter start-up included) in events/s.
* drain: ``size`` events x 3 receivers, published first (not timed); then ``evq worker
  --burst`` (or ``huey_consumer``) starts and the clock runs from just before the spawn to the
  last receiver's timestamp. 1 thread, 4 threads, 2 processes; default settings and logging.
* observability: the same drain (4 threads, 2 processes) with ``--metrics-port`` and with
  ``--log-format json``, each against the same worker without them, interleaved.
* latency: a worker (1 thread, 1 receiver) idle for ``--idle`` seconds, then events published
  one at a time with random gaps; ``publish()`` returning to the receiver starting. The
  worker's CPU over the idle period is the idle CPU figure.
* cli: ``evq publish`` wall time against ``python -c pass`` and ``python -c "import click,
  sqlite3, json"``, runs interleaved.
* memory: worker RSS while draining a backlog of ``--backlog`` events (evq and huey).
* scale: single publish, one lease+ack cycle (16 deliveries) and ``evq status`` on a file with
  1,000 stored events against one with ``--stored`` (1,000,000) stored events, most of them
  marked done with plain SQL (3 done deliveries and attempts each) to imitate history.

The receivers are identical for evq and huey: each appends one fixed-width record
(``baselines.RECORD_SIZE`` bytes: sequence number and ``time.time()``) with one ``write``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import huey
from baselines import (
    RECORD_SOURCE,
    _event,
    _HueyApp,
    _RecordedRun,
    _stop_process,
    _tempdir,
    command_wall_time,
    current_rss_mb,
    huey_consumer_command,
    huey_drain_stats,
    huey_latency,
    huey_publish_rate,
    idle_process_stats,
    peak_rss_mb,
    percentile,
    process_tree_cpu_seconds,
    sqlite_batch_rate,
    sqlite_commit_rate,
)

import evq
import evq.config
from evq import publisher
from evq.storage import open_queue
from evq.storage.contract import Outcome, Routing

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUTPUT = HERE / "RESULTS.md"
ANALYSIS_MARKER = (
    "<!-- analysis: everything below this line is kept when run.py rewrites this file -->"
)
APP_MODULE = "evq_bench_app"
EVENT_NAME = "order.created"
RECEIVERS = 3
WARMUP_SEQ = 9_999_999_999  # Fits the record's 10 digits; never a measured sequence number.
LEASE_LIMIT = 16  # The worker's default --prefetch.
SECTIONS = ("publish", "drain", "observability", "latency", "cli", "memory", "scale")
_STARTED = time.monotonic()


# --------------------------------------------------------------------------- sizes


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each measurement is; see ``--help``."""

    events: int
    batch_events: int
    repeats: int
    idle: float
    latency_events: int
    gap: tuple[float, float]
    huey_idle_seconds: float
    backlog: int
    memory_window: float
    stored_small: int
    stored_large: int
    pending: int
    scale_publishes: int
    cli_runs: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Sizes:
        if args.smoke:
            sizes = cls(
                events=200,
                batch_events=4_000,
                repeats=1,
                idle=1.0,
                latency_events=10,
                gap=(0.02, 0.12),
                huey_idle_seconds=2.0,
                backlog=2_000,
                memory_window=1.0,
                stored_small=1_000,
                stored_large=5_000,
                pending=1_000,
                scale_publishes=20,
                cli_runs=3,
            )
        else:
            sizes = cls(
                events=5_000,
                batch_events=100_000,
                repeats=3,
                idle=60.0,
                latency_events=200,
                gap=(0.02, 0.12),
                huey_idle_seconds=30.0,
                backlog=100_000,
                memory_window=10.0,
                stored_small=1_000,
                stored_large=1_000_000,
                pending=1_000,
                scale_publishes=300,
                cli_runs=20,
            )
        changes: dict[str, Any] = {}
        if args.size is not None:
            changes["events"] = args.size
            changes["batch_events"] = 20 * args.size
        for name in ("repeats", "idle", "backlog", "stored"):
            value = getattr(args, name)
            if value is not None:
                changes["stored_large" if name == "stored" else name] = value
        return dataclasses.replace(sizes, **changes)


# --------------------------------------------------------------------------- results


@dataclasses.dataclass
class Row:
    """One measured quantity: every repeat's value, summarised by median and spread."""

    section: str
    label: str
    unit: str
    values: list[float]
    spread: str | None = None

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    def spread_text(self) -> str:
        if self.spread is not None:
            return self.spread
        if len(self.values) < 2:
            return "-"
        return f"{_fmt(min(self.values))}-{_fmt(max(self.values))}"


@dataclasses.dataclass
class Comparison:
    """evq against a baseline measured in the same run (ratio of medians)."""

    label: str
    evq: Row
    baseline: Row

    @property
    def ratio(self) -> float:
        if self.baseline.median == 0:
            return float("inf") if self.evq.median else 1.0
        return self.evq.median / self.baseline.median


@dataclasses.dataclass
class Target:
    """A target of issue 5: a measured value (a ratio or an absolute figure) against a goal."""

    label: str
    measured: float | None
    unit: str
    goal: float
    at_most: bool
    detail: str = ""

    @property
    def result(self) -> str:
        if self.measured is None:
            return "SKIPPED"
        ok = self.measured <= self.goal if self.at_most else self.measured >= self.goal
        return "PASS" if ok else "MISS"

    def by_how_much(self) -> str:
        if self.measured is None or self.result == "PASS":
            return ""
        if self.at_most:
            return f"{(self.measured / self.goal - 1) * 100:.0f} % over"
        return f"{(1 - self.measured / self.goal) * 100:.0f} % short"


@dataclasses.dataclass
class Report:
    """Everything one run measured, in the order it was measured."""

    rows: list[Row] = dataclasses.field(default_factory=list)
    comparisons: list[Comparison] = dataclasses.field(default_factory=list)
    targets: list[Target] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(
        self,
        section: str,
        label: str,
        unit: str,
        values: Sequence[float],
        spread: str | None = None,
    ) -> Row:
        row = Row(section, label, unit, [float(v) for v in values], spread)
        self.rows.append(row)
        _log(f"{section}: {label} = {_fmt(row.median)} {unit} ({row.spread_text()})")
        return row

    def compare(self, label: str, evq_row: Row, baseline: Row) -> Comparison:
        comparison = Comparison(label, evq_row, baseline)
        self.comparisons.append(comparison)
        return comparison

    def target(
        self,
        label: str,
        measured: float | None,
        unit: str,
        goal: float,
        *,
        at_most: bool,
        detail: str = "",
    ) -> None:
        self.targets.append(Target(label, measured, unit, goal, at_most, detail))


# --------------------------------------------------------------------------- helpers


def _log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def _fmt(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _payload(seq: int) -> dict[str, Any]:
    # The same data huey's baseline enqueues (its event carries the topic in the payload).
    return {"order_id": seq, "amount": "9.99"}


def _items(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"name": EVENT_NAME, "payload": _payload(seq)} for seq in range(start, stop)]


@contextlib.contextmanager
def _evq_settings(path: str, sync: str = "full") -> Iterator[None]:
    """Point this process's evq.publish() at `path` with `sync`; close the handle afterwards."""
    evq.configure(url=f"sqlite:///{os.path.abspath(path)}?sync={sync}")
    try:
        yield
    finally:
        publisher.queue().close()
        evq.config.reset()


def _publish_backlog(path: str, events: int, chunk: int = 50_000) -> None:
    """Fill a queue file quickly (setup, not measured): publish_many with sync=off."""
    with _evq_settings(path, sync="off"):
        for start in range(0, events, chunk):
            evq.publish_many(_items(start, min(events, start + chunk)), batch_size=10_000)


def _evq_command() -> list[str]:
    """The `evq` console script next to this interpreter (what users run), else -m evq."""
    script = Path(sys.executable).parent / "evq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "evq"]


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVQ_")}
    env.update(extra or {})
    return env


_APP_TEMPLATE = '''\
"""evq receivers for the evq benchmarks (generated): the same work as the huey baseline's."""
import os
import time

import evq

OUT_PATH = {out!r}


{record}'''

_APP_RECEIVER = """

def receiver_{i}(event, /):
    _record(event.payload["order_id"])


evq.subscribe({name!r}, receiver=receiver_{i})
"""


class _EvqApp(_RecordedRun):
    """A generated subscriptions module and a queue file in a temp dir, for `evq worker`."""

    process_name = "evq worker"

    def __init__(self, tmp: str, receivers: int = RECEIVERS) -> None:
        self.dir = tmp
        self.db_path = os.path.join(tmp, "evq.db")
        self.out_path = os.path.join(tmp, "executions.log")
        self.log_path = os.path.join(tmp, "worker.log")
        source = _APP_TEMPLATE.format(out=self.out_path, record=RECORD_SOURCE) + "".join(
            _APP_RECEIVER.format(i=i, name=EVENT_NAME) for i in range(receivers)
        )
        with open(os.path.join(tmp, f"{APP_MODULE}.py"), "w", encoding="utf-8") as fh:
            fh.write(source)

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        env = _clean_env({"PYTHONPATH": os.pathsep.join(filter(None, [self.dir, str(ROOT)]))})
        cmd = [sys.executable, "-m", "evq", "worker", "--app", APP_MODULE]
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [*cmd, "--url", self.db_path, *args],
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def wait_executions(
        self, expected: int, proc: subprocess.Popen[bytes], timeout: float, poll: float = 0.002
    ) -> None:
        super().wait_executions(expected, proc, timeout, poll)


_BENCH_RECEIVERS = tuple(f"{APP_MODULE}:receiver_{i}" for i in range(RECEIVERS))


def _bench_routing() -> Routing:
    """The worker's view of the subscriptions, for leasing in this process: every event goes
    to the same 3 receivers, with evq's default lease."""
    return Routing(
        subscriptions=tuple((EVENT_NAME, receiver) for receiver in _BENCH_RECEIVERS),
        lease_seconds=dict.fromkeys(_BENCH_RECEIVERS, 30.0),
    )


def _drain_numbers(stamps: list[float], start: float) -> dict[str, float]:
    first, last = stamps[0], stamps[-1]
    return {
        "deliveries_per_s": len(stamps) / (last - start),
        "startup_s": first - start,
        "steady_per_s": (len(stamps) - 1) / (last - first) if len(stamps) > 1 else 0.0,
        "total_s": last - start,
    }


# --------------------------------------------------------------------------- 1. publish


def _evq_single_publish_rate(path: str, n: int) -> float:
    with _evq_settings(path):
        evq.publish(EVENT_NAME, payload=_payload(-1))  # Creates the file; not timed.
        start = time.perf_counter()
        for seq in range(n):
            evq.publish(EVENT_NAME, payload=_payload(seq))
        return n / (time.perf_counter() - start)


def _evq_publish_many_rate(path: str, items: list[dict[str, Any]]) -> float:
    with _evq_settings(path):
        evq.publish(EVENT_NAME, payload=_payload(-1))
        start = time.perf_counter()
        evq.publish_many(items)
        return len(items) / (time.perf_counter() - start)


def _evq_jsonl_rate(path: str, jsonl: str, count: int) -> float:
    cmd = [*_evq_command(), "publish", "--jsonl", jsonl, "--url", path]
    wall_ms = command_wall_time(cmd, 1, env=_clean_env(), warmup=0)["median_ms"]
    return count / (wall_ms / 1000.0)


def bench_publish(report: Report, sizes: Sizes, tmp_root: str | None) -> None:
    n, batch = sizes.events, sizes.batch_events
    values: dict[str, list[float]] = {
        k: [] for k in ("single", "sqlite_full", "sqlite_normal", "huey", "many", "jsonl", "batch")
    }
    items = _items(0, batch)
    with _tempdir(tmp_root, "bench-evq-") as tmp:
        jsonl = os.path.join(tmp, "events.jsonl")
        with open(jsonl, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(item) + "\n" for item in items)
        for r in range(sizes.repeats):
            _log(f"publish: repeat {r + 1}/{sizes.repeats}")
            run_dir = tempfile.mkdtemp(dir=tmp)
            values["single"].append(_evq_single_publish_rate(os.path.join(run_dir, "s.db"), n))
            values["sqlite_full"].append(sqlite_commit_rate(n, "FULL", repeats=1, tmp_root=tmp))
            values["huey"].append(huey_publish_rate(n, RECEIVERS, repeats=1, tmp_root=tmp))
            values["sqlite_normal"].append(sqlite_commit_rate(n, "NORMAL", repeats=1, tmp_root=tmp))
            values["many"].append(_evq_publish_many_rate(os.path.join(run_dir, "m.db"), items))
            values["jsonl"].append(_evq_jsonl_rate(os.path.join(run_dir, "j.db"), jsonl, batch))
            values["batch"].append(sqlite_batch_rate(batch, 1000, repeats=1, tmp_root=tmp))
            shutil.rmtree(run_dir, ignore_errors=True)
    s = "publish"
    single = report.add(s, "evq.publish() single events (sync=full)", "events/s", values["single"])
    full = report.add(
        s, "SQLite 1-row commits, synchronous=FULL", "commits/s", values["sqlite_full"]
    )
    report.add(s, "SQLite 1-row commits, synchronous=NORMAL", "commits/s", values["sqlite_normal"])
    raw_huey = report.add(
        s, f"raw huey enqueue, {RECEIVERS} tasks/event", "events/s", values["huey"]
    )
    many = report.add(s, f"evq.publish_many ({batch:,} events)", "events/s", values["many"])
    jsonl_row = report.add(
        s, f"`evq publish --jsonl` ({batch:,} events, wall)", "events/s", values["jsonl"]
    )
    report.add(s, "SQLite 1000 rows/commit, FULL", "rows/s", values["batch"])
    report.compare("single publish / SQLite FULL 1-row commit", single, full)
    report.compare("single publish / raw huey publish", single, raw_huey)
    ratio = single.median / full.median
    report.target(
        "single publish >= 0.8x SQLite FULL 1-row commit rate", ratio, "x", 0.8, at_most=False
    )
    report.target(
        "batch publish (publish_many) >= 200,000 events/s",
        many.median,
        "events/s",
        200_000,
        at_most=False,
    )
    report.target(
        "batch publish (`evq publish --jsonl`) >= 200,000 events/s",
        jsonl_row.median,
        "events/s",
        200_000,
        at_most=False,
    )


# --------------------------------------------------------------------------- 2. drain


_DRAIN_CONFIGS = (
    ("1 thread", 1, "thread"),
    ("4 threads", 4, "thread"),
    ("2 processes", 2, "process"),
)


def _evq_drain_once(
    tmp: str, n: int, workers: int, kind: str, timeout: float, extra: Sequence[str] = ()
) -> dict[str, float]:
    app = _EvqApp(tmp)
    _publish_backlog(app.db_path, n)
    expected = n * RECEIVERS
    start = time.time()  # Wall clock: compared with time.time() written by the receivers.
    proc = app.start_worker("--burst", "--workers", str(workers), "--worker-type", kind, *extra)
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


def bench_drain(report: Report, sizes: Sizes, tmp_root: str | None) -> None:
    n = sizes.events
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    timeout = 60.0 + n * RECEIVERS / 50.0
    with _tempdir(tmp_root, "bench-evq-") as tmp:
        for r in range(sizes.repeats):
            for label, workers, kind in _DRAIN_CONFIGS:
                _log(f"drain: repeat {r + 1}/{sizes.repeats}, {label}")
                run_dir = tempfile.mkdtemp(dir=tmp)
                runs.setdefault(("evq", label), []).append(
                    _evq_drain_once(run_dir, n, workers, kind, timeout)
                )
                shutil.rmtree(run_dir, ignore_errors=True)
                runs.setdefault(("huey", label), []).append(
                    huey_drain_stats(
                        n, workers, kind, RECEIVERS, repeats=1, timeout=timeout, tmp_root=tmp
                    )
                )
    s = "drain"
    for label, _, _ in _DRAIN_CONFIGS:
        rows = {}
        for who in ("evq", "huey"):
            stats = runs[(who, label)]
            rows[who] = report.add(
                s,
                f"{who} {label}, {n:,} events x {RECEIVERS} receivers",
                "deliveries/s",
                [x["deliveries_per_s"] for x in stats],
            )
            report.add(
                s, f"{who} {label}: spawn to first delivery", "s", [x["startup_s"] for x in stats]
            )
        comparison = report.compare(f"drain {label}: evq / raw huey", rows["evq"], rows["huey"])
        report.target(
            f"drain {label} >= 2x raw huey deliveries/s", comparison.ratio, "x", 2.0, at_most=False
        )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# What the observability options cost a draining worker, against the same drain without them.
_OBSERVABILITY_OPTIONS: tuple[tuple[str, Callable[[], list[str]]], ...] = (
    ("plain logs", lambda: []),
    ("--metrics-port", lambda: ["--metrics-port", str(_free_port())]),
    ("--log-format json", lambda: ["--log-format", "json"]),
)


def bench_observability(report: Report, sizes: Sizes, tmp_root: str | None) -> None:
    n = sizes.events
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    timeout = 60.0 + n * RECEIVERS / 50.0
    configs = [c for c in _DRAIN_CONFIGS if c[0] != "1 thread"]
    with _tempdir(tmp_root, "bench-evq-") as tmp:
        for r in range(sizes.repeats):
            for label, workers, kind in configs:
                for option, extra in _OBSERVABILITY_OPTIONS:
                    _log(f"observability: repeat {r + 1}/{sizes.repeats}, {label}, {option}")
                    run_dir = tempfile.mkdtemp(dir=tmp)
                    runs.setdefault((label, option), []).append(
                        _evq_drain_once(run_dir, n, workers, kind, timeout, extra())
                    )
                    shutil.rmtree(run_dir, ignore_errors=True)
    s = "observability"
    for label, _, _ in configs:
        rows = {
            option: report.add(
                s,
                f"evq {label} {option}, {n:,} events x {RECEIVERS} receivers",
                "deliveries/s",
                [x["deliveries_per_s"] for x in runs[(label, option)]],
            )
            for option, _ in _OBSERVABILITY_OPTIONS
        }
        for option, _ in _OBSERVABILITY_OPTIONS[1:]:
            report.compare(
                f"drain {label}: {option} / plain logs", rows[option], rows["plain logs"]
            )


# --------------------------------------------------------------------------- 3. latency


def _evq_latency_once(
    tmp: str, n: int, idle: float, gap: tuple[float, float], rng: random.Random
) -> dict[str, float]:
    app = _EvqApp(tmp, receivers=1)
    proc = app.start_worker()
    try:
        with _evq_settings(app.db_path):
            # One delivery first: the worker is up and polling when the idle period starts.
            evq.publish(EVENT_NAME, payload=_payload(WARMUP_SEQ))
            app.wait_executions(1, proc, timeout=60.0)
            cpu0, t0 = process_tree_cpu_seconds(proc.pid), time.monotonic()
            time.sleep(idle)
            cpu1, t1 = process_tree_cpu_seconds(proc.pid), time.monotonic()
            rss = current_rss_mb(proc.pid)
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
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "p25_ms": percentile(latencies, 25),
        "p75_ms": percentile(latencies, 75),
        "first_ms": latencies[0],
        "max_ms": max(latencies),
        "idle_cpu_percent": 100.0 * (cpu1 - cpu0) / (t1 - t0),
        "idle_rss_mb": rss,
    }


def bench_latency(report: Report, sizes: Sizes, tmp_root: str | None) -> None:
    n, idle, gap = sizes.latency_events, sizes.idle, sizes.gap
    with _tempdir(tmp_root, "bench-evq-") as tmp:
        _log(f"latency: evq worker idle {idle:g} s, then {n} events")
        mine = _evq_latency_once(tmp, n, idle, gap, random.Random(12345))
    _log(f"latency: huey consumer idle {idle:g} s, then {n} events")
    theirs = huey_latency(n, idle, gap, repeats=1, seed=12345, tmp_root=tmp_root)
    _log(f"latency: huey idle consumer CPU over {sizes.huey_idle_seconds:g} s")
    with huey_consumer_command(1, "thread", RECEIVERS, tmp_root=tmp_root) as (cmd, env):
        huey_idle = idle_process_stats(cmd, env, sizes.huey_idle_seconds, warmup=2.0)
    s = "latency"
    what = f"idle {idle:g} s, {n} events, gaps {gap[0] * 1000:.0f}-{gap[1] * 1000:.0f} ms"
    rows = {}
    for who, stats in (("evq", mine), ("huey", theirs)):
        iqr = f"IQR {_fmt(stats['p25_ms'])}-{_fmt(stats['p75_ms'])}" if "p25_ms" in stats else None
        rows[(who, "p50")] = report.add(s, f"{who} p50 ({what})", "ms", [stats["p50_ms"]], iqr)
        rows[(who, "p95")] = report.add(s, f"{who} p95", "ms", [stats["p95_ms"]])
        rows[(who, "p99")] = report.add(s, f"{who} p99", "ms", [stats["p99_ms"]])
        report.add(s, f"{who} first event after the idle period", "ms", [stats["first_ms"]])
        report.add(s, f"{who} max", "ms", [stats["max_ms"]])
    evq_cpu = report.add(
        s,
        f"evq idle worker CPU (1 thread, over {idle:g} s)",
        "% of a core",
        [mine["idle_cpu_percent"]],
    )
    huey_cpu = report.add(
        s,
        f"huey idle consumer CPU (1 thread, over {sizes.huey_idle_seconds:g} s)",
        "% of a core",
        [huey_idle["cpu_percent"]],
    )
    report.add(s, "evq idle worker RSS", "MiB", [mine["idle_rss_mb"]])
    report.add(s, "huey idle consumer RSS", "MiB", [huey_idle["rss_mb"]])
    for pct in ("p50", "p99"):
        report.compare(f"latency {pct}: evq / raw huey", rows[("evq", pct)], rows[("huey", pct)])
    report.compare("idle CPU: evq / raw huey", evq_cpu, huey_cpu)
    report.target(
        f"latency p50 <= 5 ms after {idle:g} s idle", mine["p50_ms"], "ms", 5.0, at_most=True
    )
    report.target(
        f"latency p99 <= 20 ms after {idle:g} s idle", mine["p99_ms"], "ms", 20.0, at_most=True
    )
    report.target(
        "idle worker CPU <= 2 % of a core", mine["idle_cpu_percent"], "%", 2.0, at_most=True
    )


# --------------------------------------------------------------------------- 4. cli


def bench_cli(report: Report, sizes: Sizes, tmp_root: str | None) -> None:
    with _tempdir(tmp_root, "bench-evq-") as tmp:
        db = os.path.join(tmp, "cli.db")
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            'python -c "import click, sqlite3, json"': [
                sys.executable,
                "-c",
                "import click, sqlite3, json",
            ],
            "`evq publish NAME --payload JSON`": [
                *_evq_command(),
                "publish",
                EVENT_NAME,
                "--payload",
                '{"order_id": 1}',
                "--url",
                db,
            ],
        }
        env = _clean_env()
        times: dict[str, list[float]] = {label: [] for label in commands}
        for cmd in commands.values():
            command_wall_time(cmd, 1, env=env, warmup=0)  # Page cache; creates the queue file.
        for _ in range(sizes.cli_runs):  # Interleaved, so drift affects all three alike.
            for label, cmd in commands.items():
                times[label].append(command_wall_time(cmd, 1, env=env, warmup=0)["median_ms"])
    rows = [
        report.add("cli", f"{label} wall time", "ms", values) for label, values in times.items()
    ]
    report.compare("`evq publish` / python -c pass", rows[2], rows[0])
    imports = report.compare(
        '`evq publish` / python -c "import click, sqlite3, json"', rows[2], rows[1]
    )
    report.target(
        '`evq publish` wall <= 1.3x python -c "import click, sqlite3, json"',
        imports.ratio,
        "x",
        1.3,
        at_most=True,
    )


# --------------------------------------------------------------------------- 5. memory


def _sample_rss(pid: int, window: float, alive: Callable[[], bool]) -> tuple[float, float]:
    """Watch `pid` for `window` seconds; return (peak RSS, RSS at the end) of its tree, MiB."""
    peak = 0.0
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the worker exited while its memory was measured")
        peak = max(peak, peak_rss_mb(pid), current_rss_mb(pid))
        time.sleep(0.1)
    return peak, current_rss_mb(pid)


def _evq_backlog_rss(tmp: str, backlog: int, window: float) -> dict[str, float]:
    app = _EvqApp(tmp)
    _publish_backlog(app.db_path, backlog)
    proc = app.start_worker()
    try:
        peak, now = _sample_rss(proc.pid, window, lambda: proc.poll() is None)
    finally:
        _stop_process(proc)
    return {"peak_mb": peak, "rss_mb": now, "delivered": float(app.executions())}


def _huey_backlog_rss(tmp: str, backlog: int, window: float) -> dict[str, float]:
    app = _HueyApp(tmp, RECEIVERS)
    queue_huey = app.load().huey
    rows = [
        (queue_huey.storage.name, queue_huey.serialize_task(task.s(seq, event)), 0)
        for seq in range(backlog)
        for event in (_event(seq),)
        for task in app.tasks()
    ]
    app.close()
    # Enqueued in one transaction (setup, not measured): huey's enqueue commits per task.
    with contextlib.closing(sqlite3.connect(app.db_path)) as conn, conn:
        conn.executemany("INSERT INTO task (queue, data, priority) VALUES (?, ?, ?)", rows)
    proc = app.start_consumer(1, "thread")
    try:
        peak, now = _sample_rss(proc.pid, window, lambda: proc.poll() is None)
    finally:
        _stop_process(proc)
    return {"peak_mb": peak, "rss_mb": now, "delivered": float(app.executions())}


def bench_memory(report: Report, sizes: Sizes, tmp_root: str | None) -> None:
    backlog, window = sizes.backlog, sizes.memory_window
    with _tempdir(tmp_root, "bench-evq-") as tmp:
        _log(f"memory: evq worker with a backlog of {backlog:,} events")
        mine = _evq_backlog_rss(tempfile.mkdtemp(dir=tmp), backlog, window)
        _log(f"memory: huey consumer with a backlog of {backlog:,} events")
        theirs = _huey_backlog_rss(tempfile.mkdtemp(dir=tmp), backlog, window)
    s = "memory"
    what = f"backlog {backlog:,} events x {RECEIVERS}, first {window:g} s of draining"
    evq_row = report.add(s, f"evq worker peak RSS ({what})", "MiB", [mine["peak_mb"]])
    huey_row = report.add(s, f"huey consumer peak RSS ({what})", "MiB", [theirs["peak_mb"]])
    report.add(s, f"evq deliveries in those {window:g} s", "deliveries", [mine["delivered"]])
    report.add(s, f"huey deliveries in those {window:g} s", "deliveries", [theirs["delivered"]])
    report.compare("worker peak RSS with a backlog: evq / raw huey", evq_row, huey_row)


# --------------------------------------------------------------------------- 6. scale


def _build_history(path: str, stored: int, pending: int) -> float:
    """Store `stored` events; all but the last `pending` look delivered long ago (3 done
    deliveries and 3 attempts each, written with plain SQL). Returns the seconds it took."""
    started = time.monotonic()
    _publish_backlog(path, stored)
    done = stored - pending
    if done > 0:
        receivers = _BENCH_RECEIVERS
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("BEGIN IMMEDIATE")
            (cut,) = conn.execute(
                "SELECT seq FROM evq_event ORDER BY seq LIMIT 1 OFFSET ?", (done - 1,)
            ).fetchone()
            conn.execute(
                "UPDATE evq_event SET due_at = NULL, dispatched_at = published_at WHERE seq <= ?",
                (cut,),
            )
            # As a worker's fan-out leaves it: the dispatch cursor at the last event fanned out.
            conn.execute(
                "INSERT INTO evq_counter (name, value) VALUES ('dispatch_cursor', ?)", (cut,)
            )
            conn.execute(
                "WITH r(receiver) AS (VALUES " + ", ".join("(?)" for _ in receivers) + ")"
                " INSERT INTO evq_delivery (event_seq, receiver, state, due_at, attempt,"
                " created_at, started_at, finished_at)"
                " SELECT e.seq, r.receiver, 'done', NULL, 1, e.published_at, e.published_at,"
                " e.published_at FROM evq_event e CROSS JOIN r WHERE e.seq <= ?",
                (*receivers, cut),
            )
            conn.execute(
                "INSERT INTO evq_attempt (delivery_id, attempt, worker, started_at, finished_at,"
                " outcome) SELECT id, 1, 'bench', started_at, finished_at, 'done'"
                " FROM evq_delivery WHERE state = 'done'"
            )
            conn.execute("COMMIT")
    return time.monotonic() - started


def _lease_cycle_seconds(path: str, cycles: int) -> list[float]:
    """Seconds per worker cycle: record the previous batch done and lease the next 16."""
    router = _bench_routing()
    queue = open_queue(path, role="work")  # What the worker uses.
    owner = "bench/lease"
    times: list[float] = []
    outcomes: list[Outcome] = []
    try:
        for _ in range(cycles):
            start = time.perf_counter()
            batch = queue.lease(router, owner=owner, limit=LEASE_LIMIT, outcomes=outcomes)
            times.append(time.perf_counter() - start)
            if len(batch.leases) < LEASE_LIMIT:
                raise RuntimeError(f"only {len(batch.leases)} deliveries left to lease")
            now = time.time()
            outcomes = [Outcome(lease, "done", now, now) for lease in batch.leases]
        queue.record(outcomes, owner=owner)
    finally:
        queue.close()
    return times


def _publish_seconds(path: str, n: int) -> list[float]:
    times: list[float] = []
    with _evq_settings(path):
        evq.publish(EVENT_NAME, payload=_payload(-1))
        for seq in range(n):
            start = time.perf_counter()
            evq.publish(EVENT_NAME, payload=_payload(seq))
            times.append(time.perf_counter() - start)
    return times


def _status_command(path: str) -> list[str]:
    return [*_evq_command(), "status", "--url", path]


def _status_missing() -> str | None:
    """Return why `evq status` cannot be measured, or None if it runs."""
    probe = subprocess.run(
        [*_evq_command(), "status", "--help"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        check=False,
    )
    if probe.returncode != 0:
        return f"`evq status` is not available yet ({probe.stderr.strip().splitlines()[-1:]})"
    return None


def bench_scale(report: Report, sizes: Sizes, tmp_root: str | None) -> None:
    small_n, large_n, pending = sizes.stored_small, sizes.stored_large, sizes.pending
    cycles = max(5, min(50, pending * RECEIVERS // (LEASE_LIMIT * sizes.repeats) - 2))
    status_missing = _status_missing()
    if status_missing:
        report.notes.append(f"scale: {status_missing}; its rows and target are skipped.")
    values: dict[tuple[str, str], list[float]] = {}
    labels = {"small": f"{small_n:,} stored", "large": f"{large_n:,} stored"}
    with _tempdir(tmp_root, "bench-evq-") as tmp:
        paths = {}
        for key, stored in (("small", small_n), ("large", large_n)):
            paths[key] = os.path.join(tmp, f"{key}.db")
            _log(f"scale: filling a queue with {stored:,} events ({pending:,} pending)")
            took = _build_history(paths[key], stored, pending)
            values.setdefault((key, "fill"), []).append(took)
            values[(key, "size")] = [os.path.getsize(paths[key]) / 2**20]
        for r in range(sizes.repeats):
            _log(f"scale: repeat {r + 1}/{sizes.repeats}")
            for key in ("small", "large"):
                path = paths[key]
                values.setdefault((key, "lease"), []).append(
                    statistics.median(_lease_cycle_seconds(path, cycles)) * 1e6
                )
                values.setdefault((key, "publish"), []).append(
                    statistics.median(_publish_seconds(path, sizes.scale_publishes)) * 1e6
                )
                if not status_missing:
                    timing = command_wall_time(_status_command(path), 3, env=_clean_env(), warmup=1)
                    values.setdefault((key, "status"), []).append(timing["median_ms"])
    s = "scale"
    rows: dict[tuple[str, str], Row] = {}
    for key in ("small", "large"):
        report.add(s, f"{labels[key]}: file size", "MiB", values[(key, "size")])
        report.add(s, f"{labels[key]}: time to build the file (setup)", "s", values[(key, "fill")])
        rows[(key, "publish")] = report.add(
            s, f"{labels[key]}: one evq.publish() (sync=full)", "us", values[(key, "publish")]
        )
        rows[(key, "lease")] = report.add(
            s,
            f"{labels[key]}: one dequeue cycle (ack 16 + lease 16, {cycles} cycles)",
            "us",
            values[(key, "lease")],
        )
        if (key, "status") in values:
            rows[(key, "status")] = report.add(
                s, f"{labels[key]}: `evq status` wall time", "ms", values[(key, "status")]
            )
    for what in ("publish", "lease", "status"):
        name = {"publish": "publish", "lease": "dequeue", "status": "`evq status`"}[what]
        goal = f"{name} cost with {large_n:,} stored <= 1.5x with {small_n:,}"
        if (key := ("large", what)) in rows:
            comparison = report.compare(
                f"{name}: {labels['large']} / {labels['small']}", rows[key], rows[("small", what)]
            )
            report.target(goal, comparison.ratio, "x", 1.5, at_most=True)
        else:
            report.target(goal, None, "x", 1.5, at_most=True, detail=status_missing or "")


# --------------------------------------------------------------------------- output


def _machine() -> list[tuple[str, str]]:
    cpu = platform.processor() or "unknown"
    with (
        contextlib.suppress(OSError),
        open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh,
    ):
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        click_version = importlib.metadata.version("click")
    except importlib.metadata.PackageNotFoundError:
        click_version = "?"
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    evq_version = (
        f"{evq.__version__} (git {commit or '?'}{', uncommitted changes' if dirty else ''})"
    )
    return [
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("SQLite", sqlite3.sqlite_version),
        ("huey", huey.__version__),
        ("click", click_version),
        ("evq", evq_version),
        ("temp files", tempfile.gettempdir()),
        ("bytecode cache", os.environ.get("PYTHONPYCACHEPREFIX", "default")),
    ]


def _git(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render(report: Report, sizes: Sizes, argv: Sequence[str], elapsed: float) -> str:
    """The results as Markdown (also printed as the run's output)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# evq benchmark results",
        f"Generated by `python benchmarks/run.py {' '.join(argv)}`".rstrip() + f" on {now},"
        f" in {elapsed / 60:.1f} min. Every ratio compares medians measured in this same run.",
        "## Machine\n\n" + _table(("", ""), _machine()),
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
        "## Targets\n\n" + _table(("target", "measured", "goal", "result", "note"), target_rows)
    )
    comparison_rows = [
        (
            c.label,
            f"{_fmt(c.evq.median)} {c.evq.unit}",
            f"{_fmt(c.baseline.median)} {c.baseline.unit}",
            f"{c.ratio:.{2 if c.ratio >= 0.1 else 4}f}x"
            if c.ratio != float("inf")
            else "n/a (baseline 0)",
        )
        for c in report.comparisons
    ]
    parts.append(
        "## Comparisons (evq / baseline, medians)\n\n"
        + _table(("comparison", "evq", "baseline", "ratio"), comparison_rows)
    )
    measurement_rows = [
        (r.section, r.label, _fmt(r.median), r.spread_text(), r.unit, str(len(r.values)))
        for r in report.rows
    ]
    parts.append(
        "## All measurements\n\nSpread is min-max over the repeats (IQR of the samples for"
        " latency p50).\n\n"
        + _table(("section", "measurement", "median", "spread", "unit", "runs"), measurement_rows)
    )
    if report.notes or report.errors:
        parts.append(
            "## Notes and errors\n\n"
            + "\n".join(f"- {n}" for n in report.notes)
            + ("\n" if report.notes and report.errors else "")
            + "\n".join(f"- ERROR {e}" for e in report.errors)
        )
    parts.append(
        "## Method\n\n"
        + "\n".join(
            f"- {line}"
            for line in (
                "Each repeat runs evq and its baselines back to back (interleaved), on fresh"
                " files in the same temporary directory; medians over repeats.",
                "Receivers are identical for evq and huey: each appends one 32-byte record"
                " (sequence, time.time()) with one write on an O_APPEND file.",
                "Drain: events published first (not timed); the clock runs from just before the"
                " worker is spawned (interpreter start-up included) to the last receiver's"
                " timestamp. Default settings and logging for both (`evq worker --burst`,"
                " `huey_consumer -w N -k TYPE`); evq with leases.",
                "Latency: 1 thread, 1 receiver; time.time() just after publish() returns to"
                " time.time() at the receiver's start; single run, IQR of the samples.",
                "Scale: 'dequeue' is one worker cycle in-process: record 16 outcomes done and"
                " lease the next 16 (evq.storage.sqlite.SqliteQueue.lease, sync=normal like the"
                " worker), median over the cycles of a repeat.",
            )
        )
    )
    return "\n\n".join(parts) + "\n"


def _kept_analysis(output: Path) -> str:
    try:
        text = output.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    _, marker, after = text.partition(ANALYSIS_MARKER)
    return after if marker else ""


# --------------------------------------------------------------------------- main


def _use_bytecode_cache() -> None:
    """Let every Python started from here cache its bytecode, as an installed package does.

    With PYTHONDONTWRITEBYTECODE=1 (set in some development shells) an editable checkout of
    evq is compiled from source on every start, which adds tens of milliseconds to every
    `evq` command and worker start-up that users of a built package never pay; huey and click
    have their .pyc from pip. The cache goes under the temp dir, not into the checkout.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.setdefault(
        "PYTHONPYCACHEPREFIX", os.path.join(tempfile.gettempdir(), "evq-bench-pycache")
    )
    modules = "evq.cli.publish, evq.cli.worker, evq.worker, evq.cli.bulk, huey.bin.huey_consumer"
    subprocess.run([sys.executable, "-c", f"import {modules}"], env=os.environ, check=False)


BENCHES: dict[str, Callable[[Report, Sizes, str | None], None]] = {
    "publish": bench_publish,
    "drain": bench_drain,
    "observability": bench_observability,
    "latency": bench_latency,
    "cli": bench_cli,
    "memory": bench_memory,
    "scale": bench_scale,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, help="events per publish/drain run (5000)")
    parser.add_argument("--repeats", type=int, help="repeats of each measurement (3)")
    parser.add_argument("--idle", type=float, help="seconds a worker idles before latency (60)")
    parser.add_argument("--backlog", type=int, help="events waiting for the memory test (100000)")
    parser.add_argument("--stored", type=int, help="stored events in the big file (1000000)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file")
    parser.add_argument("--tmp-root", help="directory for the temporary queue files")
    args = parser.parse_args(argv)
    for name in ("size", "repeats", "backlog", "stored"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    sizes = Sizes.from_args(args)
    report = Report()
    sections = args.only or SECTIONS
    if args.only:
        report.notes.append(f"partial run: only {', '.join(sections)}")
    # Receivers run in subprocesses; this process only publishes. SIGINT stops cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _use_bytecode_cache()
    run_sections(report, sections, lambda name: BENCHES[name](report, sizes, args.tmp_root))
    text = render(report, sizes, argv, time.monotonic() - _STARTED)
    print(text)
    write_results(args.output, text)
    return 1 if report.errors else 0


def run_sections(report: Report, sections: Sequence[str], bench: Callable[[str], None]) -> None:
    """Run `bench(name)` for each section; one that fails is reported and the rest still run
    (this script's, and the server benchmarks')."""
    for name in sections:
        _log(f"== {name}")
        try:
            bench(name)
        except Exception as exc:
            report.errors.append(f"{name}: {type(exc).__name__}: {exc}".replace("\n", " "))
            traceback.print_exc()


def write_results(output: Path, text: str) -> None:
    """Write the generated `text` to `output`, keeping what stands below ANALYSIS_MARKER there."""
    kept = _kept_analysis(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n" + ANALYSIS_MARKER + (kept or "\n"), encoding="utf-8")
    _log(f"wrote {output}")


if __name__ == "__main__":
    sys.exit(main())
