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
from backends import BACKENDS, fresh_queue_url

import evq.config
import evq.publisher
import evq.subscriptions
from evq.storage import open_queue
from evq.storage.contract import EventRecord

ROOT = Path(__file__).resolve().parent.parent

#: The backends whose queue an `evq` process started by a test reaches through its URL: the
#: command-line tests that are not about one backend run on each of them (`queue_url`).
CLI_BACKENDS = sorted(name for name, b in BACKENDS.items() if b.shared_between_processes)


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


def _forget_queues() -> None:
    evq.config.reset()
    for handle in evq.publisher._queues.values():
        handle.close()
    evq.publisher._queues.clear()


@pytest.fixture(params=CLI_BACKENDS)
def queue_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh queue of each backend in turn (SQLite always; PostgreSQL and Redis when their
    `EVQ_TEST_*_URL` is set), made the default of this process and of every `evq` subprocess
    the test starts (through EVQ_URL). As on SQLite, the first publish makes the queue: until
    then read commands say there is no queue. `pytest -k redis` runs one backend's."""
    with fresh_queue_url(request.param, tmp_path) as url:
        monkeypatch.setenv("EVQ_URL", url)
        monkeypatch.setenv("EVQ_TEST_LOG", str(tmp_path / "calls.log"))
        _forget_queues()
        try:
            yield url
        finally:
            _forget_queues()


def without_warnings(stderr: str) -> str:
    """`stderr` without the `Warning:` lines `evq status` prints about a server's settings
    (such as a Redis that keeps nothing on disk, as the test servers do)."""
    return "".join(
        line for line in stderr.splitlines(keepends=True) if not line.startswith("Warning: ")
    )


def stored_events(url: str, *, deliveries: bool = True) -> list[EventRecord]:
    """Every event of the queue at `url`, oldest first, read through the storage contract (the
    same on every backend): with each one's deliveries and their history, or with `deliveries`
    False only the events (faster). A queue file that does not exist holds none (and is not
    made by looking)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return []
    queue = open_queue(url)
    try:
        found = list(reversed(queue.events(limit=None)))
        if not deliveries:
            return found
        records = [queue.event(summary.id) for summary in found]
        assert None not in records
        return records  # type: ignore[return-value]
    finally:
        queue.close()


def assert_nothing_stored(url: str) -> None:
    """Fail if the queue at `url` holds an event; on SQLite, if its file was even made."""
    if url.startswith("sqlite:///"):
        assert not Path(url.removeprefix("sqlite:///")).exists(), url
    assert stored_events(url, deliveries=False) == []


def delivery_states(url: str) -> dict[str, int]:
    """Count the deliveries of the queue at `url` per state a person sees (`evq show`)."""
    counter: collections.Counter[str] = collections.Counter()
    for record in stored_events(url):
        counter.update(delivery.state for delivery in record.deliveries)
    return dict(counter)


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
    if env.get("MUTANT_UNDER_TEST") == "stats":
        # mutmut's first pass maps tests to functions in its own process; a child would try
        # to record too, and fails outside mutants/ (tests/MUTATION.md). It runs the code as is.
        del env["MUTANT_UNDER_TEST"]
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


def start_evq(*args: str, stdin: int | None = None, **env: str) -> subprocess.Popen[str]:
    """Start `python -m evq ARGS` in the background (its output goes to pipes; `stdin`
    `subprocess.PIPE` for input the test writes), in a process group of its own; whatever is
    still running when the test ends is killed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "evq", *args],
        stdin=stdin,
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
