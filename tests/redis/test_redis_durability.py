"""Durability is stated and checked: `evq status` and a worker's start warn in one line when
the server keeps nothing on disk or evicts keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_evq
from redis_server import RedisServer

from evq.storage import open_queue


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (("--appendonly", "yes", "--save", ""), []),
        (("--appendonly", "no", "--save", "3600 1"), []),
        (("--appendonly", "no", "--save", ""), ["keeps nothing on disk"]),
        (
            ("--appendonly", "yes", "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"),
            ["evicts keys"],
        ),
    ],
)
def test_status_warns_of_settings_that_lose_events(
    tmp_path: Path, settings: tuple[str, ...], expected: list[str]
) -> None:
    server = RedisServer(tmp_path, *settings)
    server.start()
    try:
        queue = open_queue(server.url)
        warnings = queue.status().warnings
        queue.close()
        assert len(warnings) == len(expected)
        for warning, words in zip(warnings, expected, strict=True):
            assert words in warning and "\n" not in warning

        assert run_evq("publish", "a.b", "--url", server.url).returncode == 0
        result = run_evq("status", "--url", server.url)
        assert result.returncode == 0
        assert [line for line in result.stderr.splitlines() if line.startswith("Warning: ")] == [
            f"Warning: {warning}" for warning in warnings
        ]
        worker = run_evq(
            "worker",
            "--burst",
            "--app",
            "tests.apps.recorder",
            "--url",
            server.url,
            EVQ_TEST_LOG=str(tmp_path / "calls.log"),
        )
        assert worker.returncode == 0, worker.stderr
        for warning in warnings:
            assert f"WARNING {warning}" in worker.stderr
    finally:
        server.kill()
