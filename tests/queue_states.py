"""Helpers of the inspection tests: a queue holding deliveries in every state, built through the
same storage calls a worker makes (publish, lease, record), at times the test chooses."""

from __future__ import annotations

import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT, evq_env

from evq.publisher import prepare
from evq.storage.sqlite import Lease, Outcome, SqliteQueue

RECEIVER = "tests.apps.states:handle"
OWNER = "test-worker/host:1"


class Subscribers:
    """A router with the same receivers for every event."""

    def __init__(self, receivers: Sequence[str] = (RECEIVER,)) -> None:
        self.receivers = list(receivers)

    def receivers_for(self, name: str, /) -> Sequence[str]:
        return self.receivers

    def policy(self, receiver: str, /) -> tuple[int, float] | None:
        return 5, 30.0


@dataclass
class States:
    """The ids of events whose one delivery is in each state (`delayed` is not dispatched)."""

    done: str
    dead: str
    retrying: str
    running: str
    pending: str
    delayed: str


def publish(queue: SqliteQueue, name: str, *, at: float, delay: float | None = None) -> str:
    """Publish `name` as if it was published at the Unix time `at`; return its id."""
    return queue.publish([prepare(name, payload={"at": at}, delay=delay, now=at)])[0]


def take(queue: SqliteQueue, *, now: float, router: Subscribers | None = None) -> list[Lease]:
    """Dispatch due events and lease every due delivery, as a worker does at `now`."""
    return queue.lease(router or Subscribers(), owner=OWNER, limit=1000, now=now).leases


def finish(queue: SqliteQueue, leases: Sequence[Lease], kind: str, *, at: float) -> None:
    """Record the outcome `kind` (done, dead or retry in an hour) of leased attempts."""
    outcomes = [
        Outcome(
            lease,
            kind,
            started_at=at - 0.25,
            finished_at=at,
            retry_at=at + 3600 if kind == "retry" else None,
            error=None if kind == "done" else "ValueError: card declined",
            traceback=None if kind == "done" else "Traceback ...\nValueError: card declined",
        )
        for lease in leases
    ]
    queue.record(outcomes, owner=OWNER)


def every_state(queue: SqliteQueue, *, at: float) -> States:
    """Publish one event per delivery state, all around the time `at`."""
    done = publish(queue, "order.created", at=at - 50)
    finish(queue, take(queue, now=at - 50), "done", at=at - 10)
    dead = publish(queue, "order.paid", at=at - 40)
    finish(queue, take(queue, now=at - 40), "dead", at=at - 10)
    retrying = publish(queue, "order.shipped", at=at - 30)
    finish(queue, take(queue, now=at - 30), "retry", at=at - 10)
    running = publish(queue, "user.created", at=at - 20)
    take(queue, now=at - 20)
    pending = publish(queue, "user.deleted", at=at - 10)
    # Dispatched by a worker that leased nothing.
    queue.lease(Subscribers(), owner=OWNER, limit=0, now=at - 10)
    delayed = publish(queue, "report.due", at=at - 5, delay=3600)
    return States(done, dead, retrying, running, pending, delayed)


def run_in_terminal(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m evq ARGS` with a pseudo-terminal as stdout (through `script`)."""
    return _in_terminal([sys.executable, "-m", "evq", *args], env)


def run_in_terminal_for(seconds: float, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Like `run_in_terminal`, for a command that runs until interrupted: SIGINT after
    `seconds`, as a person's Ctrl-C."""
    return _in_terminal(
        ["timeout", "-s", "INT", str(seconds), sys.executable, "-m", "evq", *args], env
    )


def _in_terminal(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["script", "-qec", shlex.join(command), "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
        env=evq_env(TERM="xterm-256color", COLUMNS="160", NO_COLOR="1", **env),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the queue file with plain sqlite3."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()
