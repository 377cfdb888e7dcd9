"""What `evq.testing` costs a test suite: publish and `deliver()` on a `memory://` queue
against the same on a temporary SQLite file, measured in one process, interleaved.

    python benchmarks/testing.py [--events N] [--repeats R]

Prints, for each queue, the median time per event of `evq.publish` and of `deliver()` (3
receivers each, so three attempts per event), and the ratio of SQLite to memory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import evq
from evq.testing import use_queue


def bill(event: evq.Event, /) -> None:
    pass


def ship(event: evq.Event, /) -> None:
    pass


def audit(event: evq.Event, /) -> None:
    pass


def measure(url: str | None, events: int) -> tuple[float, float]:
    """Seconds per event of publishing `events` events, then of delivering them."""
    with use_queue(url) as queue:
        started = time.perf_counter()
        for n in range(events):
            evq.publish("order.created", payload={"n": n})
        published = time.perf_counter()
        attempts = queue.deliver()
        delivered = time.perf_counter()
    assert len(attempts) == 3 * events
    return (published - started) / events, (delivered - published) / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    evq.subscribe("order.*", receiver=bill)
    evq.subscribe("order.*", receiver=ship)
    evq.subscribe("**", receiver=audit)
    runs: dict[str, list[tuple[float, float]]] = {"memory": [], "sqlite": []}
    with tempfile.TemporaryDirectory() as directory:
        for repeat in range(args.repeats):
            runs["memory"].append(measure(None, args.events))
            path = Path(directory) / f"evq-{repeat}.db"
            runs["sqlite"].append(measure(f"sqlite:///{path}", args.events))
    medians = {
        name: (statistics.median(p for p, _ in r), statistics.median(d for _, d in r))
        for name, r in runs.items()
    }
    print(f"{args.events} events x 3 receivers, median of {args.repeats} runs, per event:")
    for name, (publish, deliver) in medians.items():
        print(f"  {name:7} publish {publish * 1e6:8.1f} us   deliver {deliver * 1e6:8.1f} us")
    publish_ratio = medians["sqlite"][0] / medians["memory"][0]
    deliver_ratio = medians["sqlite"][1] / medians["memory"][1]
    print(f"  sqlite / memory: publish x{publish_ratio:.1f}, deliver x{deliver_ratio:.1f}")


if __name__ == "__main__":
    main()
