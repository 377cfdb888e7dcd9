"""Rows that cannot be decoded become dead letters; nothing read from storage is unpickled."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import run_evq
from workers import log_lines, rows

import evq
from evq.ids import new_event_id


class _CreatesFile:
    """Unpickling this creates the file named by `path`: proof that something unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def _insert_event(queue_path: Path, payload: object, name: str = "fast.work") -> str:
    event_id = new_event_id()
    with sqlite3.connect(queue_path) as conn:
        now = time.time()
        conn.execute(
            "INSERT INTO evq_event (id, name, payload, published_at, due_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (event_id, name, payload, now, now),
        )
    conn.close()
    return event_id


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_undecodable_payloads_become_dead_letters_and_the_worker_carries_on(
    queue_path: Path, worker_type: str
) -> None:
    marker = queue_path.parent / "unpickled"
    good = [evq.publish("fast.work", payload={"n": 1})]
    poison = {
        "garbage bytes": _insert_event(queue_path, b"\x00\xff\xfe garbage \x80"),
        "pickle": _insert_event(queue_path, pickle.dumps(_CreatesFile(str(marker)), protocol=5)),
        "text pickle": _insert_event(
            queue_path, pickle.dumps(_CreatesFile(str(marker)), protocol=0).decode("latin-1")
        ),
        "truncated JSON": _insert_event(queue_path, '{"order": 42, "items": [1, 2'),
        "JSON list": _insert_event(queue_path, "[1, 2, 3]"),
        "not UTF-8 text": _insert_event(queue_path, sqlite3.Binary(b'{"a": "\xff"}')),
    }
    # A publish time that is no time at all: the receiver cannot be called.
    broken_time = _insert_event(queue_path, '{"n": 0}')
    with sqlite3.connect(queue_path) as conn:
        conn.execute("UPDATE evq_event SET published_at = x'00ff' WHERE id = ?", (broken_time,))
        # Text that is not UTF-8, as a damaged file could hold: sqlite3 cannot even read it.
        conn.execute(
            "UPDATE evq_event SET payload = CAST(x'7b2261223a2280ff227d' AS TEXT) WHERE id = ?",
            (poison["not UTF-8 text"],),
        )
    conn.close()
    good.append(evq.publish("fast.work", payload={"n": 2}))

    result = run_evq(
        "worker", "--burst", "--app", "tests.apps.reliability", "--worker-type", worker_type
    )
    assert result.returncode == 0, result.stderr

    assert sorted(line[0] for line in log_lines(queue_path.parent / "calls.log")) == sorted(good)
    dead = dict(
        rows(
            queue_path,
            "SELECT e.id, d.last_error FROM evq_delivery d JOIN evq_event e ON e.seq = d.event_seq"
            " WHERE d.state = 'dead'",
        )
    )
    errors = {kind: dead.get(event_id) for kind, event_id in poison.items()}
    print(errors)
    assert errors["JSON list"] == "stored payload is a list, not a JSON object"
    assert errors["truncated JSON"].startswith("stored payload is not valid JSON")
    assert errors["text pickle"].startswith("stored payload is not valid JSON")
    for kind in ("garbage bytes", "pickle", "not UTF-8 text"):
        assert errors[kind] is not None, kind
        assert errors[kind].startswith("stored payload is not"), errors[kind]
    assert dead[broken_time].startswith("cannot deliver: TypeError")
    assert not marker.exists(), "a stored pickle was unpickled"
    assert rows(queue_path, "SELECT state, count(*) FROM evq_delivery GROUP BY state") == [
        ("dead", len(poison) + 1),
        ("done", len(good)),
    ]


@pytest.mark.timeout(60)
def test_the_queue_file_holds_no_pickle_after_a_worker_run(queue_path: Path) -> None:
    evq.publish_many(
        [{"name": "fast.work", "payload": {"n": n}} for n in range(20)]
        + [{"name": "fail.fatal", "payload": {}}, {"name": "retry.ask", "payload": {}}]
    )
    result = run_evq("worker", "--burst", "--app", "tests.apps.reliability", "--workers", "2")
    assert result.returncode == 0, result.stderr

    conn = sqlite3.connect(queue_path)
    try:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        values = 0
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                for value in row:
                    # No binary value at all (every pickle protocol above 0 is binary), and
                    # no protocol-0 pickle, which ends with "." after a STOP opcode.
                    assert not isinstance(value, bytes), (table, row)
                    assert not (isinstance(value, str) and value.endswith("\n.")), (table, row)
                    values += 1
        # What evq serializes is JSON: payloads and worker descriptions.
        for (text,) in conn.execute(
            "SELECT payload FROM evq_event UNION ALL SELECT info FROM evq_worker"
        ):
            json.loads(text)
    finally:
        conn.close()
    assert values > 100


def test_the_worker_gives_huey_a_json_serializer_never_pickle() -> None:
    from evq.serializer import JSONSerializer
    from evq.worker import EvqHuey, WorkerOptions

    huey = EvqHuey(WorkerOptions(url=os.devnull + ".unused.db"))
    assert type(huey.serializer) is JSONSerializer
    assert type(huey.storage.serializer) is JSONSerializer


@pytest.mark.timeout(60)
def test_an_event_name_that_is_not_text_is_a_dead_letter_and_the_queue_stays_readable(
    queue_path: Path,
) -> None:
    good = evq.publish("fast.work", payload={"n": 1})
    damaged = _insert_event(queue_path, "{}")
    with sqlite3.connect(queue_path) as conn:
        conn.execute(
            "UPDATE evq_event SET name = CAST(x'ff00fe' AS TEXT), payload ="
            " CAST(x'80ff' AS TEXT) WHERE id = ?",
            (damaged,),
        )
    conn.close()
    after = evq.publish("fast.work", payload={"n": 2})

    result = run_evq("worker", "--burst", "--app", "tests.apps.reliability")
    assert result.returncode == 0, result.stderr
    assert sorted(line[0] for line in log_lines(queue_path.parent / "calls.log")) == sorted(
        [good, after]
    )
    assert rows(
        queue_path,
        "SELECT d.receiver, d.state FROM evq_delivery d JOIN evq_event e ON e.seq = d.event_seq"
        " WHERE e.id = ?",
        (damaged,),
    ) == [("evq:undeliverable", "dead")]
    # Every inspection command still reads the damaged row (shown with replacement characters).
    for command in (["dlq", "list"], ["events"], ["show", damaged], ["status"]):
        shown = run_evq(*command)
        assert shown.returncode == 0, (command, shown.stderr)
    assert "not UTF-8 text" in run_evq("dlq", "list").stdout
