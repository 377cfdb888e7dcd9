"""`evq publish --jsonl`: publish many events from JSON lines, all or nothing."""

from __future__ import annotations

import contextlib
import gc
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import click

from evq.errors import InvalidInput, StorageError

if TYPE_CHECKING:
    from evq.storage.contract import NewEvent

BATCH_SIZE = 1000
# What a line may hold besides its payload: name, key, delay and JSON punctuation.
LINE_ROOM = 64 * 1024
# How much of the input is read at a time.
_CHUNK = 1024 * 1024
# Below this many lines a progress bar would only flicker.
PROGRESS_THRESHOLD = 10_000


def publish_jsonl(source: str, *, delay: float | None, as_json: bool) -> None:
    """Validate every line of `source` (a path or `-`) and publish them all in one
    transaction: all or nothing.

    A bad line stops everything, naming its line number, and nothing is stored. Lines are
    checked a batch at a time as they are read, so only the events ready to store are kept;
    a backend that can store a batch while the next is read (PostgreSQL) is handed each as it
    is ready, inside the one transaction that a bad line rolls back. A failure while storing
    (a full disk), or the process killed meanwhile, stores nothing either: the whole input can
    simply be given again.
    """
    from evq.config import current
    from evq.publisher import store_stream

    max_line = current().max_payload_bytes + LINE_ROOM
    # The events hold no reference cycles, but the collector would walk them all, again and
    # again as they pile up, and once more when it is back on: a tenth of a large file's time.
    with _collector_paused(), _open(source) as file, _progress() as advance:
        try:
            ids = store_stream(_batches(file, max_line, delay, advance))
        except StorageError as exc:
            raise type(exc)(f"{exc}; nothing was published") from None
    if as_json:
        click.echo(json.dumps({"published": len(ids), "ids": ids}))
    elif ids:
        sys.stdout.write("\n".join(ids) + "\n")


def _batches(
    file: IO[str], max_line: int, delay: float | None, advance: Callable[[int], None]
) -> Iterator[list[NewEvent]]:
    """The events of the lines of `file`, prepared, in batches as they are read; a bad line
    raises `InvalidInput` naming it (the first problem in the input: every line before it is
    checked first)."""
    read = 0  # lines read so far
    for lines in _line_batches(file, max_line):
        numbers: Sequence[int] = range(read + 1, read + 1 + len(lines))
        try:
            items = list(map(_parse, lines))
        except InvalidInput:  # A blank line, or a bad one: which, and is it the first?
            items, numbers = _parse_each(lines, read, delay)
        read += len(lines)
        for batch in _prepare(items, numbers, delay):
            yield batch
            advance(len(batch))


def _parse_each(lines: list[str], read: int, delay: float | None) -> tuple[list[Any], list[int]]:
    """The JSON values of the lines that are not blank, and their line numbers (`read` lines
    came before these); a bad line raises `InvalidInput` naming it, once the lines before it
    are checked (one of them may hold a bad event: the first problem is the one reported)."""
    items: list[Any] = []
    numbers: list[int] = []
    for number, line in enumerate(lines, start=read + 1):
        if not line or line.isspace():
            continue
        try:
            items.append(_parse(line))
        except InvalidInput as exc:
            _prepare(items, numbers, delay)
            raise _at_line(number, exc) from None
        numbers.append(number)
    return items, numbers


def _prepare(items: list[Any], numbers: Sequence[int], delay: float | None) -> list[list[NewEvent]]:
    from evq.publisher import prepare_decoded

    try:
        return prepare_decoded(items, delay=delay, batch_size=BATCH_SIZE)
    except InvalidInput as exc:
        if exc.position is None:
            raise
        raise _at_line(numbers[exc.position], exc) from None


def _line_batches(file: IO[str], limit: int) -> Iterator[list[str]]:
    """The lines of `file`, without their newline, a chunk's worth at a time; one longer than
    `limit` characters is refused after reading at most `limit` + 1 of them (`--jsonl
    /dev/zero` must not read until memory runs out). Read in chunks and split at C speed: a
    generator resumed for every line would cost a tenth of a large input's time."""
    done = 0  # lines handed out so far, for the error's line number
    rest = ""  # the start of a line whose end is not read yet
    while chunk := file.read(max(1, min(_CHUNK, limit + 1 - len(rest)))):
        lines = (rest + chunk).split("\n")
        rest = lines.pop()
        if len(rest) > limit:
            raise InvalidInput(
                f"line {done + len(lines) + 1}: longer than {limit:,} characters"
                " (EVQ_MAX_PAYLOAD and 64 KiB for its name, key and delay); nothing was published"
            )
        done += len(lines)
        yield lines
    if rest:
        yield [rest]


def _at_line(number: int, exc: InvalidInput) -> InvalidInput:
    return type(exc)(f"line {number}: {exc}; nothing was published")


def _parse(line: str) -> Any:
    # json.loads, less its Python layers (a third of a small line's time): the C scanner
    # reads one value, and only a line it does not read whole goes to json.loads to explain.
    try:
        value, end = _scan(line, 0)
    except (StopIteration, ValueError, RecursionError):
        end = -1
    if end == len(line):
        return value
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise InvalidInput("cannot be read: it is nested too deeply") from None
    except ValueError as exc:  # A number too long to convert, for one.
        raise InvalidInput(f"cannot be read: {exc}") from None


def _scanner() -> Callable[[str, int], tuple[Any, int]]:
    """The C scanner that `JSONDecoder.raw_decode` calls, where this Python has it (CPython
    3.11 to 3.13 do: `tests/test_fast_paths.py` checks it on each in CI), else `raw_decode`
    itself, the public name for the same reading (a few hundred nanoseconds slower a line)."""
    decoder = json.JSONDecoder()
    scan_once = getattr(decoder, "scan_once", None)
    if callable(scan_once):
        try:
            if scan_once('{"a": [1]}', 0) == ({"a": [1]}, 10):
                return scan_once  # type: ignore[no-any-return]
        except Exception:  # a scanner that takes other arguments: use the public one
            pass
    return decoder.raw_decode


_scan = _scanner()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
    """A count of the events published, on stderr, once an input on a terminal passes
    `PROGRESS_THRESHOLD` events; nothing otherwise. It counts events as they are checked and
    handed to the queue: the input's length is not known until it is read."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.task: Any = None
        self.count = 0

    def __enter__(self) -> Callable[[int], None]:
        if not sys.stderr.isatty():
            return lambda n: None
        return self.advance

    def advance(self, n: int) -> None:
        self.count += n
        if self.bar is None:
            if self.count < PROGRESS_THRESHOLD:
                return
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("publishing: {task.completed:,} events"),
                TimeElapsedColumn(),
                transient=True,
                console=_stderr_console(),
            )
            self.bar.start()
            self.task = self.bar.add_task("publishing", total=None)
        self.bar.update(self.task, completed=self.count)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _stderr_console() -> Any:
    import os

    from rich.console import Console

    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
