"""Shared fixtures: a fresh queue file per test, and `evq` run as a real subprocess."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import evq.config
import evq.publisher
import evq.subscriptions

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def queue_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A queue file of its own for this test, made the default of this process and of every
    `evq` subprocess the test starts (through EVQ_URL)."""
    path = tmp_path / "evq.db"
    monkeypatch.setenv("EVQ_URL", str(path))
    monkeypatch.setenv("EVQ_TEST_LOG", str(tmp_path / "calls.log"))
    evq.config.reset()
    evq.publisher._queues.clear()
    yield path
    evq.config.reset()
    for handle in evq.publisher._queues.values():
        handle.close()
    evq.publisher._queues.clear()


@pytest.fixture(autouse=True)
def _no_leftover_subscriptions() -> Iterator[None]:
    evq.subscriptions.clear()
    yield
    evq.subscriptions.clear()
    # Importing a subscriptions module registers its receivers once per process: forget the
    # test apps so that the next test that loads one registers them again.
    for module in [m for m in sys.modules if m.startswith("tests.apps.")]:
        del sys.modules[module]


def evq_env(**extra: str) -> dict[str, str]:
    """The environment for an `evq` subprocess: this one, with the repo on PYTHONPATH so that
    `--app tests.apps.recorder` imports."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


def run_evq(
    *args: str, input: str | None = None, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `python -m evq ARGS` to completion and return what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "evq", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=evq_env(**env),
        cwd=ROOT,
    )


_started: list[subprocess.Popen[str]] = []


def start_evq(*args: str, **env: str) -> subprocess.Popen[str]:
    """Start `python -m evq ARGS` in the background (its output goes to pipes), in a process
    group of its own; whatever is still running when the test ends is killed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "evq", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=evq_env(**env),
        cwd=ROOT,
        start_new_session=True,
    )
    _started.append(process)
    return process


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def calls(log: Path) -> collections.Counter[tuple[str, str]]:
    """Count the recorded calls per (event id, receiver) in a recorder log."""
    counter: collections.Counter[tuple[str, str]] = collections.Counter()
    if log.exists():
        for line in log.read_text().splitlines():
            event_id, receiver, _attempt, _pid = line.split()
            counter[(event_id, receiver)] += 1
    return counter
