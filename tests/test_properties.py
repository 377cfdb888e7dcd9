"""Properties of bad input, for any input hypothesis can think of: the command line never
prints a traceback, exits 0, 1 or 2, and says what went wrong in one `Error:` line, storing
nothing when the input is bad; the API stores an event that comes back exactly, or raises
`InvalidInput`, never anything else."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evq
import evq.cli.worker
import evq.config
from evq.cli import COMMANDS, cli

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def queue(queue_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test's queue, with an event and a dead letter in it, written without waiting for
    the disk (examples are many); the current directory is the test's own."""
    monkeypatch.setenv("EVQ_SYNC", "off")
    monkeypatch.chdir(queue_path.parent)
    evq.config.reset()
    evq.publish("a.b", payload={"n": 1}, key="first")
    with sqlite3.connect(queue_path) as conn:
        (seq,) = conn.execute("SELECT seq FROM evq_event").fetchone()
        conn.execute(
            "INSERT INTO evq_delivery (event_seq, receiver, state, attempt, created_at,"
            " finished_at, last_error) VALUES (?, 'm:f', 'dead', 1, 1.0, 2.0, 'E')",
            (seq,),
        )
    yield queue_path


def count_rows(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        events = conn.execute("SELECT count(*) FROM evq_event").fetchone()[0]
        deliveries = conn.execute("SELECT count(*) FROM evq_delivery").fetchone()[0]
    return int(events), int(deliveries)


# The command line


def _options(path: str) -> list[str]:
    context = click.Context(cli)
    command = cli.get_command(context, path.split()[0])
    assert command is not None
    if " " in path:
        assert isinstance(command, click.Group)
        command = command.commands[path.split()[1]]
    return sorted(
        name
        for param in command.params
        if isinstance(param, click.Option)
        for name in [*param.opts, *param.secondary_opts]
    )


# Options left out: --url would write queues anywhere, --watch never returns, --app could
# import any module (tested on its own below).
_NOT_FUZZED = {"--url", "--watch", "--app"}
COMMAND_PATHS = [
    # The worker and the dashboard run until stopped: their bad input has tests of its own
    # (tests/test_bad_input.py, tests/dashboard/test_http.py).
    *(name for name in COMMANDS if name not in ("dlq", "worker", "dashboard")),
    "dlq list",
    "dlq show",
    "dlq redrive",
    "dlq purge",
]
OPTIONS = {path: [o for o in _options(path) if o not in _NOT_FUZZED] for path in COMMAND_PATHS}

# Text as argv can hold it: anything but NUL, including the lone surrogates that stand for
# bytes that are not UTF-8.
_characters = st.one_of(
    st.characters(min_codepoint=1, max_codepoint=127),
    st.characters(min_codepoint=1, exclude_categories=["Cs"]),
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
)
_INTERESTING = [
    *("0", "-1", "1", "0.5", str(2**63), str(2**70), "1e308", "nan", "inf", "9" * 30),
    *("1000000000000s", "3651d", "36500d", "2h", "1h30m", "500ms", "now"),
    *("0001-01-01", "9999-12-31T23:59:59-01:00", "2024-05-01T12:00:00Z"),
    *("-", "{}", "[]", '{"a": 1}', '{"a": ' + "[" * 150 + "]" * 150 + "}", "{not json"),
    *("a.b", "**", "user.*", "a..b", "m:f", "@", "@/nonexistent", "@.", "", " ", "--", "-h"),
]
values = st.one_of(st.sampled_from(_INTERESTING), st.text(_characters, max_size=30))


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    path = draw(st.sampled_from(COMMAND_PATHS))
    tokens = st.one_of(st.sampled_from(OPTIONS[path] or ["--bogus"]), values)
    return [*path.split(), *draw(st.lists(tokens, max_size=6))]


environments = st.dictionaries(
    st.sampled_from(
        [
            *("EVQ_LEASE", "EVQ_RETENTION", "EVQ_MAX_PAYLOAD", "EVQ_SYNC", "EVQ_EVENTS_LIMIT"),
            *("EVQ_PUBLISH_DELAY", "EVQ_PUBLISH_KEY", "EVQ_PUBLISH_PAYLOAD", "EVQ_PRUNE_DRY_RUN"),
        ]
    ),
    values,
    max_size=2,
)


def check_outcome(result: Any, argv: list[str], before: tuple[int, int], path: Path) -> None:
    """What every run must satisfy, whatever its input."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{argv!r} raised") from result.exception
    assert "Traceback" not in result.stderr, (argv, result.stderr)
    assert result.exit_code in (0, 1, 2), (argv, result.exit_code, result.stderr)
    if result.exit_code == 0:
        return
    lines = result.stderr.splitlines()
    assert len(lines) == 1, (argv, result.stderr)
    if argv[:1] == ["status"] and result.exit_code == 1:
        assert lines[0].startswith(("unhealthy: ", "Error: ")), (argv, result.stderr)
    else:
        assert lines[0].startswith("Error: "), (argv, result.stderr)
    if result.exit_code == 2:
        assert count_rows(path) == before, argv


@FUZZ
@given(argv=command_lines(), env=environments)
def test_any_command_line_exits_0_1_or_2_with_at_most_one_error_line(
    queue: Path, argv: list[str], env: dict[str, str]
) -> None:
    evq.config.reset()
    before = count_rows(queue)
    result = CliRunner().invoke(cli, argv, env=env, prog_name="evq")
    check_outcome(result, argv, before, queue)


@FUZZ
@given(args=st.lists(values, max_size=4))
def test_any_argv_without_a_command_is_refused_in_one_line_or_helps(
    queue: Path, args: list[str]
) -> None:
    before = count_rows(queue)
    result = CliRunner().invoke(cli, args, prog_name="evq")
    if not args:
        assert result.exit_code == 2 and result.stderr.startswith("Usage: evq")
        return
    check_outcome(result, args, before, queue)


def _importable(name: str) -> bool:
    first = name.strip().split(".")[0]
    try:
        return first.isidentifier() and importlib.util.find_spec(first) is not None
    except (ImportError, ValueError):
        return False


app_names = st.one_of(
    st.sampled_from(["../../etc/passwd", "/etc/passwd", ".x", "x.", "a..b", "a-b", "tests.apps"]),
    st.text(_characters, max_size=20),
).filter(lambda name: not any(_importable(part) for part in name.split(",")))


@settings(FUZZ, max_examples=60)
@given(apps=st.lists(app_names, min_size=1, max_size=2), worker=st.booleans())
def test_any_app_name_is_imported_or_refused_in_one_line(
    queue: Path, apps: list[str], worker: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker would log to the CliRunner's stream: these runs never get that far.
    monkeypatch.setattr(evq.cli.worker, "_configure_logging", lambda *args: None)
    command = ["worker", "--burst", "--no-entry-points"] if worker else ["list-subscribers"]
    argv = [*command, *(arg for app in apps for arg in ("--app", app))]
    before = count_rows(queue)
    result = CliRunner().invoke(cli, argv, prog_name="evq")
    check_outcome(result, argv, before, queue)
    named = any(part.strip() for app in apps for part in app.split(","))
    # None of these names a module: refused, or, with no name at all, nothing to list.
    assert result.exit_code == (2 if named or worker else 0), result.stderr


@settings(FUZZ, max_examples=60)
@given(argv=st.lists(st.one_of(st.sampled_from(_options("worker")), values), max_size=6))
def test_any_worker_options_are_refused_in_one_line(
    queue: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no subscription a worker stops before it runs: only its options are tested here.
    monkeypatch.setattr(evq.cli.worker, "_configure_logging", lambda *args: None)
    argv = [
        "worker",
        *(a for a in argv if a not in ("--app", "--url", "--entry-points")),
        "--burst",
        "--no-entry-points",
    ]
    before = count_rows(queue)
    result = CliRunner().invoke(cli, argv, prog_name="evq")
    check_outcome(result, argv, before, queue)


# publish --jsonl


_valid_names = st.from_regex(r"[a-z]{1,5}(\.[a-z_-]{1,5}){0,2}", fullmatch=True)
_names = st.one_of(_valid_names, st.text(_characters, max_size=10), st.integers(), st.none())
_json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
_json_items = st.fixed_dictionaries(
    {"name": _names},
    optional={
        "payload": st.one_of(st.dictionaries(st.text(max_size=5), _json_values), _json_values),
        "key": st.one_of(st.text(max_size=10), st.integers(), st.none()),
        "delay": st.one_of(st.floats(), st.integers(), st.text(max_size=5)),
        "extra": _json_values,
    },
)
_lines = st.one_of(
    _json_items.map(lambda item: json.dumps(item, ensure_ascii=False)),
    st.text(_characters, max_size=40),
    st.sampled_from(["", " ", "{}", "[]", "null", '{"name": "a.b"}', "{" * 2000]),
)


@FUZZ
@given(lines=st.lists(_lines, max_size=6), delay=st.none() | st.sampled_from(["1s", "4000d"]))
def test_any_jsonl_input_is_published_whole_or_refused_whole(
    queue: Path, lines: list[str], delay: str | None
) -> None:
    text = "".join(line.replace("\n", " ") + "\n" for line in lines)
    argv = ["publish", "--jsonl", "-", *(["--delay", delay] if delay else [])]
    before = count_rows(queue)
    result = CliRunner().invoke(
        cli, argv, input=text.encode("utf-8", "surrogateescape"), prog_name="evq"
    )
    check_outcome(result, argv, before, queue)
    published = [line for line in lines if line.strip()]
    if result.exit_code == 0:
        assert len(result.stdout.split()) == len(published)
        assert count_rows(queue)[0] <= before[0] + len(published)  # Keys may repeat.
    else:
        assert result.exit_code == 2, result.stderr
        assert count_rows(queue) == before


# The API


_odd_values = st.recursive(
    st.one_of(
        _json_values,
        st.floats(),
        st.integers(min_value=-(10**5000), max_value=10**5000),
        st.text(_characters, max_size=5),
        st.binary(max_size=3),
        st.tuples(st.integers()),
        st.frozensets(st.integers(), max_size=2),
        st.datetimes(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.one_of(st.text(_characters, max_size=5), st.integers(), st.none()),
            children,
            max_size=3,
        ),
    ),
    max_leaves=8,
)


def _nested(depth: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for _level in range(depth - 1):
        payload = {"x": payload}
    return payload


# An event is drawn valid, then, most of the time, one of its fields is drawn from anything:
# a bad field among good ones is what publishing must catch.
_GOOD = {
    "name": _valid_names,
    "payload": st.dictionaries(st.text(max_size=5), _json_values, max_size=4),
    "key": st.none() | st.text(min_size=1, max_size=8),
    "delay": st.none() | st.floats(min_value=0, max_value=1e6) | st.integers(0, 10**6),
}
_ODD = {
    "name": _names,
    "payload": st.one_of(
        st.dictionaries(st.text(_characters, max_size=5), _odd_values, max_size=3),
        st.integers(min_value=1, max_value=1200).map(_nested),
        st.sampled_from([_nested(100), _nested(101), _nested(989), _nested(990), _nested(991)]),
        _odd_values,
    ),
    "key": st.one_of(
        st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1),
        st.text(_characters, max_size=600),
        st.integers(),
        st.binary(max_size=2),
    ),
    "delay": st.one_of(
        st.floats(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.integers(min_value=3650 * 86400 - 2, max_value=3650 * 86400 + 2),
        st.timedeltas(),
        st.text(max_size=3),
        st.booleans(),
    ),
}


@st.composite
def event_fields(draw: st.DrawFn) -> dict[str, Any]:
    fields = {field: draw(strategy) for field, strategy in _GOOD.items()}
    odd = draw(st.sampled_from([None, *_ODD]))
    if odd is not None:
        fields[odd] = draw(_ODD[odd])
    return fields


def _stored(path: Path, event_id: str) -> tuple[str, str, float, str | None]:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT name, payload, due_at - published_at, key FROM evq_event WHERE id = ?",
            (event_id,),
        ).fetchone()
    assert row is not None, event_id
    return row  # type: ignore[no-any-return]


def _seconds(delay: Any) -> float:
    if delay is None:
        return 0.0
    if isinstance(delay, dt.timedelta):
        return delay.total_seconds()
    return float(delay)


def _forget_events(path: Path) -> None:
    # Each example starts afresh: a key stored by an earlier one would return its event.
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM evq_delivery")
        conn.execute("DELETE FROM evq_event")


def _shown_by_the_cli(event_id: str) -> Any:
    """The payload of the event as `evq show --json` shows it, which must work."""
    result = CliRunner().invoke(cli, ["show", event_id, "--json"], prog_name="evq")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return json.loads(result.stdout)["event"]["data"]


def _check_stored(path: Path, event_id: str, fields: dict[str, Any]) -> None:
    stored_name, text, due_in, stored_key = _stored(path, event_id)
    payload = fields.get("payload", {})
    assert (stored_name, json.loads(text), stored_key) == (fields["name"], payload, fields["key"])
    assert math.isclose(due_in, _seconds(fields["delay"]), rel_tol=1e-9, abs_tol=1e-3)
    assert _shown_by_the_cli(event_id) == payload


@FUZZ
@given(fields=event_fields())
def test_publish_stores_an_event_that_comes_back_or_raises_invalid_input(
    queue: Path, fields: dict[str, Any]
) -> None:
    _forget_events(queue)
    try:
        event_id = evq.publish(
            fields["name"], payload=fields["payload"], key=fields["key"], delay=fields["delay"]
        )
    except evq.InvalidInput:
        assert count_rows(queue) == (0, 0)
        return
    _check_stored(queue, event_id, fields)


@FUZZ
@given(
    events=st.lists(
        st.one_of(
            event_fields(),
            event_fields(),
            st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), _json_values),
            _json_values,
        ),
        max_size=5,
    ),
    batch_size=st.sampled_from([1, 2, 1000]),
)
def test_publish_many_stores_every_event_or_none_and_names_the_bad_one(
    queue: Path, events: list[Any], batch_size: int
) -> None:
    _forget_events(queue)
    try:
        ids = evq.publish_many(events, batch_size=batch_size)
    except evq.InvalidInput as exc:
        assert str(exc).startswith("event "), exc
        assert count_rows(queue) == (0, 0)
        return
    assert len(ids) == len(events)
    first_by_key: dict[str, str] = {}
    for event_id, event in zip(ids, events, strict=True):
        fields = {"key": None, "delay": None, **event}
        key = fields["key"]
        if key is not None and key in first_by_key:
            assert event_id == first_by_key[key]  # Published once, its id returned again.
            continue
        if key is not None:
            first_by_key[key] = event_id
        _check_stored(queue, event_id, fields)
