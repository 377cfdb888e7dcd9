"""Bad input, from the command line and from Python: one `Error:` line on stderr, exit code 2,
nothing stored; from Python, `InvalidInput`. Never a traceback. On every backend (rows no evq
would store, written by hand, on SQLite)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import assert_nothing_stored, run_evq, without_warnings
from conftest import stored_events as stored

import evq
import evq.config
import evq.subscriptions
from evq.cli import cli


def stored_events(url: str) -> int:
    """How many events the queue at `url` holds."""
    return len(stored(url, deliveries=False))


class Existing(str):
    """The URL of a queue that holds one event already (`queue_with_an_event`)."""


def assert_refused(result: Any, url: str, fragment: str) -> None:
    """One `Error:` line holding `fragment` on stderr, exit code 2, nothing on stdout or in
    the queue (for an `Existing` queue: nothing more); for a real subprocess and a CliRunner
    result alike."""
    code = getattr(result, "returncode", getattr(result, "exit_code", None))
    assert code == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], result.stderr
    assert result.stdout == ""
    if isinstance(url, Existing):
        assert stored_events(url) == 1
    else:
        assert_nothing_stored(url)


def invoke(*args: str, **env: str) -> Any:
    evq.config.reset()  # Settings are read from the environment once per process,
    for handle in evq.publisher._queues.values():  # and a queue's when it is opened.
        handle.close()
    evq.publisher._queues.clear()
    return CliRunner().invoke(cli, list(args), env=env or None, prog_name="evq")


@pytest.fixture
def queue_with_an_event(queue_url: str) -> Existing:
    """A queue that exists, so that read commands get as far as reading their arguments; it
    holds one event, so that `assert_refused` can check that nothing more was stored."""
    evq.publish("a.b", payload={})
    return Existing(queue_url)


# 1. Text that is not UTF-8


@pytest.mark.parametrize(
    "args",
    [
        ["show", "\udcff"],
        ["publish", "a.b", "--key", "\udcff"],
        ["publish", "a.b", "--payload", '{"x": "\udcff"}'],
        ["dlq", "list", "--receiver", "\udcff"],
        ["events", "--name", "a\udcff"],
        ["replay", "--receiver", "m:\udcff"],
        ["publish", "a.b", "--url", "q\udcff.db"],
        ["\udcff"],
        ["publish", "--p\udcffayload", "{}"],
    ],
)
def test_arguments_that_are_not_utf8_are_refused_by_every_command(
    queue_with_an_event: Existing, args: list[str]
) -> None:
    # Python hands undecodable argv bytes over as lone surrogates, as CliRunner is given here.
    assert_refused(invoke(*args), queue_with_an_event, "is not valid UTF-8 text")


@pytest.mark.parametrize(
    "args",
    [
        ["show", b"\xff"],
        ["publish", "a.b", "--key", b"\xff"],
        ["dlq", "list", "--receiver", b"\xff"],
    ],
)
def test_non_utf8_argv_bytes_from_a_shell_are_refused(
    queue_with_an_event: Existing, args: list[str | bytes]
) -> None:
    import os
    import subprocess
    import sys

    from conftest import ROOT, evq_env

    result = subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"evq", *map(os.fsencode, args)],
        capture_output=True,
        env=evq_env(),
        cwd=ROOT,
        timeout=60,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr == "Error: the argument '\\xff' is not valid UTF-8 text\n"
    assert result.stdout == b""
    assert stored_events(queue_with_an_event) == 1


def test_an_evq_variable_that_is_not_utf8_is_refused(queue_url: str) -> None:
    result = invoke("publish", "a.b", EVQ_PUBLISH_KEY="k\udcff")
    assert_refused(result, queue_url, "the environment variable 'EVQ_PUBLISH_KEY'")


@pytest.mark.parametrize("key", ["\udcff", "a\ud800b"])
def test_the_api_refuses_a_key_that_is_not_valid_unicode(queue_url: str, key: str) -> None:
    with pytest.raises(evq.InvalidInput, match="idempotency key must be valid Unicode"):
        evq.publish("a.b", payload={}, key=key)
    with pytest.raises(evq.InvalidInput, match="event 2: an idempotency key"):
        evq.publish_many([{"name": "a.b", "payload": {}}, {"name": "a.b", "key": key}])
    assert stored_events(queue_url) == 0


def test_the_api_refuses_names_and_payload_text_that_are_not_valid_unicode(
    queue_url: str,
) -> None:
    with pytest.raises(evq.InvalidInput, match="invalid event name"):
        evq.publish("a.\udcff", payload={})
    with pytest.raises(evq.InvalidInput, match="not valid Unicode"):
        evq.publish("a.b", payload={"x": "\udcff"})
    with pytest.raises(evq.InvalidInput, match="not valid Unicode"):
        evq.publish("a.b", payload={"\udcff": 1})
    assert stored_events(queue_url) == 0


def test_a_receiver_whose_name_is_not_valid_unicode_is_refused() -> None:
    def receiver(event: evq.Event, /) -> None:
        pass

    receiver.__qualname__ = "receiver\udcff"
    with pytest.raises(evq.InvalidInput, match="cannot be stored as text"):
        evq.subscribe("a.b", receiver=receiver)


def test_click_usage_errors_are_one_line_too(queue_url: str) -> None:
    assert_refused(invoke("--bogus"), queue_url, "No such option '--bogus' (see 'evq --help')")
    assert_refused(invoke("publish", "a.b", "--bogus"), queue_url, "see 'evq publish --help'")
    assert_refused(invoke("events", "--limit", "x"), queue_url, "is not a valid integer")


# 2. Integers out of range


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["events", "--limit", str(2**70)], {}),
        (["events"], {"EVQ_EVENTS_LIMIT": str(2**70)}),
        (["dlq", "list", "--limit", str(2**70)], {}),
        (["dlq", "list", "--limit", "1000001"], {}),
        (["worker", "--workers", str(2**70)], {}),
        (["worker", "--prefetch", str(2**63)], {}),
    ],
)
def test_integer_options_out_of_range_are_refused(
    queue_with_an_event: Existing, args: list[str], env: dict[str, str]
) -> None:
    assert_refused(invoke(*args, **env), queue_with_an_event, "is not in the range 1<=x<=")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["dlq", "show", str(2**63)], f"no dead letter with id {2**63}"),
        (["dlq", "show", "--", "-1"], "no dead letter with id -1"),
        (["dlq", "redrive", str(2**70)], f"not dead letters: {2**70}; nothing was changed"),
        (["dlq", "purge", str(2**70), "abc"], "not dead letters: "),
    ],
)
def test_dead_letter_ids_no_queue_could_hold_are_simply_not_found(
    queue_with_an_event: Existing, args: list[str], fragment: str
) -> None:
    assert_refused(run_evq(*args), queue_with_an_event, fragment)


def test_a_limit_of_2_to_the_70_is_refused_by_the_real_command(
    queue_with_an_event: Existing,
) -> None:
    result = run_evq("events", "--limit", str(2**70))
    assert_refused(result, queue_with_an_event, "is not in the range 1<=x<=1000000")


# 3. Files that are not UTF-8


def test_a_jsonl_file_that_is_not_utf8_is_refused(queue_url: str, tmp_path: Path) -> None:
    lines = tmp_path / "events.jsonl"
    lines.write_bytes(b'{"name": "a.b"}\n{"name": "a.b", "payload": {"x": "\xff"}}\n')
    result = run_evq("publish", "--jsonl", str(lines))
    assert_refused(result, queue_url, "not valid UTF-8 text (invalid start byte: b'\\xff')")


@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
def test_stdin_that_is_not_utf8_is_refused_whatever_the_locale(queue_url: str, locale: str) -> None:
    # Under a UTF-8 locale Python decodes stdin strictly; under C, with surrogateescape.
    import subprocess
    import sys

    from conftest import ROOT, evq_env

    for args, fragment in [
        (["a.b", "--payload", "-"], "stdin is not valid UTF-8 text"),
        (["--jsonl", "-"], "not valid Unicode"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "evq", "publish", *args],
            input=b'{"name": "a.b", "payload": {"x": "\xff"}}\n',
            capture_output=True,
            env=evq_env(LC_ALL=locale, PYTHONUTF8="0"),
            cwd=ROOT,
            timeout=60,
        )
        stderr = result.stderr.decode()
        assert result.returncode == 2, stderr
        (line,) = stderr.splitlines()
        assert line.startswith("Error: ")
        if locale == "C" or args[0] != "--jsonl":
            assert fragment in line, stderr
        assert stored_events(queue_url) == 0


def test_a_payload_file_that_is_not_utf8_is_refused(queue_url: str, tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_bytes(b'{"x": "\xff"}')
    result = invoke("publish", "a.b", "--payload", f"@{payload}")
    assert_refused(result, queue_url, "payload.json is not valid UTF-8 text")


# 4. Unbounded reads


def run_with_memory_limit(*args: str, limit: int = 512 * 2**20) -> Any:
    """Run `evq ARGS` with at most `limit` bytes of address space: a command that reads
    without bound fails with MemoryError instead of exhausting the machine."""
    import resource
    import subprocess
    import sys

    from conftest import ROOT, evq_env

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "evq", *args],
        capture_output=True,
        text=True,
        env=evq_env(),
        cwd=ROOT,
        timeout=60,
        preexec_fn=limit_memory,
    )


def test_a_payload_from_dev_zero_is_refused_after_reading_the_limit(queue_url: str) -> None:
    result = run_with_memory_limit("publish", "a.b", "--payload", "@/dev/zero")
    assert_refused(result, queue_url, "holds more than 1,048,576 bytes; the limit is 1,048,576")


def test_a_payload_on_stdin_over_the_limit_is_refused(queue_url: str) -> None:
    result = invoke("publish", "a.b", "--payload", "-", EVQ_MAX_PAYLOAD="100")
    assert result.exit_code == 2  # Empty stdin; now one over the limit:
    big = '{"x": "' + "y" * 100 + '"}'
    result = CliRunner().invoke(
        cli, ["publish", "a.b", "--payload", "-"], input=big, env={"EVQ_MAX_PAYLOAD": "100"}
    )
    assert_refused(result, queue_url, "stdin holds more than 100 bytes")


def test_a_payload_of_exactly_the_limit_is_read_whole(queue_url: str, tmp_path: Path) -> None:
    text = '{"x":"' + "y" * 92 + '"}'
    assert len(text) == 100
    payload = tmp_path / "payload.json"
    payload.write_text(text)
    result = invoke("publish", "a.b", "--payload", f"@{payload}", EVQ_MAX_PAYLOAD="100")
    assert result.exit_code == 0, result.stderr
    assert stored_events(queue_url) == 1


def test_a_jsonl_line_from_dev_zero_is_refused_after_reading_the_limit(queue_url: str) -> None:
    result = run_with_memory_limit("publish", "--jsonl", "/dev/zero")
    assert_refused(result, queue_url, "line 1: longer than")


def test_a_bad_event_before_a_line_too_long_is_the_problem_reported(
    queue_url: str, tmp_path: Path
) -> None:
    # The first problem is the one named, though the long line is found while reading (each
    # chunk read is checked before the next; a line longer than the limit fills a chunk).
    lines = [
        '{"name": "a.b", "payload": {}}',
        '{"name": "a.b", "payload": {}, "colour": "red"}',
        '{"name": "a.b", "payload": {"x": "' + "y" * 70_000 + '"}}',
    ]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = invoke("publish", "--jsonl", str(source), EVQ_MAX_PAYLOAD="100")
    assert_refused(result, queue_url, "line 2: unknown field(s): colour")
    source.write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")
    result = invoke("publish", "--jsonl", str(source), EVQ_MAX_PAYLOAD="100")
    assert_refused(result, queue_url, "line 2: longer than")


# 5. Times out of range


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [
        (["publish", "far.x", "--delay", "9" * 29], None, "is out of range: use from 0 s to 3650"),
        (["publish", "far.x", "--delay", "3651d"], None, "is out of range"),
        (["publish", "--jsonl", "-"], '{"name": "far.x", "delay": 1e308}\n', "line 1: delay"),
        (["publish", "--jsonl", "-", "--delay", "4000d"], '{"name": "far.x"}\n', "--delay"),
        (["prune", "--older-than", "1000000000000s"], None, "is out of range"),
        (["dlq", "purge", "--older-than", "36501d"], None, "is out of range"),
        (["events", "--since", "1000000000000s"], None, "further back than datetime"),
        (["events", "--until", "0001-01-01T00:00:00+01:00"], None, "outside the range"),
        (["replay", "--since", "9" * 30], None, "invalid time"),
        (["status", "--check", "--max-age", "36501d"], None, "is out of range"),
    ],
)
def test_times_out_of_range_are_refused(
    queue_with_an_event: Existing, args: list[str], stdin: str | None, fragment: str
) -> None:
    result = CliRunner().invoke(cli, args, input=stdin, prog_name="evq")
    assert_refused(result, queue_with_an_event, fragment)


def test_a_delay_of_ten_years_is_the_most_accepted(queue_url: str) -> None:
    assert run_evq("publish", "far.x", "--delay", "3650d").returncode == 0
    for command in (["events"], ["events", "--json"], ["status"]):
        result = run_evq(*command)
        assert result.returncode == 0, result.stderr
        assert without_warnings(result.stderr) == ""


@pytest.mark.parametrize("delay", [10**20, 1e308, 3650 * 86400 + 1, float("nan"), -1])
def test_the_api_refuses_delays_over_ten_years(queue_url: str, delay: float) -> None:
    with pytest.raises(evq.InvalidInput, match="delay must be"):
        evq.publish("far.x", payload={}, delay=delay)
    with pytest.raises(evq.InvalidInput, match="event 1: delay must be"):
        evq.publish_many([{"name": "far.x", "delay": delay}])
    assert stored_events(queue_url) == 0


def test_a_prune_of_a_hundred_years_still_works(queue_url: str) -> None:
    evq.publish("a.b", payload={})
    result = run_evq("prune", "--older-than", "36500d", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Would delete 0 finished events published before 19")


# 9. Nonsensical leases, timeouts, intervals and settings


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["worker", "--burst"], {"EVQ_LEASE": "0"}, "'0' is out of range: use from 1 s to 1 day"),
        (["worker", "--burst", "--lease", "500ms"], {}, "is out of range: use from 1 s"),
        (["worker", "--burst", "--lease", "2d"], {}, "is out of range"),
        (["worker", "--burst", "--shutdown-timeout", "2d"], {}, "is out of range"),
        (["worker", "--burst"], {"EVQ_WORKER_SHUTDOWN_TIMEOUT": "soon"}, "invalid duration"),
        (["status", "--watch", "--interval", "0"], {}, "use from 100 ms to 1 day"),
        (["status", "--watch", "--interval", "9" * 30], {}, "is out of range"),
        (["status", "--check", "--max-age", "-1s"], {}, "cannot be negative"),
        (["publish", "a.b"], {"EVQ_RETENTION": "36501d"}, "EVQ_RETENTION must be from 0 s"),
        (["publish", "a.b"], {"EVQ_MAX_PAYLOAD": "1GiB"}, "EVQ_MAX_PAYLOAD must be from 1 byte"),
        (["publish", "a.b"], {"EVQ_MAX_PAYLOAD": "0"}, "invalid size"),
        (["prune"], {"EVQ_RETENTION": "forever"}, "invalid duration 'forever'"),
    ],
)
def test_nonsensical_durations_and_settings_are_refused(
    queue_with_an_event: Existing, args: list[str], env: dict[str, str], fragment: str
) -> None:
    assert_refused(invoke(*args, **env), queue_with_an_event, fragment)


def test_a_sync_mode_sqlite_does_not_know_is_refused(queue_path: Path) -> None:
    # EVQ_SYNC is the SQLite backend's: the servers keep their own durability settings.
    result = invoke("publish", "a.b", EVQ_SYNC="sometimes")
    assert_refused(result, f"sqlite:///{queue_path}", "invalid sync mode")


def test_a_worker_refuses_a_zero_lease_from_the_environment(queue_url: str) -> None:
    result = run_evq("worker", "--burst", "--app", "tests.apps.recorder", EVQ_LEASE="0")
    assert_refused(result, queue_url, "(env var: 'EVQ_LEASE'): '0' is out of range")


@pytest.mark.parametrize(
    "settings",
    [
        {"retention_seconds": -1},
        {"retention_seconds": float("inf")},
        {"max_payload_bytes": 0},
        {"max_payload_bytes": 2**40},
        {"max_payload_bytes": "1MiB"},
    ],
)
def test_configure_refuses_values_out_of_range(settings: dict[str, Any]) -> None:
    before = evq.config.current()
    with pytest.raises(evq.InvalidInput, match="must be from"):
        evq.configure(**settings)
    assert evq.config.current() == before


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"retries": 10**30}, "retries must be an int from 0 to 10,000"),
        ({"retries": 1.5}, "retries must be an int"),
        ({"retries": "3"}, "retries must be an int"),
        ({"timeout": float("nan")}, "timeout must be at most"),
        ({"timeout": float("inf")}, "timeout must be at most"),
        ({"timeout": "10"}, "timeout must be a number of seconds"),
        ({"retry_delay": 1e300}, "retry_delay must be at most"),
        ({"max_retry_delay": float("nan")}, "max_retry_delay must be at most"),
        ({"timeout": 0}, "timeout must be positive"),
    ],
)
def test_subscribe_refuses_nonsensical_delivery_options(
    options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(evq.InvalidInput, match=fragment):
        evq.subscribe("a.b", receiver=_receiver, **options)
    assert evq.subscriptions.subscriptions() == []


def _receiver(event: evq.Event, /) -> None:
    pass


# 6. Nesting


def nested(depth: int) -> dict[str, Any]:
    """A payload `depth` objects deep, itself counting as one."""
    payload: dict[str, Any] = {}
    for _ in range(depth - 1):
        payload = {"x": payload}
    return payload


def nested_text(depth: int) -> str:
    return '{"x":' * (depth - 1) + "{}" + "}" * (depth - 1)


def test_a_payload_nested_100_deep_is_stored_and_comes_back(queue_url: str) -> None:
    import json

    evq.publish("a.b", payload=nested(100))
    evq.publish_many([{"name": "a.b", "payload": {"list": [[[[]]]], "deep": nested(99)}}])
    payloads = [json.loads(e.payload) for e in stored(queue_url, deliveries=False)]
    assert payloads == [nested(100), {"list": [[[[]]]], "deep": nested(99)}]


@pytest.mark.parametrize("depth", [101, 500, 989, 990, 991, 5000])
def test_the_api_refuses_payloads_nested_deeper_than_100(queue_url: str, depth: int) -> None:
    with pytest.raises(evq.InvalidInput, match=r"nested|deep"):
        evq.publish("a.b", payload=nested(depth))
    with pytest.raises(evq.InvalidInput, match="event 2: payload"):
        evq.publish_many([{"name": "a.b"}, {"name": "a.b", "payload": nested(depth)}])
    assert stored_events(queue_url) == 0


def test_nesting_in_lists_counts_too(queue_url: str) -> None:
    with pytest.raises(evq.InvalidInput, match="more than 100 deep"):
        evq.publish("a.b", payload={"x": [[{"y": nested(98)}]]})
    evq.publish("a.b", payload={"x": [{"y": nested(97)}]})
    assert stored_events(queue_url) == 1


def test_brackets_inside_strings_do_not_count_as_nesting(queue_url: str) -> None:
    evq.publish("a.b", payload={"x": "[{" * 1000, "y": '"\\[' * 300})
    assert stored_events(queue_url) == 1


@pytest.mark.parametrize("depth", [101, 990, 100_000])
def test_the_cli_refuses_payloads_nested_deeper_than_100(queue_url: str, depth: int) -> None:
    text = nested_text(depth)
    result = invoke("publish", "a.b", "--payload", text)
    assert_refused(result, queue_url, "deep")
    line = '{"name": "a.b", "payload": ' + text + "}\n"
    result = CliRunner().invoke(cli, ["publish", "--jsonl", "-"], input=line, prog_name="evq")
    assert_refused(result, queue_url, "line 1: ")


READ_COMMANDS = [
    ["events"],
    ["events", "--json"],
    ["events", "--jsonl"],
    ["dlq", "list"],
    ["dlq", "list", "--json"],
]


@pytest.fixture
def queue_with_odd_rows(queue_path: Path) -> dict[str, str]:  # SQLite: rows written by hand
    """A queue holding, besides a good event, rows no evq would store today: payloads nested
    too deeply for Python to decode or print, invalid JSON, bytes, a time no date holds; each
    with a dead letter. Returns the id of each by kind."""
    evq.publish("good.one", payload={"a": 1})
    rows = {
        "nested 990": nested_text(990),
        "nested 500": nested_text(500),
        "nested 100000": nested_text(100_000),
        "truncated": '{"x": ',
        "list": "[1, 2]",
        "bytes": b"\xff\xfe{",
        "far future": "{}",
    }
    ids = {}
    with sqlite3.connect(queue_path) as conn:
        for number, (kind, payload) in enumerate(rows.items()):
            event_id = f"01ODD{number:021d}"
            due = 1e29 if kind == "far future" else 1.0
            cursor = conn.execute(
                "INSERT INTO evq_event (id, name, payload, published_at, due_at, dispatched_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, "odd.row", payload, 1.0, due, 2.0 if due == 1.0 else None),
            )
            if due == 1.0:
                conn.execute(
                    "INSERT INTO evq_delivery (event_seq, receiver, state, attempt, created_at,"
                    " started_at, finished_at, last_error, traceback)"
                    " VALUES (?, 'm:f', 'dead', 1, 2.0, 2.0, 3.0, 'E', 'Traceback...')",
                    (cursor.lastrowid,),
                )
            ids[kind] = event_id
    return ids


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_list_commands_survive_whatever_is_stored(
    queue_with_odd_rows: dict[str, str], args: list[str]
) -> None:
    result = run_evq(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    if "--json" in args:
        import json

        json.loads(result.stdout)


def test_show_and_dlq_show_survive_whatever_is_stored(queue_with_odd_rows: dict[str, str]) -> None:
    import json

    for kind, event_id in queue_with_odd_rows.items():
        for args in (["show", event_id], ["show", event_id, "--json"]):
            result = invoke(*args)
            assert result.exit_code == 0, (kind, result.stderr, result.exception)
            assert result.stderr == ""
        document = json.loads(invoke("show", event_id, "--json").stdout)
        data = document["event"]["data"]
        if kind.startswith("nested") or kind in ("truncated", "list", "bytes"):
            assert isinstance(data, str), kind  # Shown as it is stored.
        else:
            assert data == {}
    dead = json.loads(invoke("dlq", "list", "--json").stdout)
    assert len(dead) == 6
    for letter in dead:
        for args in (
            ["dlq", "show", str(letter["id"])],
            ["dlq", "show", str(letter["id"]), "--json"],
        ):
            result = invoke(*args)
            assert result.exit_code == 0, (letter, result.stderr, result.exception)
            assert result.stderr == ""


def test_show_on_a_terminal_survives_whatever_is_stored(
    queue_with_odd_rows: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import evq.cli.events
    import evq.cli.output

    monkeypatch.setattr(evq.cli.output, "is_terminal", lambda stream: True)
    monkeypatch.setattr(evq.cli.events, "is_terminal", lambda stream: True)
    for args in (["events"], *(["show", event_id] for event_id in queue_with_odd_rows.values())):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.stderr, result.exception)
    assert invoke("dlq", "list").exit_code == 0


def test_a_worker_dead_letters_a_stored_payload_too_deep_to_decode() -> None:
    from evq.errors import InvalidPayload
    from evq.payload import decode_payload

    with pytest.raises(InvalidPayload, match="nested too deeply to decode"):
        decode_payload(nested_text(100_000))


# 7. Events given to publish_many


@pytest.mark.parametrize(
    ("events", "fragment"),
    [
        ([{1: {}}], "event 1: unknown field(s): 1"),
        ([{"name": "a.b"}, {"name": "a.b", None: 1}], "event 2: unknown field(s): None"),
        ([{(1, 2): 1, "x": 2}], "event 1: unknown field(s): (1, 2), x"),
        ([{"name": "a.b"}, "a.b"], "event 2: expected an object"),
        ([None], "event 1: expected an object"),
        ([{"name": 5}], "event 1: event name must be a string"),
        ([{"name": "a.b", "key": b"k"}], "event 1: an idempotency key must be"),
        ([{"name": "a.b", "payload": []}], "event 1: payload must be a JSON object"),
        ([{"name": "a.b", "payload": {1: 2}}], "event 1: payload has the key 1"),
        ([{"name": "a.b", "delay": "5"}], "event 1: delay must be a number of seconds"),
        ([{"name": "a.b", "delay": 10**5000}], "got a number too large to show"),
    ],
)
def test_publish_many_names_the_bad_event(queue_url: str, events: list[Any], fragment: str) -> None:
    with pytest.raises(evq.InvalidInput) as caught:
        evq.publish_many(events)
    assert fragment in str(caught.value)
    assert stored_events(queue_url) == 0


@pytest.mark.parametrize("events", [None, 5, {"name": "a.b"}, "a.b"])
def test_publish_many_refuses_what_is_not_a_list_of_events(queue_url: str, events: Any) -> None:
    with pytest.raises(evq.InvalidInput, match="events must be a list"):
        evq.publish_many(events)


@pytest.mark.parametrize("batch_size", ["x", 1.5, True, None, 0])
def test_publish_many_refuses_a_batch_size_that_is_not_a_positive_int(
    queue_url: str, batch_size: Any
) -> None:
    with pytest.raises(evq.InvalidInput, match="batch_size must be"):
        evq.publish_many([{"name": "a.b"}], batch_size=batch_size)
    assert stored_events(queue_url) == 0


# 8. --app names that are not modules


@pytest.mark.parametrize("app", ["../../etc/passwd", "/etc/passwd", ".relative", "a..b", "a b"])
@pytest.mark.parametrize("command", [["worker", "--burst"], ["list-subscribers"]])
def test_an_app_that_is_not_a_module_name_is_refused(
    queue_url: str, command: list[str], app: str
) -> None:
    result = run_evq(*command, "--app", app)
    assert_refused(result, queue_url, f"cannot import --app module {app!r}: not a module name")


def test_an_app_from_evq_app_that_is_not_a_module_name_is_refused(queue_url: str) -> None:
    result = invoke("list-subscribers", EVQ_APP="tests.apps.recorder,../x")
    assert_refused(result, queue_url, "'../x': not a module name")


def test_an_app_whose_import_of_another_module_fails_is_not_called_unknown(
    queue_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `shop_subscriptions` exists but imports the missing `shop`: its traceback is shown.
    (tmp_path / "shop_subscriptions.py").write_text("import shop\n")
    monkeypatch.chdir(tmp_path)
    result = invoke("list-subscribers", "--app", "shop_subscriptions")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert "ModuleNotFoundError(\"No module named 'shop'\")" in result.stderr
