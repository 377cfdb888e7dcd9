"""What a person at a terminal sees: tables, not tab-separated lines (on every backend)."""

from __future__ import annotations

import json

import pytest
from conftest import run_evq
from terminal import run_in_terminal, run_in_terminal_for

import evq


def test_list_subscribers_on_a_terminal_is_a_table(queue_url: str) -> None:
    result = run_in_terminal("list-subscribers", "--app", "tests.apps.flaky")
    assert result.returncode == 0, result.stdout
    assert "Pattern" in result.stdout and "Receiver" in result.stdout
    assert "retries=0" in result.stdout
    assert "\t" not in result.stdout


def test_dlq_list_on_a_terminal_is_a_table_with_ages(queue_url: str) -> None:
    evq.publish("job.a", payload={"n": 1})
    assert run_evq("worker", "--burst", "--app", "tests.apps.flaky").returncode == 0
    result = run_in_terminal("dlq", "list")
    assert result.returncode == 0, result.stdout
    assert "Last error" in result.stdout
    assert "ago" in result.stdout or "just now" in result.stdout
    assert "ValueError: kaput 1" in result.stdout


def test_the_worker_log_is_short_on_a_terminal_and_timestamped_when_redirected(
    queue_url: str,
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


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "order.created", "--payload", '{"n": 1}'],
        ["dlq", "show", "{dead}"],
        ["dlq", "redrive", "--all", "--dry-run"],
        ["dlq", "purge", "--all", "--dry-run"],
        ["replay", "--all", "--dry-run"],
        ["prune", "--older-than", "30d", "--dry-run"],
        ["status", "--check"],
    ],
)
def test_every_other_command_works_on_a_terminal_and_piped(
    queue_url: str, command: list[str]
) -> None:
    evq.publish("job.a", payload={"n": 1})
    assert run_evq("worker", "--burst", "--app", "tests.apps.flaky").returncode == 0
    dead = json.loads(run_evq("dlq", "list", "--json").stdout)[0]["id"]
    args = [str(dead) if part == "{dead}" else part for part in command]
    expected = 1 if command == ["status", "--check"] else 0  # there is a dead letter
    on_terminal = run_in_terminal(*args)
    piped = run_evq(*args)
    assert on_terminal.returncode == piped.returncode == expected, (on_terminal.stdout, piped)
    assert on_terminal.stdout.strip()
    assert (piped.stdout + piped.stderr).strip()
    assert "\x1b[" not in piped.stdout


def test_status_watch_redraws_in_place_on_a_terminal(queue_url: str) -> None:
    evq.publish("order.created", payload={})
    result = run_in_terminal_for(1.5, "status", "--watch", "--interval", "0.2")
    # Several refreshes, drawn over each other (cursor movement), not appended as new blocks.
    assert result.stdout.count("Deliveries") >= 2
    assert "\x1b[" in result.stdout
