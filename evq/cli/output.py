"""Output conventions shared by every evq command, in the spirit of gh and sqlite-utils.

* `--json` prints one JSON document and `--jsonl` one JSON object per line, for programs.
* On a terminal, records are drawn as a table with human-friendly values, for people.
* Piped anywhere else, records are plain tab-separated lines without a header, for `cut`,
  `awk` and `while read`: one record is always exactly one line.

rich is imported only when a table is drawn, so importing this module costs only click.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, TextIO, TypeVar, cast

import click

__all__ = [
    "Column",
    "is_terminal",
    "output_options",
    "render",
    "use_color",
]

_F = TypeVar("_F", bound=Callable[..., Any])

# Backslash is escaped too, so that a value holding a literal "\t" stays distinguishable.
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class Column:
    """One column of tabular output: which record key to show and under which header.

    `human` turns a raw value into text for the terminal table only (JSON and TSV keep the raw
    value); it is not called for missing or None values, which show as an empty cell.
    """

    key: str
    header: str
    human: Callable[[Any], str] | None = None
    justify: Literal["left", "right"] = "left"


def output_options(f: _F) -> _F:
    """Add `--json` and `--jsonl` to a click command, passed on as `output_format`.

    The command receives `output_format="json"`, `"jsonl"` or `None`. Giving both flags is a
    usage error (exit code 2). Put this decorator below `@click.command()`.
    """

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.pop("output_json", False)
        as_jsonl = kwargs.pop("output_jsonl", False)
        if as_json and as_jsonl:
            raise click.UsageError(
                "--json and --jsonl cannot be used together; choose one.",
                ctx=click.get_current_context(silent=True),
            )
        kwargs["output_format"] = "json" if as_json else "jsonl" if as_jsonl else None
        return f(*args, **kwargs)

    # functools.wraps shares the wrapped function's list of pending click params; copy it so
    # the options below are attached to the wrapper only.
    pending = f.__dict__.get("__click_params__")
    if pending is not None:
        wrapper.__dict__["__click_params__"] = list(pending)
    decorated: Callable[..., Any] = wrapper
    decorated = click.option(
        "--jsonl", "output_jsonl", is_flag=True, help="Print one JSON object per line."
    )(decorated)
    decorated = click.option(
        "--json", "output_json", is_flag=True, help="Print one JSON document."
    )(decorated)
    return cast(_F, decorated)


def render(
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    output_format: str | None,
    document: Any = None,
    stream: TextIO | None = None,
) -> None:
    """Write `records` to `stream` (default stdout) as JSON, JSON lines, a table or TSV.

    `output_format` is what `output_options` passed in. With `"json"`, `document` (if given)
    is printed instead of the list of records, for commands whose JSON is not a plain list.
    JSON output has every key of each record; the table and TSV show only `columns`.
    """
    out = stream if stream is not None else sys.stdout
    if output_format == "json":
        payload = document if document is not None else [dict(r) for r in records]
        out.write(json.dumps(payload, indent=2, ensure_ascii=False, default=_json_default))
        out.write("\n")
    elif output_format == "jsonl":
        for record in records:
            out.write(_compact_json(dict(record)))
            out.write("\n")
    elif output_format is not None:
        raise ValueError(f"unknown output format {output_format!r}; expected json, jsonl or None")
    elif is_terminal(out):
        _render_table(records, columns, out)
    else:
        for record in records:
            out.write("\t".join(_tsv_cell(record.get(c.key)) for c in columns))
            out.write("\n")


def is_terminal(stream: TextIO) -> bool:
    """Return True if `stream` is an interactive terminal (False for pipes, files, closed)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        # ValueError: isatty() on a closed file.
        return False


def use_color(stream: TextIO) -> bool:
    """Return True if colour may be written to `stream`.

    Not if `NO_COLOR` is set to anything (https://no-color.org), `TERM` is `dumb`, or `stream`
    is not a terminal.
    """
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    return is_terminal(stream)


def _render_table(
    records: Sequence[Mapping[str, Any]], columns: Sequence[Column], out: TextIO
) -> None:
    """Draw records as a rich table on the terminal `out`."""
    if not records:
        # stderr, so that `$(evq ...)` and pipes still see an empty result.
        message = "No results."
        if use_color(sys.stderr):
            message = click.style(message, dim=True)
        click.echo(message, file=sys.stderr)
        return

    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    color = use_color(out)
    # color_system=None drops bold and dim as well as colour; no_color alone would keep them.
    console = Console(
        file=out,
        no_color=not color,
        color_system="auto" if color else None,
        highlight=False,
        soft_wrap=False,
    )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column.header, justify=column.justify)
    for record in records:
        # Text(), not str: a value like "[red]" must be shown, not read as rich markup.
        table.add_row(*(Text(_table_cell(record.get(c.key), c)) for c in columns))
    console.print(table)


def _table_cell(value: Any, column: Column) -> str:
    """Return the text of one table cell, humanised when the column asks for it."""
    if value is None:
        return ""
    if column.human is not None:
        return column.human(value)
    return _plain(value)


def _tsv_cell(value: Any) -> str:
    """Return `value` as one TSV field: raw, unstyled, and never spanning a tab or a line."""
    return _plain(value).translate(_TSV_ESCAPES)


def _plain(value: Any) -> str:
    """Return the raw text of `value`: JSON for containers, true/false, "" for None."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list, tuple)):
        text = _compact_json(value)
    elif isinstance(value, (datetime, date)):
        text = value.isoformat()
    else:
        text = str(value)
    return text


def _compact_json(value: Any) -> str:
    """Return `value` as JSON without optional whitespace, keeping non-ASCII text readable."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    """Encode the few non-JSON types records commonly hold; anything else is a bug upstream."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
