"""`evq publish`: what it prints, and bad input: one line on stderr, exit 2, nothing stored; on
every backend, and what only a file path can get wrong on SQLite."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_nothing_stored, run_evq
from conftest import stored_events as stored

import evq
from evq.cli import cli


def stored_events(url: str | Path) -> int:
    """How many events the queue at `url` (or the queue file at a path) holds."""
    url = f"sqlite:///{url}" if isinstance(url, Path) else url
    return len(stored(url, deliveries=False))


def assert_rejected(result: object, url: str, fragment: str) -> None:
    returncode = getattr(result, "returncode", getattr(result, "exit_code", None))
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ")
    assert fragment in lines[0]
    assert result.stdout == ""  # type: ignore[attr-defined]
    assert_nothing_stored(url)


def test_publish_prints_the_event_id_and_stores_the_event(queue_url: str) -> None:
    result = run_evq("publish", "user.created", "--payload", '{"user_id": 42}')
    assert result.returncode == 0, result.stderr
    event_id = result.stdout.strip()
    assert len(event_id) == 26
    (event,) = stored(queue_url, deliveries=False)
    assert event.id == event_id
    assert event.name == "user.created"
    assert json.loads(event.payload) == {"user_id": 42}


def test_publish_json_prints_id_name_and_time(queue_url: str) -> None:
    result = CliRunner().invoke(cli, ["publish", "a.b", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"id", "name", "published_at", "stored"}
    assert isinstance(document["id"], str) and len(document["id"]) == 26
    assert document["stored"] is True
    assert document["name"] == "a.b"
    assert document["published_at"].endswith("+00:00")


def test_payload_from_a_file_and_from_stdin(queue_url: str, tmp_path: Path) -> None:
    payload_file = tmp_path / "payload.json"
    payload_file.write_text('{"from": "file"}')
    assert run_evq("publish", "a.b", "--payload", f"@{payload_file}").returncode == 0
    assert run_evq("publish", "a.b", "--payload", "-", input='{"from": "stdin"}').returncode == 0
    payloads = [json.loads(event.payload) for event in stored(queue_url, deliveries=False)]
    assert payloads == [{"from": "file"}, {"from": "stdin"}]


def test_delay_holds_delivery_back(queue_url: str) -> None:
    assert run_evq("publish", "a.b", "--delay", "1h").returncode == 0
    (event,) = stored(queue_url, deliveries=False)
    published, due = event.published_at, event.due_at
    assert due is not None
    assert due - published == pytest.approx(3600, abs=1)


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [
        (["a.b", "--payload", "{not json"], None, "not valid JSON"),
        (["a.b", "--payload", "[1, 2]"], None, "not a list"),
        (["a.b", "--payload", '"text"'], None, "not a string"),
        (["a.b", "--payload", "42"], None, "not a number"),
        (["a.b", "--payload", '{"x": NaN}'], None, "JSON cannot represent"),
        (["user..created", "--payload", "{}"], None, "invalid event name"),
        (["user created"], None, "invalid event name"),
        (["a.b", "--payload", "@/nonexistent/payload.json"], None, "no such file"),
        (["a.b", "--payload", "@/"], None, "cannot read it"),
        (["a.b", "--payload", "-"], "", "stdin is empty"),
        (["a.b", "--payload", "-"], "  \n", "stdin is empty"),
        (["a.b", "--payload", "-"], '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}", "too deeply"),
        (["a.b", "--payload", "-"], '{"x": ' + "9" * 5000 + "}", "cannot be read: Exceeds"),
    ],
)
def test_bad_input_is_rejected_with_one_line_and_exit_2(
    queue_url: str, args: list[str], stdin: str | None, fragment: str
) -> None:
    assert_rejected(run_evq("publish", *args, input=stdin), queue_url, fragment)


def test_bad_input_through_clirunner_too(queue_url: str) -> None:
    result = CliRunner().invoke(cli, ["publish", "a.b", "--payload", "[1]"])
    assert_rejected(result, queue_url, "not a list")


def test_a_payload_over_the_size_limit_is_rejected(queue_url: str) -> None:
    big = json.dumps({"blob": "x" * 200})
    result = run_evq("publish", "a.b", "--payload", big, EVQ_MAX_PAYLOAD="100")
    assert_rejected(result, queue_url, "the limit is 100")


def test_a_storage_path_in_a_missing_directory_is_rejected(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "evq.db"
    result = run_evq("publish", "a.b", "--url", str(missing))
    assert_rejected(result, f"sqlite:///{missing}", "does not exist")
    assert not missing.parent.exists()


def test_a_storage_path_that_cannot_be_written_is_rejected(tmp_path: Path) -> None:
    # /sys refuses new files even to root, where permission bits would not stop us.
    result = run_evq("publish", "a.b", "--url", "/sys/evq-test.db")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: cannot use '/sys/evq-test.db' as a queue")
    assert result.stdout == ""
    assert not Path("/sys/evq-test.db").exists()


def test_a_storage_url_with_an_unknown_scheme_is_rejected(tmp_path: Path) -> None:
    result = run_evq("publish", "a.b", "--url", "mysql://localhost/evq")
    assert result.returncode == 2
    assert "unsupported storage URL scheme 'mysql'" in result.stderr


def test_sqlite_urls_and_plain_paths_name_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    assert run_evq("publish", "a.b", "--url", f"sqlite:///{path}").returncode == 0
    assert run_evq("publish", "a.b", "--url", str(path)).returncode == 0
    assert stored_events(path) == 2


def test_a_bad_delay_is_a_usage_error(queue_url: str) -> None:
    result = run_evq("publish", "a.b", "--delay", "soon")
    assert result.returncode == 2
    assert "invalid duration 'soon'" in result.stderr
    assert_nothing_stored(queue_url)


def test_missing_name_is_a_usage_error(queue_url: str) -> None:
    result = run_evq("publish")
    assert result.returncode == 2
    assert "missing event NAME" in result.stderr


def test_version_and_help_mention_environment_variables() -> None:
    assert run_evq("--version").stdout.startswith("evq, version")
    help_text = run_evq("publish", "--help").stdout
    assert "EVQ_URL" in help_text
    assert "EVQ_PUBLISH_DELAY" in help_text
    worker_help = run_evq("worker", "--help").stdout
    for variable in ("EVQ_APP", "EVQ_WORKER_WORKERS", "EVQ_LEASE", "EVQ_URL"):
        assert variable in worker_help


@pytest.mark.skipif(not hasattr(gc, "freeze"), reason="only CPython's collector can freeze")
def test_the_evq_command_freezes_the_collector_and_main_inside_another_program_does_not() -> None:
    # `evq` owns its process: what it imported is frozen (cheaper collections, a faster exit).
    # `main` also runs inside other programs (`manage.py evq`): there it must leave theirs be.
    script = (
        "import gc, sys\n"
        "from evq.cli import entry_point, main\n"
        "def run(command, args):\n"
        "    try:\n        command(args)\n    except SystemExit:\n        pass\n"
        "run(lambda args: main(args), ['--version'])\n"
        "print(gc.get_freeze_count())\n"
        "sys.argv = ['evq', '--version']\n"
        "run(lambda args: entry_point(), None)\n"
        "print(gc.get_freeze_count() > 1000)\n"
    )
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    version = f"evq, version {evq.__version__}"
    assert result.stdout.splitlines() == [version, "0", version, "True"]  # main froze nothing


def test_the_publish_path_imports_nothing_it_does_not_need(queue_path: Path) -> None:
    script = (
        "import sys\n"
        "from evq.cli import main\n"
        "sys.argv = ['evq', 'publish', 'a.b']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('huey', 'rich', 'dataclasses', 'evq.worker', 'evq.subscriptions',"
        " 'evq.testing', 'evq.storage.memory', 'pytest',"
        " 'evq.metrics', 'evq.cli.log_format', 'prometheus_client', 'evq.storage.contract',"
        " 'evq.storage.sqlite.delivering', 'evq.storage.sqlite.inspecting')\n"
        "loaded = sorted(m for m in sys.modules if m in heavy or m.split('.')[0] in heavy)\n"
        "print(loaded, file=sys.stderr)\n"
    )
    import subprocess
    import sys

    from conftest import evq_env

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=evq_env()
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "[]"
    assert stored_events(queue_path) == 1
