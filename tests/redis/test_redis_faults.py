"""Faults of the server: killed and restarted under a working backlog (with `appendonly yes`),
the workers log one line per outage, reconnect with backoff, and lose nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import calls
from redis_server import RedisServer
from workers import WorkerProcess, wait_until

from evq.publisher import prepare
from evq.storage import open_queue


def unfinished(url: str) -> int:
    queue = open_queue(url)
    try:
        status = queue.status()
    finally:
        queue.close()
    return (
        status.awaiting_dispatch
        + status.pending
        + status.scheduled
        + status.running
        + status.retrying
        + status.dead
    )


@pytest.mark.timeout(180)
def test_a_server_killed_and_restarted_mid_backlog_loses_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--save", "", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    url = server.url + "?prefix=outage"
    log = tmp_path / "calls.log"
    try:
        queue = open_queue(url)
        ids = queue.publish([prepare("order.created", payload={"n": n}) for n in range(200)])
        queue.close()
        expected = {(event_id, r) for event_id in ids for r in ("bill", "ship", "audit")}
        worker = WorkerProcess(
            tmp_path / "evq.db",
            "--app",
            "tests.apps.recorder",
            "--workers",
            "2",
            "--lease",
            "3s",
            "--url",
            url,
            EVQ_TEST_LOG=str(log),
            EVQ_TEST_SLEEP="0.005",
        )
        with worker:
            wait_until(lambda: len(calls(log)) > 100, timeout=60)
            server.kill()
            time.sleep(2)
            server.start()
            wait_until(lambda: unfinished(url) == 0, timeout=120)
            assert worker.stop() == 0, worker.stderr
        stderr = worker.stderr
        assert set(calls(log)) == expected
        assert stderr.count("cannot use the queue: cannot reach Redis") == 1, stderr
        assert stderr.count("the queue works again") == 1, stderr
        assert "Traceback" not in stderr
    finally:
        server.kill()
