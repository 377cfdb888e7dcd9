"""Dead letters through the command line: list, show, redrive and purge, on every backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import calls, delivery_states, run_evq

import evq
from evq.cli import cli


@pytest.fixture
def dead_letters(queue_url: str) -> list[str]:
    """Three events whose deliveries all died: job.a, job.b and job.report.daily."""
    ids = [
        evq.publish("job.a", payload={"n": 1}),
        evq.publish("job.b", payload={"n": 2}),
        evq.publish("job.report.daily", payload={"n": 3}),
    ]
    assert run_evq("worker", "--burst", "--app", "tests.apps.flaky").returncode == 0
    return ids


def dead_list(**env: str) -> list[dict[str, object]]:
    result = run_evq("dlq", "list", "--json", **env)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def test_exhausted_deliveries_are_listed_with_event_receiver_and_error(
    dead_letters: list[str],
) -> None:
    rows = dead_list()
    assert len(rows) == 4  # explode x3, report x1
    for row in rows:
        assert {"id", "event_id", "name", "receiver", "attempts", "dead_at", "error"} <= set(row)
        assert row["attempts"] == 1
    errors = {(row["name"], row["receiver"]): row["error"] for row in rows}
    assert errors[("job.a", "tests.apps.flaky:explode")] == "ValueError: kaput 1"
    assert errors[("job.report.daily", "tests.apps.flaky:report")] == "KeyError: 'missing column'"


def test_list_is_a_table_of_tab_separated_lines_when_piped(dead_letters: list[str]) -> None:
    result = run_evq("dlq", "list")
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert all(len(line.split("\t")) == 7 for line in lines)


def test_show_has_the_payload_and_the_traceback(dead_letters: list[str]) -> None:
    delivery_id = next(r["id"] for r in dead_list() if r["name"] == "job.a")
    result = run_evq("dlq", "show", str(delivery_id), "--json")
    document = json.loads(result.stdout)
    assert document["payload"] == {"n": 1}
    assert "Traceback" in document["traceback"]
    assert "ValueError: kaput 1" in document["traceback"]
    text = run_evq("dlq", "show", str(delivery_id)).stdout
    assert "ValueError: kaput 1" in text


def test_show_of_an_unknown_id_is_bad_input(dead_letters: list[str]) -> None:
    result = run_evq("dlq", "show", "999999")
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: no dead letter with id 999999 (see `evq dlq list`)"


def test_redrive_by_id_runs_the_delivery_again_with_a_fresh_attempt_count(
    tmp_path: Path, queue_url: str, dead_letters: list[str]
) -> None:
    delivery_id = next(r["id"] for r in dead_list() if r["name"] == "job.a")
    result = run_evq("dlq", "redrive", str(delivery_id))
    assert result.stdout.strip() == "redrove 1 dead letter"
    assert len(dead_list()) == 3

    assert (
        run_evq("worker", "--burst", "--app", "tests.apps.flaky", EVQ_TEST_FIXED="1").returncode
        == 0
    )
    log = (tmp_path / "calls.log").read_text().split()
    assert log[:3] == [dead_letters[0], "explode", "1"]  # attempt counts from 1 again


def test_redrive_by_receiver_and_by_name(
    tmp_path: Path, queue_url: str, dead_letters: list[str]
) -> None:
    assert (
        run_evq(
            "dlq", "redrive", "--receiver", "tests.apps.flaky:report", "--dry-run"
        ).stdout.strip()
        == "would redrive 1 dead letter"
    )
    assert run_evq("dlq", "redrive", "--name", "job.report.*").stdout.strip() == (
        "redrove 2 dead letters"
    )
    assert run_evq("dlq", "redrive", "--all").stdout.strip() == "redrove 2 dead letters"
    assert (
        run_evq("worker", "--burst", "--app", "tests.apps.flaky", EVQ_TEST_FIXED="1").returncode
        == 0
    )
    assert len(calls(tmp_path / "calls.log")) == 4
    assert delivery_states(queue_url) == {"done": 4}


def test_redrive_needs_a_choice_and_unknown_ids_change_nothing(
    tmp_path: Path, queue_url: str, dead_letters: list[str]
) -> None:
    result = run_evq("dlq", "redrive")
    assert result.returncode == 2
    assert "choose dead letters" in result.stderr
    delivery_id = dead_list()[0]["id"]
    result = run_evq("dlq", "redrive", str(delivery_id), "424242")
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: not dead letters: 424242; nothing was changed"
    assert delivery_states(queue_url) == {"dead": 4}


def test_purge_deletes_dead_letters_for_good(
    tmp_path: Path, queue_url: str, dead_letters: list[str]
) -> None:
    assert run_evq("dlq", "purge", "--older-than", "30d").stdout.strip() == (
        "purged 0 dead letters"
    )
    delivery_id = dead_list()[0]["id"]
    assert run_evq("dlq", "purge", str(delivery_id)).stdout.strip() == "purged 1 dead letter"
    assert run_evq("dlq", "purge", "--all").stdout.strip() == "purged 3 dead letters"
    assert delivery_states(queue_url) == {}
    assert dead_list() == []


def test_dlq_commands_through_clirunner(dead_letters: list[str]) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["dlq", "list", "--jsonl"])
    assert listed.exit_code == 0, listed.output
    assert len(listed.stdout.splitlines()) == 4
    assert runner.invoke(cli, ["dlq", "purge", "--all", "--dry-run"]).stdout.strip() == (
        "would purge 4 dead letters"
    )


def test_dlq_on_a_missing_queue_says_so(tmp_path: Path) -> None:
    result = run_evq("dlq", "list", "--url", str(tmp_path / "nothing.db"))
    assert result.returncode == 2
    assert "no queue at" in result.stderr
    assert not (tmp_path / "nothing.db").exists()


def test_an_error_message_that_is_not_valid_unicode_is_stored_escaped(queue_url: str) -> None:
    evq.publish("weird.text", payload={})
    evq.publish("job.a", payload={"n": 1})
    result = run_evq("worker", "--burst", "--app", "tests.apps.flaky")
    assert result.returncode == 0, result.stderr
    errors = {row["name"]: row["error"] for row in dead_list()}
    assert errors["weird.text"] == "ValueError: could not parse b'\\udcff' from upstream"
    assert errors["job.a"] == "ValueError: kaput 1"  # the worker carried on


def test_a_redriven_delivery_is_pending_not_retrying(dead_letters: list[str]) -> None:
    delivery_id = dead_list()[0]["id"]
    assert run_evq("dlq", "redrive", str(delivery_id)).returncode == 0
    status = json.loads(run_evq("status", "--json").stdout)
    assert status["deliveries"]["pending"] == 1
    assert status["deliveries"]["retrying"] == 0
    assert status["deliveries"]["dead"] == 3


def test_dlq_show_json_has_a_stable_schema(dead_letters: list[str]) -> None:
    delivery_id = dead_list()[0]["id"]
    document = json.loads(run_evq("dlq", "show", str(delivery_id), "--json").stdout)
    types = {
        "id": str,
        "event_id": str,
        "name": str,
        "receiver": str,
        "attempts": int,
        "dead_at": str,
        "published_at": str,
        "error": str,
        "payload": dict,
        "traceback": str,
    }
    assert set(document) == set(types)
    for key, kind in types.items():
        assert isinstance(document[key], kind), key
    assert document["dead_at"].endswith("+00:00")
