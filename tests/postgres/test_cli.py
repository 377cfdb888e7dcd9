"""The `evq` commands on PostgreSQL print what they print on SQLite, with the same exit
codes: the same session is run against both and compared, ids, times, hosts and the
queue's location aside."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import run_evq

from evq.storage import open_queue
from postgres.conftest import Schema

APPS = ("--app", "tests.apps.recorder", "--app", "tests.apps.reliability")
_ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")
_WORKER = re.compile(r"\b[0-9a-f]{8}/[^\s:\"]+:\d+\b")
_NUMBER = re.compile(r"\b\d+(\.\d+)?e-?\d+\b|\b\d+\.\d+\b")
# Throughput counts whole seconds before now: when the second turns is a matter of timing.
_RATE = re.compile(r"(_last_minute\W+)\d+")


def _session(url: str, location: str, log: Path) -> list[tuple[str, int, str, str]]:
    """Run one session of commands on the queue at `url`; return each command with its exit
    code and its normalized output."""
    outputs = []
    ids: list[str] = []
    seen: dict[str, str] = {}  # each id by its order of appearance

    def normal(text: str) -> str:
        text = _ULID.sub(lambda m: seen.setdefault(m.group(), f"<id {len(seen)}>"), text)
        text = text.replace(location, "<queue>")
        for pattern, shown in (
            (_TIME, "<time>"),
            (_WORKER, "<worker>"),
            (_NUMBER, "<n>"),
            (_RATE, r"\1<n>"),
        ):
            text = pattern.sub(shown, text)
        return text

    def run(*args: str) -> str:
        result = run_evq(*args, EVQ_URL=url, EVQ_TEST_LOG=str(log))
        stderr = normal(result.stderr) if result.returncode else ""
        outputs.append((normal(" ".join(args)), result.returncode, normal(result.stdout), stderr))
        return result.stdout

    ids.append(run("publish", "order.created", "--payload", '{"order": 8}').strip())
    ids.append(run("publish", "fail.fatal", "--payload", '{"card": "expired"}').strip())
    ids.append(json.loads(run("publish", "order.paid", "--delay", "1h", "--json"))["id"])
    run("worker", "--burst", *APPS, "-q")
    run("status")
    run("status", "--json")
    run("status", "--check")
    run("events")
    run("events", "--json")
    run("events", "--status", "dead", "--jsonl")
    for event_id in ids:
        run("show", event_id)
        run("show", event_id, "--json")
    run("show", "01M8FQ0RC62RJ4PW5TG8BB737D")
    run("dlq", "list")
    run("dlq", "list", "--json")
    run("replay", "--since", "1h", "--name", "order.*", "--dry-run")
    run("replay", "--all", "--receiver", "tests.apps.recorder:audit")
    run("worker", "--burst", *APPS, "-q")
    run("dlq", "redrive", "--all")
    run("worker", "--burst", *APPS, "-q")
    run("dlq", "purge", "--all")
    run("status", "--json")
    run("prune", "--older-than", "0s", "--dry-run")
    return outputs


def test_every_command_prints_the_same_as_on_sqlite(pg: Schema, tmp_path: Path) -> None:
    sqlite_file = tmp_path / "evq.db"
    on_sqlite = _session(str(sqlite_file), str(sqlite_file), tmp_path / "sqlite.log")
    on_postgres = _session(pg.url, open_queue(pg.url).location, tmp_path / "postgres.log")

    assert [command for command, *_ in on_postgres] == [command for command, *_ in on_sqlite]
    for sqlite_run, postgres_run in zip(on_sqlite, on_postgres, strict=True):
        assert postgres_run == sqlite_run
    # The session did what it says: a dead letter was listed, and replays were delivered.
    assert any("fail.fatal" in text for command, _, text, _ in on_postgres if command == "dlq list")
    assert any(text.startswith("Created 3 replay") for _, _, text, _ in on_postgres)
