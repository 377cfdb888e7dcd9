"""What a person at a terminal sees: tables, not tab-separated lines."""

from __future__ import annotations

from pathlib import Path

from conftest import run_evq
from queue_states import run_in_terminal

import evq


def test_list_subscribers_on_a_terminal_is_a_table(queue_path: Path) -> None:
    result = run_in_terminal("list-subscribers", "--app", "tests.apps.flaky")
    assert result.returncode == 0, result.stdout
    assert "Pattern" in result.stdout and "Receiver" in result.stdout
    assert "retries=0" in result.stdout
    assert "\t" not in result.stdout


def test_dlq_list_on_a_terminal_is_a_table_with_ages(queue_path: Path) -> None:
    evq.publish("job.a", payload={"n": 1})
    assert run_evq("worker", "--burst", "--app", "tests.apps.flaky").returncode == 0
    result = run_in_terminal("dlq", "list")
    assert result.returncode == 0, result.stdout
    assert "Last error" in result.stdout
    assert "ago" in result.stdout or "just now" in result.stdout
    assert "ValueError: kaput 1" in result.stdout


def test_the_worker_log_is_short_on_a_terminal_and_timestamped_when_redirected(
    queue_path: Path,
) -> None:
    evq.publish("order.created", payload={})
    redirected = run_evq("worker", "--burst", "--app", "tests.apps.recorder")
    first = redirected.stderr.splitlines()[0]
    assert first[:4].isdigit() and "Z INFO evq worker" in first
    assert "\x1b[" not in redirected.stderr

    evq.publish("order.created", payload={})
    on_terminal = run_in_terminal("worker", "--burst", "--app", "tests.apps.recorder")
    assert "done     order.created" in on_terminal.stdout
    assert " INFO " not in on_terminal.stdout
