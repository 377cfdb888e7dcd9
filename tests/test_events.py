"""`evq events` and `evq show`: the event log, newest first, and one event's full history, on
every backend."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import run_evq
from contract.steps import States, every_state, publish
from terminal import run_in_terminal

from evq.cli import cli
from evq.publisher import prepare
from evq.storage import Queue, open_queue

STATES = ("pending", "scheduled", "running", "retrying", "done", "dead")
# Always present in an event, with their type.
CLOUD_EVENT_FIELDS = {
    "specversion": str,
    "id": str,
    "type": str,
    "source": str,
    "time": str,
    "datacontenttype": str,
    "data": dict,
    "evqstatus": str,
    "evqdeliveries": int,
    **{f"evq{state}": int for state in STATES},
}
# Present only when they have a value.
OPTIONAL_CLOUD_EVENT_FIELDS = {"evqkey": str, "evqdueat": str, "evqdispatchedat": str}
DELIVERY_FIELDS = {
    "id": str,
    "receiver": str,
    "state": str,
    "attempts": int,
    "failures": int,
    "replay": bool,
    "created_at": str,
    "due_at": (str, type(None)),
    "started_at": (str, type(None)),
    "finished_at": (str, type(None)),
    "worker": (str, type(None)),
    "last_error": (str, type(None)),
    "traceback": (str, type(None)),
    "history": list,
}
ATTEMPT_FIELDS = {
    "attempt": int,
    "outcome": str,
    "worker": (str, type(None)),
    "started_at": (str, type(None)),
    "finished_at": str,
    "duration_seconds": (float, type(None)),
    "error": (str, type(None)),
}
# CloudEvents 1.0 (JSON format): attribute names, RFC 3339 times and URI references.
ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]+$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
URI_REFERENCE = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")
INT32 = range(-(2**31), 2**31)


@pytest.fixture
def queue(queue_url: str) -> Iterator[Queue]:
    handle = open_queue(queue_url)
    yield handle
    handle.close()


@pytest.fixture
def states(queue: Queue) -> States:
    return every_state(queue, at=time.time())


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def check_fields(record: dict[str, Any], fields: dict[str, Any]) -> None:
    assert set(record) == set(fields)
    for key, kind in fields.items():
        assert isinstance(record[key], kind), (key, record[key])


def check_cloud_event(record: dict[str, Any], queue: Queue) -> None:
    assert set(CLOUD_EVENT_FIELDS) <= set(record)
    assert set(record) <= set(CLOUD_EVENT_FIELDS) | set(OPTIONAL_CLOUD_EVENT_FIELDS)
    for key, kind in {**CLOUD_EVENT_FIELDS, **OPTIONAL_CLOUD_EVENT_FIELDS}.items():
        if key in record:
            assert isinstance(record[key], kind), (key, record[key])
    for key, value in record.items():
        assert re.fullmatch(r"[a-z0-9]+", key), key
        assert value is not None, key
        assert key == "data" or not isinstance(value, (dict, list)), key
    assert record["specversion"] == "1.0"
    assert record["datacontenttype"] == "application/json"
    assert record["source"] == queue.source
    assert record["time"].endswith("+00:00")
    assert record["evqdeliveries"] == sum(record[f"evq{state}"] for state in STATES)


def validate_cloud_event(document: Any) -> None:
    """Fail unless `document` is a valid CloudEvent 1.0 in the JSON format, with the
    `application/json` data evq publishes."""
    assert isinstance(document, dict)
    for required in ("id", "source", "specversion", "type"):
        assert isinstance(document.get(required), str), required
        assert document[required], required
    assert document["specversion"] == "1.0"
    assert URI_REFERENCE.match(document["source"]), document["source"]
    assert document["datacontenttype"] == "application/json"
    assert "data_base64" not in document
    json.dumps(document["data"])
    for name, value in document.items():
        assert ATTRIBUTE_NAME.match(name), name
        if name == "data":
            continue
        # Every attribute is a scalar (String, Integer, Boolean, Timestamp, URI...), never null.
        assert isinstance(value, (str, int)), (name, value)
        if isinstance(value, int):
            assert not isinstance(value, bool) and value in INT32, (name, value)
    for name in ("time", "evqdueat", "evqdispatchedat"):
        if name in document:
            assert RFC3339.match(document[name]), (name, document[name])
            datetime.fromisoformat(document[name])


# evq events


def test_events_json_lists_cloud_events_newest_first_with_their_status(
    states: States, queue: Queue
) -> None:
    result = invoke("events", "--json")

    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    for record in records:
        check_cloud_event(record, queue)
    assert [(r["id"], r["evqstatus"]) for r in records] == [
        (states.delayed, "scheduled"),
        (states.pending, "pending"),
        (states.running, "running"),
        (states.retrying, "retrying"),
        (states.dead, "dead"),
        (states.done, "done"),
    ]
    assert records[-1]["type"] == "order.created"
    assert (records[-1]["evqdone"], records[-1]["evqdeliveries"]) == (1, 1)
    assert records[4]["evqdead"] == 1
    assert "evqdispatchedat" not in records[0]
    assert "evqdueat" in records[0]
    assert "evqdispatchedat" in records[-1]
    assert "evqdueat" not in records[-1]
    assert "evqkey" not in records[-1]


def test_events_jsonl_prints_valid_cloud_events_with_scalar_extensions(
    queue: Queue, states: States
) -> None:
    queue.publish([prepare("order.refunded", payload={"order": 8}, key="refund-8")])

    result = invoke("events", "--jsonl")

    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 7
    for record in records:
        validate_cloud_event(record)
    assert records[0]["evqkey"] == "refund-8"
    assert records[0]["data"] == {"order": 8}


def test_events_status_keeps_events_with_a_delivery_in_that_state(states: States) -> None:
    expected = {
        "done": states.done,
        "dead": states.dead,
        "retrying": states.retrying,
        "running": states.running,
        "pending": states.pending,
        "scheduled": states.delayed,
    }
    for status, event_id in expected.items():
        result = invoke("events", "--status", status, "--jsonl")
        assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [event_id]


def test_events_name_pattern_since_until_and_limit_select_events(
    queue: Queue, states: States
) -> None:
    def ids(*args: str) -> list[str]:
        result = invoke("events", "--jsonl", *args)
        assert result.exit_code == 0, result.output
        return [json.loads(line)["id"] for line in result.stdout.splitlines()]

    assert ids("--name", "order.*") == [states.retrying, states.dead, states.done]
    assert ids("--name", "order.paid") == [states.dead]
    assert ids("--name", "**") == ids()
    assert ids("--since", "35s", "--until", "15s") == [states.running, states.retrying]
    assert ids("--limit", "2") == [states.delayed, states.pending]
    old = publish(queue, "order.created", at=time.time() - 3 * 86400)
    assert ids("--until", "2d") == [old]


def test_events_piped_prints_one_tab_separated_line_per_event(states: States) -> None:
    result = run_evq("events")

    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [fields[0] for fields in lines][-1] == states.done
    for event_id, name, published, status, total, *counts in lines:
        assert re.fullmatch(r"[0-9A-Z]{26}", event_id)
        assert re.fullmatch(r"[a-z]+\.[a-z]+", name)
        assert published.endswith("+00:00")
        assert status in STATES
        assert len(counts) == len(STATES)
        assert int(total) == sum(int(count) for count in counts)
    dead = dict(zip(STATES, map(int, lines[4][5:]), strict=True))
    assert dead == {**dict.fromkeys(STATES, 0), "dead": 1}


def test_events_jsonl_as_a_subprocess_prints_one_object_per_line(
    states: States, queue: Queue
) -> None:
    result = run_evq("events", "--jsonl", "--status", "dead")

    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    check_cloud_event(record, queue)
    assert record["id"] == states.dead


def test_events_on_a_terminal_shows_a_table_with_ages(states: States) -> None:
    result = run_in_terminal("events")

    assert result.returncode == 0, result.stdout
    assert "Published" in result.stdout
    assert "s ago" in result.stdout
    assert "1 dead" in result.stdout
    assert states.done in result.stdout


def test_events_with_a_bad_pattern_or_no_queue_exits_2(states: States, tmp_path: Path) -> None:
    result = run_evq("events", "--name", "order.**x")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: invalid pattern")

    result = run_evq("events", "--url", str(tmp_path / "none.db"))
    assert result.returncode == 2
    assert not (tmp_path / "none.db").exists()


# evq show


def test_show_json_has_the_event_and_every_delivery_with_its_history(
    states: States, queue: Queue
) -> None:
    result = invoke("show", states.dead, "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"event", "deliveries"}
    event, deliveries = document["event"], document["deliveries"]
    check_cloud_event(event, queue)
    validate_cloud_event(event)
    assert (event["id"], event["evqstatus"], event["evqdead"]) == (states.dead, "dead", 1)
    assert event["data"] == {"at": pytest.approx(time.time() - 40, abs=30)}
    (delivery,) = deliveries
    check_fields(delivery, DELIVERY_FIELDS)
    assert delivery["state"] == "dead"
    assert delivery["last_error"] == "ValueError: card declined"
    assert delivery["traceback"].endswith("card declined")
    (attempt,) = delivery["history"]
    check_fields(attempt, ATTEMPT_FIELDS)
    assert attempt["outcome"] == "dead"
    assert attempt["duration_seconds"] == 0.25


def test_show_piped_prints_lines_that_say_what_they_are(states: States) -> None:
    result = run_evq("show", states.retrying)

    assert result.returncode == 0, result.stderr
    kinds = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert kinds == ["event", "data", "delivery", "attempt"]
    delivery = result.stdout.splitlines()[2].split("\t")
    assert delivery[2:4] == ["tests.apps.states:handle", "retrying"]


def test_show_on_a_terminal_shows_payload_deliveries_and_attempts(states: States) -> None:
    result = run_in_terminal("show", states.dead)

    assert result.returncode == 0, result.stdout
    for text in ("Payload:", "Deliveries:", "Attempts:", "card declined", "Traceback"):
        assert text in result.stdout


def test_show_an_unknown_event_exits_2_with_one_line(states: States) -> None:
    result = run_evq("show", "01NOSUCHEVENT")

    assert result.returncode == 2
    assert result.stderr.startswith("Error: no event with id '01NOSUCHEVENT'")
    assert len(result.stderr.splitlines()) == 1
