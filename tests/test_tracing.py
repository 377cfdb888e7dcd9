"""OpenTelemetry tracing across real processes: a publisher process that traces with the SDK
and a worker process whose app does too; spans are read from the file the SDK exported them
to (tests/apps/traced.py). And when tracing is off, OpenTelemetry is not even imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT, evq_env, run_evq
from workers import rows


def spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def publish_traced(name: str, payload: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tests.apps.traced", name, payload],
        capture_output=True,
        text=True,
        timeout=60,
        env=evq_env(**env),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_receivers_span_joins_the_publishers_trace(queue_path: Path) -> None:
    span_file = queue_path.parent / "spans.jsonl"
    event_id = publish_traced("order.paid", '{"fail_once": true}', EVQ_TEST_SPANS=str(span_file))
    published = spans(span_file)
    checkout = next(s for s in published if s["name"] == "checkout")
    producer = next(s for s in published if s["name"] == "publish order.paid")
    assert producer["kind"] == "PRODUCER"
    assert producer["trace_id"] == checkout["trace_id"]
    assert producer["parent_id"] == checkout["span_id"]
    assert producer["attributes"] == {
        "messaging.system": "evq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "order.paid",
        "messaging.message.id": event_id,
    }
    batch = next(s for s in published if s["name"] == "publish (many)")
    assert batch["attributes"]["messaging.batch.message_count"] == 2
    shown = json.loads(run_evq("show", event_id, "--json").stdout)["event"]
    assert shown["traceparent"].startswith(f"00-{producer['trace_id']}-{producer['span_id']}-")

    result = run_evq(
        "worker", "--burst", "--no-entry-points", "--app", "tests.apps.traced",
        EVQ_TEST_SPANS=str(span_file),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    worker_spans = [s for s in spans(span_file) if s["pid"] != producer["pid"]]
    attempts = sorted(
        (s for s in worker_spans if s["attributes"].get("messaging.message.id") == event_id),
        key=lambda s: s["attributes"]["evq.attempt"],
    )
    assert [(s["name"], s["kind"], s["status"]) for s in attempts] == [
        ("process order.paid", "CONSUMER", "ERROR"),
        ("process order.paid", "CONSUMER", "UNSET"),
    ]
    for attempt in attempts:
        # Parented by the publisher's span, in the publisher's trace.
        assert attempt["trace_id"] == producer["trace_id"]
        assert attempt["parent_id"] == producer["span_id"]
        assert attempt["attributes"]["messaging.system"] == "evq"
        assert attempt["attributes"]["messaging.destination.name"] == "order.paid"
        assert attempt["attributes"]["messaging.operation.type"] == "process"
        assert (
            attempt["attributes"]["messaging.destination.subscription.name"]
            == "tests.apps.traced:charge"
        )
    assert attempts[0]["events"] == ["exception"]
    # The receiver's own spans are children of the attempt's.
    charges = [s for s in worker_spans if s["name"] == "charge card"]
    assert {s["parent_id"] for s in charges} >= {a["span_id"] for a in attempts}
    assert {s["trace_id"] for s in charges} >= {producer["trace_id"]}


def test_evq_otel_0_turns_tracing_off_even_in_a_traced_application(queue_path: Path) -> None:
    span_file = queue_path.parent / "spans.jsonl"
    event_id = publish_traced("order.paid", "{}", EVQ_TEST_SPANS=str(span_file), EVQ_OTEL="0")
    assert [s["name"] for s in spans(span_file)] == ["checkout"]
    shown = json.loads(run_evq("show", event_id, "--json").stdout)["event"]
    assert "traceparent" not in shown


def test_opentelemetry_is_not_imported_unless_the_application_traces(queue_path: Path) -> None:
    code = (
        "import sys, evq; evq.publish('a.b', payload={}, headers={'corr': '1'});"
        " evq.publish_many([{'name': 'a.b', 'payload': {}}]);"
        " print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'evq.tracing'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=evq_env(), cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    forced = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=evq_env(EVQ_OTEL="1"),
        cwd=ROOT,
    )
    assert "'evq.tracing'" in forced.stdout, forced.stderr
    # No tracer provider set: nothing to propagate, the event is stored as it was given.
    assert set(rows(queue_path, "SELECT headers FROM evq_event")) == {(None,), ('{"corr":"1"}',)}


def test_a_bad_evq_otel_is_refused(queue_path: Path) -> None:
    result = run_evq("publish", "a.b", EVQ_OTEL="sometimes")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["Error: EVQ_OTEL must be auto, 1 or 0, got 'sometimes'"]
    assert not queue_path.exists() or rows(queue_path, "SELECT count(*) FROM evq_event") == [(0,)]
