"""What the features of issue 13 cost a publisher: headers, OpenTelemetry tracing, apublish.

    python benchmarks/features.py [--events N] [--repeats R] [--smoke]

Each variant is measured in the same process as its baseline, interleaved repeat by repeat,
on one SQLite file at `sync=off` (a commit's fsync would drown the differences measured
here: it costs the same to every variant). Printed: the median time per event of each, and
its ratio to the baseline (the first row of each group). Variants:

* `publish` one event at a time: plain; with two headers; with tracing on (the SDK's tracer
  provider, spans exported nowhere) inside no span, and inside a parent span;
* `publish_many` of `--events` events: plain; every event with headers; with tracing on;
* `apublish` one at a time from a coroutine, against `publish` called in that coroutine.

Tracing off is the default in a process that has not imported OpenTelemetry: its cost is the
`plain` rows (one `sys.modules` look-up per publish).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import evq
import evq.config

HEADERS = {"correlationid": "req-81c1", "schemaversion": "3"}


def timed(run: Callable[[], object], count: int) -> float:
    """Seconds per event of one run of `run`, which publishes `count` events."""
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) / count


def measure(variants: dict[str, Callable[[], object]], count: int, repeats: int) -> list[str]:
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            samples[name].append(timed(run, count))
    base = statistics.median(next(iter(samples.values())))
    lines = []
    for name, values in samples.items():
        median = statistics.median(values)
        lines.append(f"  {name:<44} {median * 1e6:9.2f} us/event  x{median / base:5.2f}")
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--smoke", action="store_true", help="a few events, to check it runs")
    args = parser.parse_args(argv)
    events, repeats = (20, 2) if args.smoke else (args.events, args.repeats)
    singles = max(1, events // 10)
    directory = tempfile.mkdtemp(prefix="evq-features-")
    evq.configure(url=f"sqlite:///{Path(directory) / 'evq.db'}?sync=off", otel=False)
    evq.publish("warm.up", payload={})

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("benchmark")

    def traced(run: Callable[[], object], parent: bool = False) -> Callable[[], object]:
        def call() -> object:
            evq.configure(otel=True)
            try:
                if not parent:
                    return run()
                with tracer.start_as_current_span("request"):
                    return run()
            finally:
                evq.configure(otel=False)

        return call

    def publish_one(headers: dict[str, str] | None = None) -> Callable[[], object]:
        return lambda: [
            evq.publish("order.paid", payload={"n": n}, headers=headers) for n in range(singles)
        ]

    items = [{"name": "order.paid", "payload": {"n": n}} for n in range(events)]
    with_headers = [{**item, "headers": HEADERS} for item in items]

    async def apublish_all() -> None:
        for n in range(singles):
            await evq.apublish("order.paid", payload={"n": n})

    async def publish_all_blocking() -> None:
        for n in range(singles):
            evq.publish("order.paid", payload={"n": n})

    print(f"publish, {singles} events a run, {repeats} runs (sync=off)")
    print(
        "\n".join(
            measure(
                {
                    "plain (tracing off)": publish_one(),
                    "with 2 headers": publish_one(HEADERS),
                    "tracing on, no parent span": traced(publish_one()),
                    "tracing on, inside a span": traced(publish_one(), parent=True),
                },
                singles,
                repeats,
            )
        )
    )
    print(f"publish_many, {events} events a run")
    print(
        "\n".join(
            measure(
                {
                    "plain (tracing off)": lambda: evq.publish_many(items),
                    "every event with 2 headers": lambda: evq.publish_many(with_headers),
                    "tracing on, inside a span": traced(
                        lambda: evq.publish_many(items), parent=True
                    ),
                },
                events,
                repeats,
            )
        )
    )
    print(f"from a coroutine, {singles} events a run")
    print(
        "\n".join(
            measure(
                {
                    "publish (blocks the loop)": lambda: asyncio.run(publish_all_blocking()),
                    "apublish": lambda: asyncio.run(apublish_all()),
                },
                singles,
                repeats,
            )
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
