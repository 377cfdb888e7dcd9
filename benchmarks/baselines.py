"""Baseline measurements for the evq benchmarks (stdlib + huey only).

Every function here measures something that is *not* evq: raw SQLite commit rates, a plain
huey ``SqliteHuey`` queue driven by huey's real consumer, and generic process probes (idle CPU,
wall time of a command, RSS). ``benchmarks/run.py`` calls them side by side with evq's own
measurements, so everything returns plain floats (or dicts of floats) and takes its sizes as
parameters.

Conventions:

* Each measuring function creates a fresh temporary directory (``tempfile.mkdtemp``, optionally
  under ``tmp_root`` so it can share a filesystem with evq's runs) and removes it afterwards.
* Functions that accept ``repeats`` run the measurement that many times and return the median;
  the machine is shared and noisy.
* huey is used with its default settings everywhere except the database filename (an absolute
  path inside the temporary directory). The consumer is huey's own ``huey_consumer`` entry point
  (``python -m huey.bin.huey_consumer module.huey -w N -k TYPE``), which calls
  ``huey.create_consumer(**defaults)`` and, by default, logs every task at INFO to stderr; that
  stderr goes to a log file in the temporary directory.
* Receivers prove they ran by appending one fixed-width record (``RECORD_SIZE`` bytes:
  ``"<seq:010d> <time.time():020.6f>\\n"``) with a single ``write`` on an ``O_APPEND`` file, so
  the parent can count executions from the file size alone.

Run ``python benchmarks/baselines.py`` for a small smoke run (well under a minute).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

__all__ = [
    "RECORD_SIZE",
    "command_wall_time",
    "current_rss_mb",
    "huey_consumer_command",
    "huey_drain_rate",
    "huey_drain_stats",
    "huey_latency",
    "huey_publish_rate",
    "idle_cpu_percent",
    "idle_process_stats",
    "peak_rss_mb",
    "percentile",
    "process_tree_cpu_seconds",
    "process_tree_pids",
    "sqlite_batch_rate",
    "sqlite_commit_rate",
]

RECORD_SIZE = 32  # len(f"{0:010d} {time.time():020.6f}\n")
TASKS_MODULE = "evq_bench_huey_tasks"  # Same name in parent and consumer: huey keys tasks by it.
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_STOP_GRACE = 10.0  # Seconds between SIGINT and SIGKILL.


# --------------------------------------------------------------------------- small helpers


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolation percentile (like numpy's default); ``pct`` in [0, 100]."""
    if not values:
        raise ValueError("percentile() of an empty sequence")
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    frac = rank - low
    return float(data[low] + (data[high] - data[low]) * frac)


def _median_of(repeats: int, measure: Callable[[int], float]) -> float:
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    return float(statistics.median(measure(i) for i in range(repeats)))


@contextlib.contextmanager
def _tempdir(tmp_root: str | None, prefix: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix, dir=tmp_root)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _check_synchronous(synchronous: str) -> str:
    value = synchronous.upper()
    if value not in _SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, not {synchronous!r}")
    return value


def _stop_process(proc: subprocess.Popen[bytes], grace: float = _STOP_GRACE) -> None:
    """SIGINT the process, SIGKILL its whole session if it is still alive after ``grace`` s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        # Started with start_new_session=True, so its process group is ours alone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --------------------------------------------------------------------------- 1. raw SQLite


def _sqlite_insert_rate(path: str, n: int, batch: int, synchronous: str) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
            "payload TEXT NOT NULL, created REAL NOT NULL)"
        )
        sql = "INSERT INTO events (topic, payload, created) VALUES (?, ?, ?)"
        payload = '{"order_id": 12345, "amount": "9.99"}'
        start = time.perf_counter()
        done = 0
        while done < n:
            size = min(batch, n - done)
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(size):
                conn.execute(sql, ("order.created", payload, time.time()))
            conn.execute("COMMIT")
            done += size
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return n / elapsed


def sqlite_commit_rate(
    n: int, synchronous: str, *, repeats: int = 3, tmp_root: str | None = None
) -> float:
    """Single-row INSERT transactions per second (``BEGIN IMMEDIATE``/``COMMIT`` per row).

    WAL journal, ``PRAGMA synchronous=<synchronous>`` (FULL or NORMAL), autocommit connection.
    Median over ``repeats`` runs, each on a new database file.
    """
    sync = _check_synchronous(synchronous)
    with _tempdir(tmp_root, "bench-sqlite-") as tmp:
        return _median_of(
            repeats,
            lambda i: _sqlite_insert_rate(os.path.join(tmp, f"commit{i}.db"), n, 1, sync),
        )


def sqlite_batch_rate(
    n: int,
    batch: int,
    *,
    synchronous: str = "FULL",
    repeats: int = 3,
    tmp_root: str | None = None,
) -> float:
    """Rows per second inserting ``n`` rows with ``batch`` rows per transaction (WAL)."""
    if batch < 1:
        raise ValueError("batch must be >= 1")
    sync = _check_synchronous(synchronous)
    with _tempdir(tmp_root, "bench-sqlite-") as tmp:
        return _median_of(
            repeats,
            lambda i: _sqlite_insert_rate(os.path.join(tmp, f"batch{i}.db"), n, batch, sync),
        )


# --------------------------------------------------------------------------- huey plumbing

# The receivers' one piece of work, the same for evq and huey: a fixed-size record per call.
RECORD_SOURCE = """def _record(seq):
    # One write() on an O_APPEND fd: atomic for a record this small, across processes.
    line = "%010d %020.6f\\n" % (seq, time.time())
    fd = os.open(OUT_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("ascii"))
    finally:
        os.close(fd)
"""

_TASKS_TEMPLATE = '''\
"""huey receivers for the evq baseline benchmarks (generated)."""
import os
import time

from huey import SqliteHuey

DB_PATH = {db!r}
OUT_PATH = {out!r}
READY_PATH = {ready!r}

huey = SqliteHuey(filename=DB_PATH)


{record}

@huey.on_startup()
def _ready():
    # Runs once per worker when it starts; only used to know the consumer is up.
    fd = os.open(READY_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.close(fd)
'''

_RECEIVER_TEMPLATE = """

@huey.task()
def receiver_{i}(seq, event):
    _record(seq)
"""


class _RecordedRun:
    """What huey's and evq's benchmark receivers leave behind: one fixed-size record per call
    in `out_path`, and the process's own output in `log_path`."""

    out_path: str
    log_path: str
    process_name = "process"

    def executions(self) -> int:
        try:
            size = os.stat(self.out_path).st_size
        except FileNotFoundError:
            return 0
        return size // RECORD_SIZE

    def records(self) -> list[tuple[int, float]]:
        try:
            with open(self.out_path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return []
        out: list[tuple[int, float]] = []
        for line in data.splitlines():
            seq, ts = line.split()
            out.append((int(seq), float(ts)))
        return out

    def log_tail(self, chars: int = 2000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()[-chars:]
        except FileNotFoundError:
            return ""

    def wait_executions(
        self, expected: int, proc: subprocess.Popen[bytes], timeout: float, poll: float = 0.01
    ) -> None:
        deadline = time.monotonic() + timeout
        while self.executions() < expected:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.process_name} exited ({proc.returncode}) after {self.executions()}/"
                    f"{expected} executions:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {self.executions()}/{expected} executions after {timeout}s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(poll)


class _HueyApp(_RecordedRun):
    """A generated huey tasks module in a temp dir, importable by parent and consumer."""

    process_name = "huey consumer"

    def __init__(self, tmp: str, receivers: int) -> None:
        if receivers < 1:
            raise ValueError("receivers must be >= 1")
        self.dir = tmp
        self.receivers = receivers
        self.db_path = os.path.join(tmp, "huey.db")
        self.out_path = os.path.join(tmp, "executions.log")
        self.ready_path = os.path.join(tmp, "ready")
        self.log_path = os.path.join(tmp, "consumer.log")
        source = _TASKS_TEMPLATE.format(
            db=self.db_path, out=self.out_path, ready=self.ready_path, record=RECORD_SOURCE
        )
        source += "".join(_RECEIVER_TEMPLATE.format(i=i) for i in range(receivers))
        self.module_path = os.path.join(tmp, f"{TASKS_MODULE}.py")
        with open(self.module_path, "w", encoding="utf-8") as fh:
            fh.write(source)
        self._module: ModuleType | None = None

    # -- parent side -------------------------------------------------------------------

    def load(self) -> ModuleType:
        """Import the generated module in this process (fresh, under the shared name)."""
        if self._module is None:
            spec = importlib.util.spec_from_file_location(TASKS_MODULE, self.module_path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {self.module_path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[TASKS_MODULE] = module
            spec.loader.exec_module(module)
            self._module = module
        return self._module

    def tasks(self) -> list[Callable[..., Any]]:
        module = self.load()
        return [getattr(module, f"receiver_{i}") for i in range(self.receivers)]

    def close(self) -> None:
        if self._module is not None:
            self._module.huey.storage.close()
            if sys.modules.get(TASKS_MODULE) is self._module:
                del sys.modules[TASKS_MODULE]
            self._module = None

    # -- consumer side -----------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = self.dir + (os.pathsep + old if old else "")
        return env

    def consumer_cmd(self, workers: int, worker_type: str, quiet: bool = False) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "huey.bin.huey_consumer",
            f"{TASKS_MODULE}.huey",
            "-w",
            str(workers),
            "-k",
            worker_type,
        ]
        if quiet:
            cmd.append("-q")
        return cmd

    def start_consumer(
        self, workers: int, worker_type: str, quiet: bool = False
    ) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                self.consumer_cmd(workers, worker_type, quiet),
                cwd=self.dir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.ready_path):
            if proc.poll() is not None:
                raise RuntimeError(f"huey consumer exited early:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"huey consumer not ready after {timeout}s")
            time.sleep(0.01)


def _event(seq: int) -> dict[str, Any]:
    return {"topic": "order.created", "order_id": seq, "amount": "9.99"}


@contextlib.contextmanager
def huey_consumer_command(
    workers: int = 1,
    worker_type: str = "thread",
    receivers: int = 3,
    *,
    quiet: bool = False,
    tmp_root: str | None = None,
) -> Iterator[tuple[list[str], dict[str, str]]]:
    """Yield ``(cmd, env)`` for an idle huey consumer (e.g. for :func:`idle_cpu_percent`).

    The tasks module and the empty database live in a temp dir removed on exit.
    """
    with _tempdir(tmp_root, "bench-huey-") as tmp:
        app = _HueyApp(tmp, receivers)
        app.load()  # Creates the database schema up front, like a deployed app would.
        app.close()
        yield app.consumer_cmd(workers, worker_type, quiet), app.env()


# --------------------------------------------------------------------------- 2. huey publish


def _huey_publish_once(tmp: str, n_events: int, receivers: int) -> float:
    app = _HueyApp(tmp, receivers)
    try:
        tasks = app.tasks()
        start = time.perf_counter()
        for seq in range(n_events):
            event = _event(seq)
            for task in tasks:
                task(seq, event)
        elapsed = time.perf_counter() - start
    finally:
        app.close()
    return n_events / elapsed


def huey_publish_rate(
    n_events: int, receivers: int = 3, *, repeats: int = 3, tmp_root: str | None = None
) -> float:
    """Events/s "published" with raw huey: one enqueue per receiver task per event.

    Default ``SqliteHuey`` settings (results enabled, default fsync/pragmas), enqueued from
    this process. Median over ``repeats`` runs, each with a fresh database.
    """
    with _tempdir(tmp_root, "bench-huey-") as tmp:

        def once(i: int) -> float:
            sub = os.path.join(tmp, f"r{i}")
            os.mkdir(sub)
            return _huey_publish_once(sub, n_events, receivers)

        return _median_of(repeats, once)


# --------------------------------------------------------------------------- 3. huey drain


def _huey_drain_once(
    tmp: str,
    n_events: int,
    workers: int,
    worker_type: str,
    receivers: int,
    quiet: bool,
    timeout: float,
) -> dict[str, float]:
    app = _HueyApp(tmp, receivers)
    try:
        tasks = app.tasks()
        for seq in range(n_events):  # Not timed.
            event = _event(seq)
            for task in tasks:
                task(seq, event)
        queued = app.load().huey.pending_count()
    finally:
        app.close()
    expected = n_events * receivers
    if queued != expected:
        raise RuntimeError(f"expected {expected} queued tasks, found {queued}")

    start = time.time()  # Wall clock: compared with time.time() written by the tasks.
    proc = app.start_consumer(workers, worker_type, quiet)
    try:
        app.wait_executions(expected, proc, timeout)
    finally:
        _stop_process(proc)
    records = app.records()
    if len(records) != expected:
        raise RuntimeError(f"expected {expected} executions, found {len(records)}")
    stamps = sorted(ts for _, ts in records)
    first, last = stamps[0], stamps[-1]
    return {
        "deliveries_per_s": expected / (last - start),
        "startup_s": first - start,
        "steady_per_s": (expected - 1) / (last - first) if expected > 1 else 0.0,
        "total_s": last - start,
    }


def huey_drain_stats(
    n_events: int,
    workers: int,
    worker_type: str,
    receivers: int = 3,
    *,
    repeats: int = 3,
    quiet: bool = False,
    timeout: float = 600.0,
    tmp_root: str | None = None,
) -> dict[str, float]:
    """Like :func:`huey_drain_rate`, with a breakdown (each key the median over runs).

    ``deliveries_per_s`` (the headline number), ``startup_s`` (spawn to first execution),
    ``steady_per_s`` (first to last execution) and ``total_s`` (spawn to last execution).
    """
    runs: list[dict[str, float]] = []
    with _tempdir(tmp_root, "bench-huey-") as tmp:
        for i in range(repeats):
            sub = os.path.join(tmp, f"r{i}")
            os.mkdir(sub)
            runs.append(
                _huey_drain_once(sub, n_events, workers, worker_type, receivers, quiet, timeout)
            )
    return {key: float(statistics.median(run[key] for run in runs)) for key in runs[0]}


def huey_drain_rate(
    n_events: int,
    workers: int,
    worker_type: str,
    receivers: int = 3,
    *,
    repeats: int = 3,
    quiet: bool = False,
    timeout: float = 600.0,
    tmp_root: str | None = None,
) -> float:
    """Deliveries/s for huey's real consumer draining a pre-filled queue.

    ``n_events * receivers`` tasks are enqueued first (not timed); then ``huey_consumer``
    (default settings, ``-w workers -k worker_type``) runs in a subprocess and the clock runs
    from just before the process is spawned (interpreter start-up included, nothing
    subtracted) to the timestamp of the last task execution. ``quiet=True`` passes ``-q``
    (no per-task INFO logging); the default keeps huey_consumer's default logging.
    Median over ``repeats`` runs.
    """
    stats = huey_drain_stats(
        n_events,
        workers,
        worker_type,
        receivers,
        repeats=repeats,
        quiet=quiet,
        timeout=timeout,
        tmp_root=tmp_root,
    )
    return stats["deliveries_per_s"]


# --------------------------------------------------------------------------- 4. huey latency


def _huey_latency_once(
    tmp: str,
    n: int,
    idle_before: float,
    gap_range: tuple[float, float],
    rng: random.Random,
    quiet: bool,
) -> dict[str, float]:
    app = _HueyApp(tmp, 1)
    app.load()  # Create the schema before the consumer starts.
    proc = app.start_consumer(1, "thread", quiet)
    try:
        app.wait_ready(proc)
        time.sleep(idle_before)
        task = app.tasks()[0]
        enqueued: list[float] = []
        for seq in range(n):
            if seq:
                time.sleep(rng.uniform(*gap_range))
            task(seq, _event(seq))
            enqueued.append(time.time())
        app.close()
        # huey's idle poll backs off up to max_delay=10 s, so allow for that plus slack.
        app.wait_executions(n, proc, timeout=60.0 + 2 * gap_range[1])
    finally:
        app.close()
        _stop_process(proc)
    started = dict(app.records())
    latencies = [(started[seq] - enqueued[seq]) * 1000.0 for seq in range(n)]
    return {
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "first_ms": latencies[0],
        "max_ms": max(latencies),
        "mean_ms": statistics.fmean(latencies),
    }


def huey_latency(
    n: int,
    idle_before: float,
    gap_range: tuple[float, float],
    *,
    repeats: int = 1,
    seed: int = 12345,
    quiet: bool = False,
    tmp_root: str | None = None,
) -> dict[str, float]:
    """Enqueue-to-start latency of a huey consumer (default settings, 1 thread worker).

    The consumer starts, signals readiness (an ``on_startup`` hook), then sits idle for
    ``idle_before`` seconds; then ``n`` tasks are enqueued one at a time with uniform random
    gaps from ``gap_range``. Latency = task start ``time.time()`` minus ``time.time()`` just
    after the enqueue call returned. Returns ``p50_ms``, ``p95_ms``, ``p99_ms`` (plus
    ``first_ms`` -- the first task after the idle period --, ``max_ms`` and ``mean_ms``);
    with ``repeats > 1`` each key is the median over runs.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    low, high = gap_range
    if not 0 <= low <= high:
        raise ValueError("gap_range must be (low, high) with 0 <= low <= high")
    rng = random.Random(seed)
    runs: list[dict[str, float]] = []
    with _tempdir(tmp_root, "bench-huey-") as tmp:
        for i in range(repeats):
            sub = os.path.join(tmp, f"r{i}")
            os.mkdir(sub)
            runs.append(_huey_latency_once(sub, n, idle_before, gap_range, rng, quiet))
    return {key: float(statistics.median(run[key] for run in runs)) for key in runs[0]}


# --------------------------------------------------------------------------- 5./7. /proc probes


def _read_stat(pid: int) -> tuple[int, int] | None:
    """Return ``(ppid, utime+stime+cutime+cstime in ticks)`` or None if the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    ppid = int(fields[1])
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return ppid, ticks


def process_tree_pids(pid: int) -> list[int]:
    """``pid`` plus all its live descendants (by scanning ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _read_stat(int(name))
        if stat is not None:
            children.setdefault(stat[0], []).append(int(name))
    tree = [pid]
    i = 0
    while i < len(tree):
        tree.extend(children.get(tree[i], ()))
        i += 1
    return tree


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user+sys) used so far by ``pid`` and its descendants.

    Each live process contributes its own utime+stime plus cutime+cstime (its reaped
    children), so descendants that exited and were reaped inside the tree are still counted.
    """
    total = 0
    for member in process_tree_pids(pid):
        stat = _read_stat(member)
        if stat is not None:
            total += stat[1]
    return total / _CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def peak_rss_mb(pid: int, include_descendants: bool = True) -> float:
    """Peak resident set size (``VmHWM``) in MiB, summed over ``pid`` and its descendants."""
    pids = process_tree_pids(pid) if include_descendants else [pid]
    return sum(_status_kb(p, "VmHWM") for p in pids) / 1024.0


def current_rss_mb(pid: int, include_descendants: bool = True) -> float:
    """Current resident set size (``VmRSS``) in MiB, summed over ``pid`` and its descendants."""
    pids = process_tree_pids(pid) if include_descendants else [pid]
    return sum(_status_kb(p, "VmRSS") for p in pids) / 1024.0


def idle_process_stats(
    cmd: list[str], env: dict[str, str] | None, seconds: float, warmup: float
) -> dict[str, float]:
    """Start ``cmd``, wait ``warmup`` s, then measure it over ``seconds`` s of wall time.

    Returns ``cpu_percent`` (of one core, process tree, user+sys), ``cpu_seconds``,
    ``rss_mb`` (VmRSS sum at the end) and ``peak_rss_mb`` (VmHWM sum at the end), and
    ``processes`` (tree size). The process is then stopped: SIGINT, SIGKILL after 10 s.
    """
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd!r} exited with {proc.returncode} during warm-up")
        cpu0 = process_tree_cpu_seconds(proc.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        cpu1 = process_tree_cpu_seconds(proc.pid)
        wall = time.monotonic() - t0
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd!r} exited with {proc.returncode} while measured")
        return {
            "cpu_percent": 100.0 * (cpu1 - cpu0) / wall,
            "cpu_seconds": cpu1 - cpu0,
            "rss_mb": current_rss_mb(proc.pid),
            "peak_rss_mb": peak_rss_mb(proc.pid),
            "processes": float(len(process_tree_pids(proc.pid))),
        }
    finally:
        _stop_process(proc)


def idle_cpu_percent(
    cmd: list[str], env: dict[str, str] | None, seconds: float, warmup: float
) -> float:
    """CPU use of an idle process tree in percent of one core (see :func:`idle_process_stats`).

    Resolution is one clock tick (usually 10 ms) per process, so measure for >= 10 s to see
    fractions of a percent.
    """
    return idle_process_stats(cmd, env, seconds, warmup)["cpu_percent"]


# --------------------------------------------------------------------------- 6. command time


def _run_timed(cmd: list[str], env: dict[str, str] | None, cwd: str | None) -> float:
    """Run ``cmd`` once to completion; return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(
        cmd,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


def command_wall_time(
    cmd: list[str],
    repeats: int,
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    warmup: int = 1,
) -> dict[str, float]:
    """Wall time of running ``cmd`` to completion (output discarded), ``repeats`` times.

    Returns ``median_ms``, ``p90_ms``, ``min_ms`` and ``max_ms``. ``warmup`` untimed runs go
    first (page cache). A non-zero exit status raises ``CalledProcessError``.

    No peak RSS here on purpose: ``wait4``'s ``ru_maxrss`` of a child spawned from Python
    includes the *parent's* RSS at fork/exec time (Linux keeps the old mm's high-water mark
    across exec), so it reports ~the benchmark process's size for ``python -c pass``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        _run_timed(cmd, env, cwd)
    times = [_run_timed(cmd, env, cwd) * 1000.0 for _ in range(repeats)]
    return {
        "median_ms": float(statistics.median(times)),
        "p90_ms": percentile(times, 90),
        "min_ms": min(times),
        "max_ms": max(times),
    }


# --------------------------------------------------------------------------- smoke run


def _smoke() -> None:
    def show(label: str, value: float | dict[str, float], started: float) -> None:
        took = time.monotonic() - started
        if isinstance(value, dict):
            text = ", ".join(f"{k}={v:,.1f}" for k, v in value.items())
        else:
            text = f"{value:,.0f}"
        print(f"{label:<44} {text}   [{took:.1f}s]", flush=True)

    overall = time.monotonic()
    t = time.monotonic()
    show("sqlite commits/s synchronous=FULL", sqlite_commit_rate(500, "FULL"), t)
    t = time.monotonic()
    show("sqlite commits/s synchronous=NORMAL", sqlite_commit_rate(2000, "NORMAL"), t)
    t = time.monotonic()
    show("sqlite rows/s FULL batch=100", sqlite_batch_rate(20000, 100), t)
    t = time.monotonic()
    show("huey events/s published (3 receivers)", huey_publish_rate(500), t)
    t = time.monotonic()
    show("huey drain, 1 thread", huey_drain_stats(500, 1, "thread", repeats=1), t)
    t = time.monotonic()
    show("huey drain, 1 thread, -q", huey_drain_stats(500, 1, "thread", repeats=1, quiet=True), t)
    t = time.monotonic()
    show("huey drain, 2 process", huey_drain_stats(500, 2, "process", repeats=1), t)
    t = time.monotonic()
    show("huey latency, idle 1 s, gaps 20-200 ms", huey_latency(30, 1.0, (0.02, 0.2)), t)
    t = time.monotonic()
    with huey_consumer_command() as (cmd, env):
        show("huey idle consumer (1 thread)", idle_process_stats(cmd, env, 5.0, 2.0), t)
    t = time.monotonic()
    show("python -c pass", command_wall_time([sys.executable, "-c", "pass"], 5), t)
    t = time.monotonic()
    imports = [sys.executable, "-c", "import click, sqlite3, json"]
    show("python -c 'import click, sqlite3, json'", command_wall_time(imports, 5), t)
    print(f"smoke run took {time.monotonic() - overall:.1f}s")


if __name__ == "__main__":
    _smoke()
