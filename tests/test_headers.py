"""Event headers end to end: `evq publish --header` and `evq.publish(headers=...)`, a real
worker handing them to the receiver (on every attempt), `evq show`, and every bad header
refused with one `Error:` line, exit code 2 and nothing stored. On every backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_evq
from test_bad_input import assert_refused, stored_events

import evq
from evq.headers import MAX_HEADERS_BYTES

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def received(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_headers_reach_the_receiver_on_every_attempt(queue_url: str, tmp_path: Path) -> None:
    result = run_evq(
        "publish",
        "order.paid",
        "--header",
        f"traceparent={TRACEPARENT}",
        "-H",
        "correlationid=req-81",
        "--payload",
        '{"fail_once": true}',
    )
    assert result.returncode == 0, result.stderr
    event_id = result.stdout.strip()
    plain = evq.publish("order.created", payload={})

    result = run_evq("worker", "--burst", "--app", "tests.apps.headers")
    assert result.returncode == 0, result.stderr

    headers = {"traceparent": TRACEPARENT, "correlationid": "req-81"}
    assert sorted(
        (call["id"], call["attempt"], tuple(call["headers"].items()))
        for call in received(tmp_path / "calls.log")
    ) == sorted(
        [
            (event_id, 1, tuple(headers.items())),
            (event_id, 2, tuple(headers.items())),
            (plain, 1, ()),
        ]
    )


def test_show_prints_headers_as_cloudevents_extension_attributes(
    queue_url: str, tmp_path: Path
) -> None:
    event_id = evq.publish("order.paid", payload={"n": 1}, headers={"traceparent": TRACEPARENT})

    shown = run_evq("show", event_id, "--json")
    assert shown.returncode == 0, shown.stderr
    event = json.loads(shown.stdout)["event"]
    assert event["traceparent"] == TRACEPARENT
    assert event["specversion"] == "1.0" and event["data"] == {"n": 1}

    listed = run_evq("events", "--json")
    assert json.loads(listed.stdout)[0]["traceparent"] == TRACEPARENT

    piped = run_evq("show", event_id)
    assert f"header\ttraceparent\t{TRACEPARENT}" in piped.stdout.splitlines()


def test_jsonl_lines_may_carry_headers(queue_url: str, tmp_path: Path) -> None:
    lines = [
        {"name": "a.b", "payload": {}, "headers": {"corr": "1"}},
        {"name": "a.b", "payload": {}},
    ]
    result = run_evq("publish", "--jsonl", "-", input="\n".join(map(json.dumps, lines)))
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split()
    assert json.loads(run_evq("show", first, "--json").stdout)["event"]["corr"] == "1"
    assert "corr" not in json.loads(run_evq("show", second, "--json").stdout)["event"]


BAD_HEADERS = [
    (["-H", "Trace=1"], "bad header name 'Trace'"),
    (["-H", "trace-id=1"], "bad header name 'trace-id'"),
    (["-H", "a" * 21 + "=1"], "1 to 20 lower-case letters"),
    (["-H", "=1"], "bad header name ''"),
    (["-H", "type=x"], "CloudEvents context attribute"),
    (["-H", "evqstatus=x"], "evq's own attributes"),
    (["-H", "nope"], "expected NAME=VALUE"),
    (["-H", "a=1", "-H", "a=2"], "--header a: given twice"),
    (["-H", "a=tab\there"], "a character a CloudEvents string may not"),
    (["-H", "big=" + "x" * MAX_HEADERS_BYTES], f"over the limit of {MAX_HEADERS_BYTES:,}"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_HEADERS)
def test_a_bad_header_is_refused_and_nothing_is_stored(
    queue_url: str, args: list[str], fragment: str
) -> None:
    result = run_evq("publish", "a.b", *args)
    assert_refused(result, queue_url, fragment)


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"Bad": "x"}, "bad header name 'Bad'"),
        ({"n": 1}, "header 'n' must be a string, not int"),
        ({1: "x"}, "a header name must be a string, not int"),
        (["traceparent"], "headers must be a mapping"),
        ({"id": "x"}, "CloudEvents context attribute"),
    ],
)
def test_bad_headers_raise_invalid_input_from_python(
    queue_url: str, headers: Any, fragment: str
) -> None:
    with pytest.raises(evq.InvalidInput, match=fragment):
        evq.publish("a.b", payload={}, headers=headers)
    with pytest.raises(evq.InvalidInput, match=f"event 2: .*{fragment}"):
        evq.publish_many(
            [{"name": "a.b", "payload": {}}, {"name": "a.b", "payload": {}, "headers": headers}]
        )
    assert stored_events(queue_url) == 0


def test_a_bad_header_in_jsonl_names_its_line_and_stores_nothing(
    queue_url: str, tmp_path: Path
) -> None:
    lines = [{"name": "a.b", "payload": {}}, {"name": "a.b", "payload": {}, "headers": {"X": ""}}]
    result = run_evq("publish", "--jsonl", "-", input="\n".join(map(json.dumps, lines)))
    assert_refused(result, queue_url, "bad header name 'X'")


def test_header_with_jsonl_is_a_usage_error(queue_url: str, tmp_path: Path) -> None:
    result = run_evq("publish", "--jsonl", "-", "-H", "a=1", input="")
    assert result.returncode == 2
    assert "give no NAME, --payload, --key or --header" in result.stderr
    assert stored_events(queue_url) == 0


def test_a_dead_letter_shows_its_events_headers(queue_url: str, tmp_path: Path) -> None:
    evq.publish("order.paid", payload={}, headers={"corr": "7"})
    # Fanned out to three receivers by a worker that runs one; then a worker that knows none
    # of the others makes them dead letters.
    app = ("--burst", "--no-entry-points", "--app")
    assert run_evq("worker", *app, "tests.apps.recorder", "--receiver", "*:bill").returncode == 0
    assert run_evq("worker", *app, "tests.apps.asyncapp").returncode == 0
    listed = json.loads(run_evq("dlq", "list", "--json").stdout)
    shown = run_evq("dlq", "show", listed[0]["id"], "--json")
    assert json.loads(shown.stdout)["headers"] == {"corr": "7"}
    assert "header:       corr: 7" in run_evq("dlq", "show", listed[0]["id"]).stdout


def test_a_header_name_holding_a_nul_is_refused() -> None:
    with pytest.raises(evq.InvalidInput, match="bad header name"):
        evq.publish("a.b", payload={}, headers={"a\x00b": "x"})
