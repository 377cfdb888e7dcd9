"""The `evq` command on Redis: every inspection command gives the same output shapes and
exit codes as on SQLite, for the same story (published, delivered, one dead letter)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_evq
from redis_server import redis_url_fixture  # noqa: F401


def story(url: str, log: Path) -> dict[str, tuple[int, list[int] | list[str]]]:
    """Run the same commands against the queue at `url`; return each one's exit code and
    the shape of its output (fields per line, or the keys of its JSON document)."""

    def evq(*args: str) -> tuple[int, str, str]:
        result = run_evq(*args, "--url", url, EVQ_TEST_LOG=str(log))
        return result.returncode, result.stdout, result.stderr

    shapes: dict[str, tuple[int, list[int] | list[str]]] = {}

    def shape(name: str, code: int, out: str) -> None:
        shapes[name] = (code, [len(line.split("\t")) for line in out.splitlines()])

    code, out, _ = evq("publish", "job.run", "--payload", '{"n": 1}', "--json")
    shapes["publish --json"] = (code, sorted(json.loads(out)))
    code, out, _ = evq("publish", "order.created", "--payload", '{"n": 2}', "--key", "k1")
    shape("publish", code, out)
    event_id = out.strip()
    code, again, _ = evq("publish", "order.created", "--payload", '{"n": 3}', "--key", "k1")
    assert again.strip() == event_id  # the idempotency key
    shape("publish --delay", *evq("publish", "order.paid", "--delay", "1h")[:2])
    code, _, err = evq(
        "worker", "--burst", "--app", "tests.apps.recorder", "--app", "tests.apps.flaky"
    )
    assert code == 0, err
    shape("status", *evq("status")[:2])
    code, out, _ = evq("status", "--json")
    shapes["status --json"] = (code, sorted(json.loads(out)))
    shape("status --check", *evq("status", "--check")[:2])
    shape("events", *evq("events")[:2])
    shape("events --status dead", *evq("events", "--status", "dead")[:2])
    shape("events --name", *evq("events", "--name", "order.*")[:2])
    shape("show", *evq("show", event_id)[:2])
    shape("show unknown", *evq("show", "01NOSUCHEVENT0000000000000")[:2])
    shape("dlq list", *evq("dlq", "list")[:2])
    shape("replay --dry-run", *evq("replay", "--since", "1h", "--dry-run")[:2])
    shape("replay", *evq("replay", "--name", "order.created")[:2])
    shape("prune --dry-run", *evq("prune", "--older-than", "0s", "--dry-run")[:2])
    return shapes


def test_the_commands_give_the_same_shapes_and_exit_codes_on_redis_as_on_sqlite(
    redis_url: str, tmp_path: Path
) -> None:
    sqlite = story(str(tmp_path / "evq.db"), tmp_path / "sqlite.log")
    redis = story(redis_url, tmp_path / "redis.log")

    assert redis == sqlite
    # The story reached every state it was meant to: not a comparison of two empty queues.
    assert sqlite["dlq list"][0] == 0 and len(sqlite["dlq list"][1]) == 1
    assert sqlite["status --check"][0] == 1  # a dead letter
    assert sqlite["show unknown"][0] == 2
    assert len(sqlite["events"][1]) == 3
