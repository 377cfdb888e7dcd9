"""The SQLite queue file itself: what evq creates, what it refuses, what it can only read."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_evq
from workers import rows

import evq


def assert_one_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and text in line, line
    assert result.stdout == ""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_queue_and_its_log_files_are_readable_by_their_owner_only(
    queue_path: Path,
) -> None:
    evq.publish("a.b", payload={"email": "someone@example.com"})
    # The publisher's connection stays open: the write-ahead log and its index exist now.
    for path in (queue_path, Path(f"{queue_path}-wal"), Path(f"{queue_path}-shm")):
        assert mode(path) == 0o600, path


def test_an_existing_queue_keeps_its_mode(queue_path: Path) -> None:
    assert run_evq("publish", "a.b").returncode == 0
    queue_path.chmod(0o640)
    assert run_evq("publish", "a.b").returncode == 0
    assert mode(queue_path) == 0o640


def test_a_device_is_not_a_queue_and_nothing_is_created_beside_it(tmp_path: Path) -> None:
    for command in (("status",), ("publish", "a.b")):
        result = run_evq(*command, EVQ_URL="/dev/null")
        assert_one_error(result, 2, "'/dev/null' is not a regular file")
    assert not Path("/dev/null-journal").exists()
    assert not Path("/dev/null-wal").exists()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_new_queue_is_never_created_through_a_dangling_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "target.db"
    target.parent.mkdir()
    link = tmp_path / "evq.db"
    link.symlink_to(target)
    result = run_evq("publish", "a.b", EVQ_URL=str(link))
    assert_one_error(result, 2, "is a symbolic link to nothing")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_an_existing_queue_can_be_opened_through_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    assert run_evq("publish", "a.b", EVQ_URL=str(real)).returncode == 0
    link = tmp_path / "link.db"
    link.symlink_to(real)
    assert run_evq("publish", "a.c", EVQ_URL=str(link)).returncode == 0
    assert rows(real, "SELECT name FROM evq_event ORDER BY seq") == [("a.b",), ("a.c",)]


@contextlib.contextmanager
def read_only_directory(directory: Path) -> Iterator[None]:
    """Make `directory` (and what is in it) impossible to write, even for root: a read-only
    mount as root, plain permissions for anyone else."""
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in directory.iterdir()}
        for path in directory.iterdir():
            path.chmod(0o444)
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
            for path, old in modes.items():
                path.chmod(old)
        return
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_a_read_only_queue_still_serves_the_read_only_commands(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    queue = directory / "evq.db"
    event_id = run_evq("publish", "a.b", "--payload", '{"n": 1}', EVQ_URL=str(queue)).stdout
    before = sorted(path.name for path in directory.iterdir())
    with read_only_directory(directory):
        env = {"EVQ_URL": str(queue)}
        status = run_evq("status", "--json", **env)
        assert status.returncode == 0, status.stderr
        assert '"published": 1' in status.stdout
        events = run_evq("events", **env)
        assert events.returncode == 0, events.stderr
        assert event_id.strip() in events.stdout
        shown = run_evq("show", event_id.strip(), **env)
        assert shown.returncode == 0 and "a.b" in shown.stdout, shown.stderr
        dead = run_evq("dlq", "list", **env)
        assert dead.returncode == 0 and dead.stdout == "", dead.stderr
        subscribers = run_evq("list-subscribers", "--app", "tests.apps.recorder", **env)
        assert subscribers.returncode == 0, subscribers.stderr
        refused = run_evq("publish", "a.c", **env)
        assert refused.returncode == 2
        assert refused.stderr.startswith("Error: ") and len(refused.stderr.splitlines()) == 1
        assert sorted(path.name for path in directory.iterdir()) == before
    assert rows(queue, "SELECT count(*) FROM evq_event") == [(1,)]


@pytest.mark.parametrize(
    "content",
    [b"not a database at all\n" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["text", "damaged header"],
)
def test_a_file_that_is_not_a_queue_stops_a_worker_at_once(
    queue_path: Path, content: bytes
) -> None:
    queue_path.write_bytes(content)
    result = run_evq("worker", "--burst", "--app", "tests.apps.recorder", timeout=30)
    assert_one_error(result, 1, "as a queue")
