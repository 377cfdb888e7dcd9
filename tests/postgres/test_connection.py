"""Reaching the server: URLs, one-line errors with documented exit codes, passwords never
shown, tables created only by `evq migrate` (or a worker, or a publisher's own connection),
and an older evq refusing a newer schema."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import run_evq
from postgres_server import server_url, with_schema

from evq.errors import QueueNotFound, StorageError
from evq.storage import open_queue
from evq.storage.postgres import PostgresQueue
from evq.storage.postgres.schema import SCHEMA_VERSION
from postgres.conftest import Schema

PASSWORD = "s3cret-Pa55word"
CLOSED_PORT_URL = f"postgresql://evq:{PASSWORD}@127.0.0.1:1/shop"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_both_schemes_open_the_postgresql_backend_and_show_no_password(scheme: str) -> None:
    queue = open_queue(f"{scheme}://app:{PASSWORD}@db.internal:6543/shop")
    assert isinstance(queue, PostgresQueue)
    assert queue.location == "db.internal:6543/shop"
    assert queue.source == "evq://db.internal:6543/shop"
    assert PASSWORD not in queue.location + queue.source


def test_libpq_variables_fill_in_what_the_url_leaves_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "db.example")
    monkeypatch.setenv("PGPORT", "7777")
    monkeypatch.setenv("PGDATABASE", "orders")
    assert open_queue("postgresql://").location == "db.example:7777/orders"


def test_a_server_that_is_down_fails_publish_in_one_line_exit_1_without_the_password() -> None:
    started = time.monotonic()
    result = run_evq("publish", "order.paid", "--payload", "{}", EVQ_URL=CLOSED_PORT_URL)

    assert time.monotonic() - started < 15  # connect_timeout bounds it; a refusal is instant
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot connect to PostgreSQL at 127.0.0.1:1/shop")
    assert len(result.stderr.splitlines()) == 1
    assert PASSWORD not in result.stderr + result.stdout


def test_a_server_that_never_answers_fails_within_the_connect_timeout() -> None:
    # A listening socket that never speaks: libpq waits for the server's first answer.
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = run_evq(
            "status", EVQ_URL=f"postgresql://evq:{PASSWORD}@127.0.0.1:{port}/shop", timeout=60
        )
    assert result.returncode == 1
    assert 5 < time.monotonic() - started < 30
    assert len(result.stderr.splitlines()) == 1
    assert PASSWORD not in result.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://127.0.0.1/db?port=abc", "invalid PostgreSQL URL"),
        ("postgresql://postgres@127.0.0.1/db?bogus=1", "invalid PostgreSQL URL"),
        (f"postgresql://u:{PASSWORD}@no-such-host.invalid/db", "unknown host"),
    ],
)
def test_a_url_that_cannot_name_a_server_is_bad_input(url: str, message: str) -> None:
    result = run_evq("status", EVQ_URL=url)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert PASSWORD not in result.stderr


def test_a_missing_database_is_bad_input_and_the_password_is_never_shown() -> None:
    server = server_url()
    base = server.rsplit("/", 1)[0].replace("://", f"://postgres:{PASSWORD}@", 1)
    base = base.replace(f"{PASSWORD}@postgres@", f"{PASSWORD}@")
    result = run_evq("status", EVQ_URL=f"{base}/evq_no_such_database")
    assert result.returncode == 2, result.stderr
    assert "database 'evq_no_such_database' does not exist" in result.stderr
    assert PASSWORD not in result.stderr


def test_read_only_commands_on_a_schema_without_tables_exit_2_and_create_nothing(
    empty_schema: Schema,
) -> None:
    for command in (
        ["status"],
        ["events"],
        ["dlq", "list"],
        ["show", "01M8FQ0RC62RJ4PW5TG8BB737D"],
    ):
        result = run_evq(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr == (
            f"Error: no evq tables in {open_queue(empty_schema.url).location}"
            " (run `evq migrate`, or start a worker, to create them)\n"
        )
    assert empty_schema.rows(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (empty_schema.name,)
    ) == [(0,)]
    with pytest.raises(QueueNotFound):
        open_queue(empty_schema.url, create=False).status()


def test_migrate_creates_the_tables_once_and_again_changes_nothing(empty_schema: Schema) -> None:
    first = run_evq("migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Queue ready: ")
    tables = empty_schema.rows(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (empty_schema.name,)
    )
    assert [name for (name,) in tables] == [
        "evq_attempt",
        "evq_counter",
        "evq_delivery",
        "evq_event",
        "evq_stat",
        "evq_version",
        "evq_worker",
    ]
    assert run_evq("publish", "order.paid", "--payload", "{}").returncode == 0
    again = run_evq("migrate")
    assert again.returncode == 0, again.stderr
    assert empty_schema.rows("SELECT version FROM evq_version") == [(SCHEMA_VERSION,)]
    assert empty_schema.rows("SELECT count(*) FROM evq_event") == [(1,)]


def test_migrations_started_at_once_wait_for_each_other(empty_schema: Schema) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "evq", "migrate"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    results = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0] * 6, results
    # And threads of one process, each with a handle of its own.
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: open_queue(empty_schema.url).check(), range(6)))
    assert empty_schema.rows("SELECT version FROM evq_version") == [(SCHEMA_VERSION,)]


def test_an_evq_older_than_the_stored_schema_refuses_in_one_line(pg: Schema) -> None:
    pg.rows("UPDATE evq_version SET version = %s", (SCHEMA_VERSION + 1,))

    for command in (["status"], ["publish", "a.b"], ["migrate"]):
        result = run_evq(*command)
        assert result.returncode == 1, (command, result.stderr)
        assert "written by a newer evq" in result.stderr
        assert len(result.stderr.splitlines()) == 1
    with pytest.raises(StorageError, match="newer evq"):
        open_queue(pg.url).status()
    assert pg.rows("SELECT count(*) FROM evq_event") == [(0,)]


def test_the_search_path_puts_the_tables_in_another_schema(pg: Schema) -> None:
    elsewhere = with_schema(pg.server, "evq_no_such_schema_here")
    result = run_evq("migrate", EVQ_URL=elsewhere)
    assert result.returncode == 2
    assert "search path names no schema that exists" in result.stderr
    assert pg.rows("SELECT count(*) FROM evq_event") == [(0,)]


def test_publish_with_a_sqlite_url_does_not_import_psycopg(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "evq", "publish", "a.b", "--payload", "{}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "EVQ_URL": str(tmp_path / "evq.db")},
    )
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "evq.storage.sqlite.publishing" in imported  # the check sees the imports at all
    assert not [name for name in imported if name.startswith(("psycopg", "evq.storage.postgres"))]


def test_migrate_brings_version_1_tables_up_to_date_keeping_their_events(
    empty_schema: Schema,
) -> None:
    # Tables as evq wrote them before event headers (version 1), holding one event.
    assert run_evq("migrate").returncode == 0
    old = run_evq("publish", "order.paid", "--payload", '{"n": 1}').stdout.strip()
    empty_schema.rows("ALTER TABLE evq_event DROP COLUMN headers")
    empty_schema.rows("UPDATE evq_version SET version = 1")
    # Until then, a read command says what to run (it would fail on the missing column).
    for command in (["events"], ["dlq", "list"], ["status"]):
        refused = run_evq(*command)
        assert refused.returncode == 1, refused.stderr
        (line,) = refused.stderr.splitlines()
        assert line.startswith("Error: the evq tables in ") and line.endswith(
            "are of an older evq (version 1, this evq writes 2): run `evq migrate` first"
        )

    result = run_evq("migrate")
    assert result.returncode == 0, result.stderr
    assert empty_schema.rows("SELECT version FROM evq_version") == [(SCHEMA_VERSION,)]
    new = run_evq("publish", "order.paid", "-H", "corr=7").stdout.strip()
    assert empty_schema.rows("SELECT id, headers FROM evq_event ORDER BY id") == [
        (old, None),
        (new, '{"corr":"7"}'),
    ]
