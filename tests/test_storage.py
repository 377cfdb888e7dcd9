"""`open_queue`: the one place that picks a backend from a URL's scheme."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import evq_env

import evq.storage
from evq.cli import cli
from evq.errors import InvalidInput, UnknownBackend
from evq.storage import open_queue
from evq.storage.sqlite import SqliteQueue


@pytest.mark.parametrize("url", ["mongodb://x", "foo://x", "FOO://x/y.db", "mysql://h/db"])
def test_a_url_whose_scheme_names_no_backend_is_refused(url: str) -> None:
    scheme = url.split("://")[0].lower()
    with pytest.raises(UnknownBackend, match=f"unsupported storage URL scheme '{scheme}'") as info:
        open_queue(url)
    assert isinstance(info.value, InvalidInput)
    assert "sqlite://" in str(info.value)  # says what is supported


@pytest.mark.parametrize("command", [["status"], ["events"], ["publish", "a.b"]])
def test_the_cli_with_an_unknown_scheme_prints_one_line_exits_2_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "evq", *command, "--url", "foo://x"],
        capture_output=True,
        text=True,
        timeout=120,
        env=evq_env(),
        cwd=tmp_path,
    )

    assert result.returncode == 2
    assert result.stderr.startswith("Error: unsupported storage URL scheme 'foo'")
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "evq.db",
        "sqlite:///{tmp}/evq.db",
        "SQLITE:///{tmp}/evq.db",
    ],
)
def test_a_path_or_a_sqlite_url_opens_the_sqlite_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    queue = open_queue(url.format(tmp=tmp_path))
    assert isinstance(queue, SqliteQueue)
    assert queue.location == str(tmp_path / "evq.db")


@pytest.fixture
def backend_without_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A `fakedb://` backend whose module imports a driver that is not installed."""
    (tmp_path / "evq_test_fakedb_backend.py").write_text("import fakedb_driver_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(
        evq.storage._BACKENDS, "fakedb", ("evq_test_fakedb_backend", "FakeQueue", "fakedb")
    )
    return "fakedb://db.example/evq"


def test_a_backend_whose_driver_is_missing_names_the_extra_to_install(
    backend_without_driver: str,
) -> None:
    with pytest.raises(UnknownBackend) as info:
        open_queue(backend_without_driver)

    message = str(info.value)
    assert "pip install 'evq[fakedb]'" in message
    assert "fakedb_driver_not_installed" in message
    assert isinstance(info.value, InvalidInput)


def test_a_backend_module_that_is_itself_missing_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(
        evq.storage._BACKENDS, "fakedb", ("fakedb_backend_not_installed", "FakeQueue", "fakedb")
    )
    with pytest.raises(UnknownBackend, match=r"pip install 'evq\[fakedb\]'"):
        open_queue("fakedb://db.example/evq")


def test_a_missing_module_of_evq_itself_is_not_mistaken_for_a_missing_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A broken installation of evq is a bug to report, not an extra to install.
    monkeypatch.setitem(
        evq.storage._BACKENDS, "fakedb", ("evq.storage.no_such_backend", "FakeQueue", "fakedb")
    )
    with pytest.raises(ModuleNotFoundError, match=r"evq\.storage\.no_such_backend"):
        open_queue("fakedb://db.example/evq")


def test_the_cli_with_a_missing_driver_prints_one_line_and_exits_2(
    backend_without_driver: str,
) -> None:
    result = CliRunner().invoke(cli, ["status", "--url", backend_without_driver])

    assert result.exit_code == 2
    assert result.stderr.startswith("Error: the fakedb backend needs a driver")
    assert "pip install 'evq[fakedb]'" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_backend_without_the_outbox_refuses_it_in_one_line_naming_itself(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import evq.publisher
    import evq.storage

    monkeypatch.setitem(evq.storage._BACKENDS, "stub", ("stub_backend", "StubQueue", None))
    monkeypatch.setenv("EVQ_URL", "stub://anything")
    evq.config.reset()
    evq.publisher._queues.clear()
    try:
        with pytest.raises(evq.errors.OutboxUnsupported) as info:
            evq.publish("order.paid", payload={}, connection=object())
        message = str(info.value)
        assert "the Stub backend cannot write inside your transaction" in message
        assert "\n" not in message
        store = evq.publisher.queue()
        assert store.published == []  # type: ignore[attr-defined]
        evq.publish("order.paid", payload={})  # without a connection it publishes
        assert len(store.published) == 1  # type: ignore[attr-defined]
    finally:
        evq.config.reset()
        evq.publisher._queues.clear()


def test_an_unknown_scheme_is_refused_with_every_scheme_evq_knows() -> None:
    with pytest.raises(UnknownBackend) as refused:
        open_queue("foo://x")
    assert str(refused.value) == (
        "unsupported storage URL scheme 'foo': use a path, or one of sqlite://, postgresql://,"
        " postgres://, redis://, rediss://, unix://, memory://"
    )
