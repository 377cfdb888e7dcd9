"""The dashboard's pages on a queue with 1,000,000 stored events against one with 1,000.

    python benchmarks/dashboard.py [--stored N] [--repeats R] [--output FILE]

Both SQLite files are built as `run.py`'s scale section builds them (all but 1,000 events
delivered long ago: 3 done deliveries and attempts each). Each page is asked for in-process
through the WSGI application (`evq.dashboard.create_app`), as a browser's request would reach
it, on the two files in turn, repeat by repeat; the table gives the medians and the ratio of the
big file to the small one, with the target: at most 1.5x (the pages read counters, indexes and
one page of the event log, never the whole history).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from run import _build_history

from evq.dashboard import create_app

TARGET_RATIO = 1.5
PENDING = 1_000
REQUESTS = 30


def _page_ms(url: str, path: str, query: str) -> float:
    """The median milliseconds of REQUESTS requests for one page (a fresh application each, so
    that no cached status is reused; its queue opened by one request first)."""
    times = []
    for _ in range(REQUESTS):
        app = create_app(url)
        _get(app, "/events/0", "")
        start = time.perf_counter()
        _get(app, path, query)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _get(app: Any, path: str, query: str) -> None:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SCRIPT_NAME": "",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
    }
    status: list[str] = []
    b"".join(app(environ, lambda s, headers: status.append(s)))
    if not status[0].startswith(("200", "404")):
        raise RuntimeError(f"{path}?{query} answered {status[0]}")


def _event_id(path: str, *, from_end: int) -> str:
    """The id of the event `from_end` places before the newest (0: the newest)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (found,) = conn.execute(
            "SELECT id FROM evq_event ORDER BY seq DESC LIMIT 1 OFFSET ?", (from_end,)
        ).fetchone()
    return str(found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("RESULTS-dashboard.md")
    )
    args = parser.parse_args(argv)
    small_n, large_n = 1_000 + PENDING, args.stored
    rows: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        files = {}
        for key, stored in (("small", small_n), ("large", large_n)):
            files[key] = os.path.join(tmp, f"{key}.db")
            print(f"filling a queue with {stored:,} events", file=sys.stderr)
            _build_history(files[key], stored, PENDING)
        # The newest delivered event (3 done deliveries, with attempts) in either file; and
        # the cursor of a page that starts 1,000 events down, which is as deep as the small
        # file goes (a cursor's cost does not depend on its depth: it is an index seek).
        delivered = {key: _event_id(path, from_end=PENDING) for key, path in files.items()}
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}/{args.repeats}", file=sys.stderr)
            for key, path in files.items():
                pages = {
                    "overview (status + last hour's chart)": ("/", ""),
                    "event log, first page": ("/events", ""),
                    "event log, the page after a cursor": (
                        "/events",
                        f"before={delivered[key]}",
                    ),
                    "event log, filtered by name pattern": ("/events", "name=order.*"),
                    "one event with 3 deliveries": (f"/events/{delivered[key]}", ""),
                    "dead letters": ("/dead-letters", ""),
                }
                for name, (page, query) in pages.items():
                    ms = _page_ms(path, page, query)
                    rows.setdefault(name, {}).setdefault(key, []).append(ms)
    lines = [
        "# The dashboard with many stored events",
        "",
        f"`python benchmarks/dashboard.py --stored {large_n}`: medians of {args.repeats} repeats"
        f" of {REQUESTS} requests each, in milliseconds, in-process through WSGI; SQLite.",
        "",
        f"| page | {small_n:,} stored | {large_n:,} stored | ratio | target <= {TARGET_RATIO}x |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, by_key in rows.items():
        small, large = statistics.median(by_key["small"]), statistics.median(by_key["large"])
        ratio = large / small
        verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
        lines.append(f"| {name} | {small:.2f} | {large:.2f} | {ratio:.2f}x | {verdict} |")
    lines += [
        "",
        "Not measured, and slow on a big log: a name pattern that matches none of the stored",
        "events makes the backend read the whole log for one page (`evq events --name` does the",
        "same; SQLite has no index on names).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
