"""`evq publish --jsonl`: publish many events from JSON lines, all or nothing."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

import click

from evq.errors import InvalidInput

BATCH_SIZE = 1000
# Below this many lines a progress bar would only flicker.
PROGRESS_THRESHOLD = 10_000


def publish_jsonl(source: str, *, delay: float | None, as_json: bool) -> None:
    """Validate every line of `source` (a path or `-`), then publish them in batches.

    A bad line stops everything before anything is stored, naming its line number.
    """
    from evq.publisher import prepare_item, queue

    events = []
    with _open(source) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                events.append(prepare_item(_parse(line), delay=delay))
            except InvalidInput as exc:
                raise type(exc)(f"line {number}: {exc}; nothing was published") from None
    store = queue()
    ids: list[str] = []
    with _progress(len(events)) as advance:
        for start in range(0, len(events), BATCH_SIZE):
            batch = events[start : start + BATCH_SIZE]
            ids.extend(store.publish(batch))
            advance(len(batch))
    if as_json:
        click.echo(json.dumps({"published": len(ids), "ids": ids}))
    else:
        sys.stdout.write("".join(f"{event_id}\n" for event_id in ids))


def _parse(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc.msg} at column {exc.colno}") from None


class _open:  # noqa: N801 - used like open()
    def __init__(self, source: str) -> None:
        self.source = source
        self.file: IO[str] | None = None

    def __enter__(self) -> IO[str]:
        if self.source == "-":
            return sys.stdin
        try:
            self.file = open(self.source, encoding="utf-8")
        except FileNotFoundError:
            raise InvalidInput(f"--jsonl {self.source}: no such file") from None
        except OSError as exc:
            raise InvalidInput(f"--jsonl {self.source}: cannot read it: {exc.strerror}") from None
        return self.file

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()


class _progress:  # noqa: N801 - used like a function
    """A progress bar on stderr for long inputs on a terminal; nothing otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Any:
        if self.total < PROGRESS_THRESHOLD or not sys.stderr.isatty():
            return lambda n: None
        from rich.progress import Progress

        self.bar = Progress(transient=True, console=_stderr_console())
        self.bar.start()
        task = self.bar.add_task("publishing", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _stderr_console() -> Any:
    import os

    from rich.console import Console

    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
