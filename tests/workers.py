"""Helpers of the reliability tests: worker processes in their own process group (so that a
test can SIGKILL a worker with its forked children, like a power cut or the OOM killer), and
reads of the queue file with plain sqlite3."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import ROOT, evq_env


def group_pids(pgid: int) -> set[int]:
    """The processes of a process group (a worker and its forked children)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:  # state, ppid, pgrp
                pids.add(int(entry))
    return pids


class WorkerProcess:
    """An `evq worker` subprocess whose output goes to files next to the queue."""

    def __init__(self, queue_path: Path, *args: str, name: str = "worker", **env: str) -> None:
        self.stderr_path = queue_path.parent / f"{name}-{time.monotonic_ns()}.err"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "evq", "worker", *args],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=evq_env(**env),
                cwd=ROOT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, signum: int) -> None:
        """Send `signum` to the worker's main process only."""
        self.process.send_signal(signum)

    def kill_group(self) -> None:
        """SIGKILL the worker and its forked children at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def handles_signals(self) -> bool:
        """Tell whether the worker has installed its SIGTERM handler (it is past start-up)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except FileNotFoundError:
            return False
        caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)  # type: ignore[union-attr]
        return bool(caught & (1 << (signal.SIGTERM - 1)))

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the worker handles SIGTERM: from then on a signal is graceful."""
        wait_until(self.handles_signals, timeout=timeout)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send a graceful stop signal once the worker is ready; return its exit code."""
        self.wait_ready()
        self.send(signum)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.kill_group()


def rows(queue_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one query on the queue file with a connection of its own."""
    conn = sqlite3.connect(queue_path, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def states(queue_path: Path) -> dict[str, int]:
    """Count the deliveries per state."""
    return dict(rows(queue_path, "SELECT state, count(*) FROM evq_delivery GROUP BY state"))


def wait_until(condition: Callable[[], Any], timeout: float = 30, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting after {timeout}s for {condition}")
        time.sleep(interval)


def log_lines(log: Path) -> list[list[str]]:
    """The recorded calls of a test, each `[event_id, receiver, attempt, pid]`."""
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines()]
