"""A queue with real events, a dead letter and a running `evq worker`, and `evq dashboard`
serving it, on every backend an `evq` process can reach whose server is configured (the
`queue_url` fixture of tests/conftest.py)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import run_evq, start_evq

from evq.storage import Queue, open_queue

TOKEN = "correct-horse-battery-staple"
SCRIPT_PAYLOAD = "<script>document.title = 'pwned'</script><img src=x id=pwned>"


@dataclass
class Shop:
    """The queue the dashboard shows: its URL, the ids of its events, and the files its
    receivers read and write."""

    url: str
    order: str
    invoice: str
    note: str
    dead_letter: str
    fixed_file: Path
    log: Path
    env: dict[str, str]

    def queue(self) -> Queue:
        return open_queue(self.url, role="inspect", create=False)

    def publish(self, name: str, payload: dict[str, Any]) -> str:
        done = run_evq("publish", name, "--payload", json.dumps(payload), **self.env)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@dataclass
class Served:
    """A running `evq dashboard`: its address and process."""

    base: str
    process: Any

    def get(self, path: str, **headers: str) -> tuple[int, str, dict[str, str]]:
        return request(self.base + path, headers=headers)

    def post(self, path: str, data: str, **headers: str) -> tuple[int, str, dict[str, str]]:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return request(self.base + path, data=data.encode(), headers=headers)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def request(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, dict[str, str]]:
    """Make one HTTP request (redirects are not followed); return status, body and headers."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers or {})) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll `check` until it returns something true; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def serve(url: str, *args: str, **env: str) -> Served:
    """Start `evq dashboard --port 0` on the queue at `url`; return where it listens."""
    process = start_evq("dashboard", "--port", "0", *args, EVQ_URL=url, **env)
    lines = []
    while True:
        line = process.stderr.readline()
        lines.append(line)
        if not line:
            pytest.fail(f"evq dashboard did not start: {''.join(lines)}")
        if " at http://" in line:
            base = line.split(" at ", 1)[1].split()[0].rstrip("/")
            return Served(base=base, process=process)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'evq.db'}"


def open_shop(url: str, tmp_path: Path) -> Shop:
    """Publish an order, an invoice whose delivery becomes a dead letter, and a note whose
    payload holds a script; start a worker and wait until it delivered them."""
    log, fixed = tmp_path / "calls.log", tmp_path / "fixed"
    env = {"EVQ_URL": url, "EVQ_TEST_LOG": str(log), "EVQ_TEST_FIXED_FILE": str(fixed)}
    shop = Shop(url, "", "", "", "", fixed, log, env)
    shop.order = shop.publish("order.created", {"order_id": 1042, "total": "99.50"})
    shop.invoice = shop.publish("invoice.requested", {"order_id": 1042})
    shop.note = shop.publish("note.added", {"text": SCRIPT_PAYLOAD})
    start_evq("worker", "--app", "tests.apps.shop", "--workers", "2", **env)
    queue = shop.queue()
    try:
        letters = wait_for(lambda: queue.dead_letters(), "the invoice's dead letter")
        wait_for(lambda: queue.status().workers, "the worker's heartbeat")
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, "deliveries")
    finally:
        queue.close()
    shop.dead_letter = letters[0].id
    return shop


@pytest.fixture
def shop(queue_url: str, tmp_path: Path) -> Shop:
    """The shop's queue on each backend (`queue_url`), with its worker running."""
    return open_shop(queue_url, tmp_path)


@pytest.fixture
def sqlite_shop(sqlite_url: str, tmp_path: Path) -> Shop:
    """The shop's queue on SQLite only, with its worker running."""
    return open_shop(sqlite_url, tmp_path)
