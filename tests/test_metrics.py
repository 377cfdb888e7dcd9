"""Prometheus metrics: `evq worker --metrics-port` scraped over HTTP from a real worker, of each
worker type, and `evq status --format prometheus` on every backend whose server is set."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, evq_env, run_evq
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from workers import WorkerProcess, wait_until

import evq
from evq import metrics
from evq.storage import open_queue

OUTCOMES = "tests.apps.outcomes"
ACCEPT, HICCUP, REJECT = (f"{OUTCOMES}:{name}" for name in ("accept", "hiccup", "reject"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample the worker serves, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return parse(text)


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def try_scrape(port: int) -> dict[Any, float] | None:
    try:
        return scrape(port)
    except OSError:  # not listening yet
        return None


def publish(name: str, count: int) -> None:
    evq.publish_many([{"name": name, "payload": {"n": n}} for n in range(count)])


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_a_worker_serves_its_deliveries_and_its_queue_over_http(
    queue_path: Path, worker_type: str
) -> None:
    for name in ("outcome.ok", "outcome.flaky", "outcome.bad"):
        publish(name, 5)
    evq.publisher.queue().close()
    port = free_port()
    before = time.time()
    with WorkerProcess(
        queue_path,
        "--app",
        OUTCOMES,
        "--worker-type",
        worker_type,
        "--workers",
        "3",
        "--prefetch",
        "1",
        EVQ_WORKER_METRICS_PORT=str(port),
    ) as worker:

        def finished() -> dict[Any, float] | None:
            samples = try_scrape(port)
            if (
                samples is None
                or value(samples, "evq_deliveries_total", receiver=HICCUP, outcome="done") != 5
            ):
                return None
            if value(samples, "evq_queue_deliveries", state="dead") != 5:
                return None  # the queue gauges are read at most every few seconds
            return samples

        samples = wait_until(finished, timeout=60, interval=0.2)
        assert worker.stop() == 0
    counts = {
        (receiver, outcome): value(
            samples, "evq_deliveries_total", receiver=receiver, outcome=outcome
        )
        for receiver in (ACCEPT, HICCUP, REJECT)
        for outcome in ("done", "retried", "dead")
    }
    assert counts == {
        (ACCEPT, "done"): 5,
        (ACCEPT, "retried"): 0,
        (ACCEPT, "dead"): 0,
        (HICCUP, "done"): 5,
        (HICCUP, "retried"): 5,
        (HICCUP, "dead"): 0,
        (REJECT, "done"): 0,
        (REJECT, "retried"): 0,
        (REJECT, "dead"): 5,
    }
    # One duration per attempt, in every bucket up to +Inf.
    for receiver, attempts in ((ACCEPT, 5), (HICCUP, 10), (REJECT, 5)):
        assert value(samples, "evq_delivery_duration_seconds_count", receiver=receiver) == attempts
        assert (
            value(samples, "evq_delivery_duration_seconds_bucket", receiver=receiver, le="+Inf")
            == attempts
        )
        assert value(samples, "evq_delivery_duration_seconds_sum", receiver=receiver) >= 0  # type: ignore[operator]
    assert {
        state: value(samples, "evq_queue_deliveries", state=state)
        for state in metrics.DELIVERY_STATES
    } == {
        "pending": 0,
        "scheduled": 0,
        "running": 0,
        "retrying": 0,
        "dead": 5,
    }
    assert value(samples, "evq_events_published_total") == 15
    assert value(samples, "evq_oldest_waiting_seconds") == 0
    assert value(samples, "evq_leases_held") == 0
    assert value(samples, "evq_workers_seen") == 1
    started = value(samples, "evq_worker_start_time_seconds")
    assert started is not None and before <= started <= time.time()
    info = {"version": evq.__version__, "worker_type": worker_type, "workers": "3"}
    assert value(samples, "evq_worker_info", **info) == 1
    # The process's own metrics come with them (the default registry).
    assert value(samples, "process_start_time_seconds") is not None


def test_leases_held_and_the_oldest_wait_show_a_busy_worker(
    queue_path: Path, tmp_path: Path
) -> None:
    evq.publish("order.paid", payload={})
    evq.publisher.queue().close()
    port = free_port()
    with WorkerProcess(
        queue_path,
        "--app",
        "tests.apps.recorder",
        "--prefetch",
        "2",
        "--metrics-port",
        str(port),
        "--shutdown-timeout",
        "0.1s",
        EVQ_TEST_SLEEP="600",
    ) as worker:
        # Three receivers: two leased by the worker's one thread (one running, one prefetched),
        # the third waiting for it.
        def busy() -> dict[Any, float] | None:
            samples = try_scrape(port)
            if samples is None or value(samples, "evq_leases_held") != 2:
                return None
            return samples

        samples = wait_until(busy, timeout=60, interval=0.2)
        assert value(samples, "evq_queue_deliveries", state="running") == 2
        assert value(samples, "evq_queue_deliveries", state="pending") == 1
        assert value(samples, "evq_oldest_waiting_seconds") > 0  # type: ignore[operator]
        worker.stop()


def test_the_queue_is_read_at_most_once_per_interval_however_often_it_is_scraped(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock[0])
    evq.publish("order.paid", payload={})
    registry = CollectorRegistry()
    worker_metrics = metrics.WorkerMetrics(url=str(queue_path))
    registry.register(worker_metrics)
    reads = []
    real_open = metrics._QueueReader._read

    def counting(self: Any) -> Any:
        reads.append(clock[0])
        return real_open(self)

    monkeypatch.setattr(metrics._QueueReader, "_read", counting)
    try:
        first = parse(generate_latest(registry).decode())
        evq.publish("order.paid", payload={})
        for _ in range(50):
            again = parse(generate_latest(registry).decode())
        assert (
            value(again, "evq_events_published_total")
            == value(first, "evq_events_published_total")
            == 1
        )
        assert len(reads) == 1
        clock[0] += metrics.QUEUE_READ_SECONDS
        later = parse(generate_latest(registry).decode())
        assert value(later, "evq_events_published_total") == 2
        assert len(reads) == 2
    finally:
        worker_metrics.close()
        evq.publisher.queue().close()


# `evq status --format prometheus`, on every backend


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    from contract.conftest import BACKENDS

    backend = BACKENDS[request.param]
    server = None
    if backend.env is not None:
        server = os.environ.get(backend.env)
        if not server:
            pytest.skip(f"set {backend.env} to run this on {request.param}")
    url = backend.fresh_url(tmp_path, server)
    open_queue(url).close()
    try:
        yield url
    finally:
        if backend.cleanup is not None and server is not None:
            backend.cleanup(server, url)


def test_status_prints_the_queue_gauges_in_the_prometheus_format(backend_url: str) -> None:
    for args in (["a.b"], ["a.b"], ["later.on", "--delay", "1h"]):
        assert run_evq("publish", *args, "--url", backend_url).returncode == 0
    result = run_evq("status", "--format", "prometheus", "--url", backend_url)
    assert result.returncode == 0, result.stderr
    samples = parse(result.stdout)
    assert value(samples, "evq_events_published_total") == 3
    assert value(samples, "evq_queue_events_awaiting_dispatch") == 3
    assert value(samples, "evq_queue_events_delayed") == 1
    assert {
        state: value(samples, "evq_queue_deliveries", state=state)
        for state in metrics.DELIVERY_STATES
    } == {state: 0 for state in metrics.DELIVERY_STATES}
    assert value(samples, "evq_oldest_waiting_seconds") > 0  # type: ignore[operator]
    assert value(samples, "evq_workers_seen") == 0
    assert "# TYPE evq_queue_deliveries gauge" in result.stdout
    # Worker-level metrics belong to a worker's endpoint, not to a status print.
    assert "evq_deliveries_total" not in result.stdout


# Bad input: one line, exit code 2, nothing stored


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--metrics-port", "0"], {}, "0 is not in the range 1<=x<=65535"),
        (["--metrics-port", "65536"], {}, "65536 is not in the range 1<=x<=65535"),
        (["--metrics-port", "http"], {}, "'http' is not a valid integer"),
        ([], {"EVQ_WORKER_METRICS_PORT": "99999"}, "99999 is not in the range"),
        (["--log-format", "xml"], {}, "'xml' is not one of 'plain', 'json'"),
        ([], {"EVQ_LOG_FORMAT": "logfmt"}, "'logfmt' is not one of 'plain', 'json'"),
    ],
)
def test_bad_metrics_and_log_options_are_one_line_and_exit_2(
    queue_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_evq("worker", "--app", OUTCOMES, *args, **env)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not queue_path.exists()


def test_a_metrics_port_in_use_is_one_line_and_exit_2(queue_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_evq("worker", "--app", OUTCOMES, "--metrics-port", str(port))
    assert result.returncode == 2
    assert result.stderr == f"Error: cannot serve metrics on port {port}: Address already in use\n"
    assert not queue_path.exists()


def test_without_the_prometheus_extra_the_options_say_which_extra_to_install(
    queue_path: Path, tmp_path: Path
) -> None:
    # A prometheus_client that cannot be imported, ahead of the installed one on the path.
    blocked = tmp_path / "blocked" / "prometheus_client"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('No module named prometheus_client')\n")
    env = evq_env()
    env["PYTHONPATH"] = os.pathsep.join([str(blocked.parent), env["PYTHONPATH"]])
    line = "Error: Prometheus metrics need prometheus-client: pip install 'evq[prometheus]'\n"
    for args in (
        ["worker", "--app", OUTCOMES, "--metrics-port", str(free_port())],
        ["status", "--format", "prometheus"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "evq", *args], capture_output=True, text=True, env=env, cwd=ROOT
        )
        assert (result.returncode, result.stderr) == (2, line)
    assert not queue_path.exists()
    # Without the options, the worker never imports it.
    result = subprocess.run(
        [sys.executable, "-m", "evq", "worker", "--app", OUTCOMES, "--burst"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_status_format_prometheus_goes_with_no_other_output_option(queue_path: Path) -> None:
    evq.publish("a.b", payload={})
    for extra in (["--json"], ["--jsonl"], ["--watch"], ["--check"]):
        result = run_evq("status", "--format", "prometheus", *extra)
        assert result.returncode == 2
        assert result.stderr.startswith("Error: --format prometheus cannot be used with")
        assert result.stderr.count("\n") == 1
