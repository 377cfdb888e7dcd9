"""Specification of evq.cli.output: the --json, --jsonl, table and TSV output of every command."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import evq.cli.output
from evq.cli.output import Column, is_terminal, output_options, render, use_color

RECORDS: list[dict[str, Any]] = [
    {"id": 1, "name": "order.created", "payload": {"total": 12}, "done": True, "at": None},
    {"id": 2, "name": "order.paid", "payload": [1, "€"], "done": False, "at": "2024-05-01"},
]
COLUMNS = [
    Column("id", "ID", justify="right"),
    Column("name", "NAME"),
    Column("payload", "PAYLOAD"),
    Column("done", "DONE"),
    Column("at", "AT", human=lambda value: f"human:{value}"),
]
ANSI_ESCAPE = "\x1b["


class FakeTerminal(io.StringIO):
    """A StringIO that claims to be a terminal, to see what a person would see."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from a colour-capable terminal type with no colour overrides."""
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def make_command(records: Sequence[Mapping[str, Any]] = RECORDS) -> click.Command:
    """A tiny command the way every evq command uses these conventions."""

    @click.command()
    @click.option("--limit", type=int, default=None)
    @output_options
    def listing(limit: int | None, output_format: str | None) -> None:
        render(records[:limit], COLUMNS, output_format=output_format)

    return listing


def run(*args: str, records: Sequence[Mapping[str, Any]] = RECORDS) -> Any:
    return CliRunner().invoke(make_command(records), list(args), catch_exceptions=False)


def draw_table(records: Sequence[Mapping[str, Any]] = RECORDS) -> str:
    terminal = FakeTerminal()
    render(records, COLUMNS, output_format=None, stream=terminal)
    return terminal.getvalue()


# --json and --jsonl


def test_json_prints_one_parseable_document_with_every_key() -> None:
    result = run("--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == RECORDS
    assert result.stdout.endswith("]\n")


def test_json_is_indented_and_keeps_non_ascii_text_readable() -> None:
    stdout = run("--json").stdout
    assert '\n  {\n    "id": 1,' in stdout
    assert "€" in stdout


def test_json_prints_the_document_instead_of_the_records_when_given() -> None:
    stream = io.StringIO()
    document = {"count": 2, "events": RECORDS}
    render(RECORDS, COLUMNS, output_format="json", document=document, stream=stream)
    assert json.loads(stream.getvalue()) == document


def test_json_of_no_records_is_an_empty_list() -> None:
    assert json.loads(run("--json", records=[]).stdout) == []


def test_jsonl_prints_one_compact_object_per_record_per_line() -> None:
    result = run("--jsonl")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(RECORDS)
    assert [json.loads(line) for line in lines] == RECORDS
    assert lines[0].startswith('{"id":1,"name":"order.created"')


def test_jsonl_of_no_records_prints_nothing() -> None:
    assert run("--jsonl", records=[]).stdout == ""


def test_json_encodes_datetimes_as_iso_8601() -> None:
    from datetime import UTC, datetime

    stream = io.StringIO()
    at = datetime(2024, 5, 1, 12, tzinfo=UTC)
    render([{"at": at}], COLUMNS, output_format="jsonl", stream=stream)
    assert json.loads(stream.getvalue()) == {"at": "2024-05-01T12:00:00+00:00"}


def test_json_and_jsonl_together_is_a_usage_error() -> None:
    result = run("--json", "--jsonl")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "--json and --jsonl cannot be used together" in result.stderr


def test_the_flags_are_documented_in_help() -> None:
    help_text = run("--help").stdout
    assert "--json  " in help_text
    assert "Print one JSON document." in help_text
    assert "--jsonl" in help_text
    assert "Print one JSON object per line." in help_text


def test_the_commands_own_options_still_work_alongside() -> None:
    result = run("--limit", "1", "--jsonl")
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1]


def test_an_unknown_output_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="yaml"):
        render(RECORDS, COLUMNS, output_format="yaml", stream=io.StringIO())


# not a terminal: TSV


def test_piped_output_is_tab_separated_lines_without_a_header() -> None:
    result = run()
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        '1\torder.created\t{"total":12}\ttrue\t',
        '2\torder.paid\t[1,"€"]\tfalse\t2024-05-01',
    ]


def test_piped_output_shows_raw_values_not_human_ones() -> None:
    assert "human:" not in run().stdout


def test_piped_output_has_no_colour() -> None:
    assert ANSI_ESCAPE not in run().stdout


def test_piped_output_of_no_records_is_empty_and_silent() -> None:
    result = run(records=[])
    assert result.stdout == ""
    assert result.stderr == ""


def test_tabs_newlines_and_backslashes_inside_values_are_escaped() -> None:
    record = {"id": "a\tb", "name": "line one\nline two\r\n", "payload": "C:\\temp"}
    stream = io.StringIO()
    render([record], COLUMNS[:3], output_format=None, stream=stream)
    assert stream.getvalue() == "a\\tb\tline one\\nline two\\r\\n\tC:\\\\temp\n"


def test_missing_keys_are_empty_fields() -> None:
    stream = io.StringIO()
    render([{"id": 7}], COLUMNS, output_format=None, stream=stream)
    assert stream.getvalue() == "7\t\t\t\t\n"


# a terminal: a table


def test_a_terminal_gets_a_table_with_headers_and_every_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    lines = draw_table().splitlines()
    assert lines[0].split() == ["ID", "NAME", "PAYLOAD", "DONE", "AT"]
    assert set(lines[1]) == {"─"}
    assert lines[2].split()[:2] == ["1", "order.created"]
    assert lines[3].split()[:2] == ["2", "order.paid"]
    assert len(lines) == 4


def test_the_table_uses_the_columns_human_functions() -> None:
    table = draw_table()
    assert "human:2024-05-01" in table
    # None is an empty cell; `human` is not asked to make sense of it.
    assert "human:None" not in table


def test_the_table_right_justifies_columns_that_ask_for_it() -> None:
    records = [{"id": 1, "name": "a"}, {"id": 100, "name": "b"}]
    terminal = FakeTerminal()
    render(records, COLUMNS[:2], output_format=None, stream=terminal)
    rows = [line for line in terminal.getvalue().splitlines() if line.strip().endswith(("a", "b"))]
    assert rows[0].index("1 ") == rows[1].index("100 ") + 2


def test_the_table_is_coloured_on_a_colour_terminal() -> None:
    assert ANSI_ESCAPE in draw_table()


def test_no_color_turns_off_every_escape_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    table = draw_table()
    assert ANSI_ESCAPE not in table
    assert "order.created" in table


def test_an_empty_no_color_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "")
    assert ANSI_ESCAPE in draw_table()


def test_a_dumb_terminal_gets_no_escape_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    assert ANSI_ESCAPE not in draw_table()


def test_values_that_look_like_rich_markup_are_shown_literally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert "[bold]x[/bold]" in draw_table([{"id": 1, "name": "[bold]x[/bold]"}])


def test_an_empty_table_says_no_results_on_stderr_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert draw_table([]) == ""
    assert capsys.readouterr().err.strip() == "No results."


# is_terminal and use_color


def test_is_terminal_follows_isatty() -> None:
    assert is_terminal(FakeTerminal())
    assert not is_terminal(io.StringIO())


def test_a_closed_stream_is_not_a_terminal(tmp_path: Path) -> None:
    with (tmp_path / "out.txt").open("w") as stream:
        pass
    assert not is_terminal(stream)


def test_use_color_only_on_a_terminal() -> None:
    assert use_color(FakeTerminal())
    assert not use_color(io.StringIO())


@pytest.mark.parametrize(
    ("name", "value"), [("NO_COLOR", "1"), ("NO_COLOR", "no"), ("TERM", "dumb")]
)
def test_use_color_respects_the_environment(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert not use_color(FakeTerminal())


# import cost


def test_importing_output_does_not_import_rich() -> None:
    # Measured in a fresh interpreter, and only what the module adds beyond its package.
    code = (
        "import sys, evq.cli; before = set(sys.modules); import evq.cli.output; "
        "print(' '.join(sorted(m for m in set(sys.modules) - before if m.startswith('rich'))))"
    )
    root = Path(evq.cli.output.__file__).resolve().parents[2]
    paths = [str(root), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip() == ""
