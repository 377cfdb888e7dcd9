"""Faults of the storage under a real worker: a full disk, a damaged file, damaged rows, and a
bulk publish killed or starved halfway. Nothing published may be lost, and every failure is one
line, not a traceback a second."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, calls, evq_env, run_evq
from workers import rows, wait_until

import evq
from evq.storage import open_queue
from evq.storage.sqlite import SqliteQueue

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="a small disk is a tmpfs mounted for the test, which needs root"
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB file system of the test's own, to fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, leave_kib: int) -> Path:
    """Fill `disk` but for `leave_kib` KiB; return the filler file."""
    stats = os.statvfs(disk)
    free_kib = stats.f_bavail * stats.f_frsize // 1024
    filler = disk / "filler"
    with open(filler, "wb") as file:
        file.write(b"\0" * max(0, free_kib - leave_kib) * 1024)
    return filler


def publish_orders(url: Path, count: int, pad: int = 300) -> list[str]:
    evq.configure(url=str(url))
    try:
        return evq.publish_many(
            [{"name": "order.paid", "payload": {"n": n, "pad": "x" * pad}} for n in range(count)]
        )
    finally:
        evq.publisher.queue().close()
        evq.config.reset()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line or "Error:" in line]


@needs_root
def test_a_full_disk_is_one_line_per_outage_and_nothing_is_lost_once_space_is_freed(
    tmp_path: Path, small_disk: Path
) -> None:
    queue = small_disk / "evq.db"
    ids = publish_orders(queue, 3000)
    filler = fill(small_disk, leave_kib=150)
    env = {"EVQ_URL": str(queue), "EVQ_TEST_LOG": str(tmp_path / "calls.log")}
    stuck = run_evq(
        "worker", "--burst", "-q", "--lease", "1s", "--app", "tests.apps.recorder", **env
    )
    assert stuck.returncode == 1
    assert "Traceback" not in stuck.stderr
    first, *rest = error_lines(stuck.stderr)
    assert "cannot use the queue" in first and "disk is full" in first
    assert rest[-1].startswith("Error: the worker stopped:") and "disk is full" in rest[-1]
    assert stuck.stderr.strip().splitlines()[-1] == rest[-1]
    assert sum("cannot use the queue" in line for line in rest) <= 2  # one per outage
    filler.unlink()
    time.sleep(1.5)  # the leases it could not give back expire
    done = run_evq("worker", "--burst", "-q", "--app", "tests.apps.recorder", **env)
    assert done.returncode == 0, done.stderr
    delivered = calls(tmp_path / "calls.log")
    assert {event_id for event_id, _ in delivered} == set(ids)
    assert rows(queue, "SELECT count(*) FROM evq_delivery WHERE state <> 'done'") == [(0,)]


@needs_root
def test_a_worker_drains_a_queue_with_less_free_space_than_the_queue_takes(
    tmp_path: Path, small_disk: Path
) -> None:
    queue = small_disk / "evq.db"
    ids = publish_orders(queue, 1500, pad=1000)  # 3 receivers: 4,500 deliveries
    size_kib = queue.stat().st_size // 1024
    assert size_kib > 1600
    # Less room than the queue itself takes; a worker that fanned out 256 events and let its
    # write-ahead log grow to 4 MiB between checkpoints would need far more.
    fill(small_disk, leave_kib=size_kib * 3 // 4)
    env = {"EVQ_URL": str(queue), "EVQ_TEST_LOG": str(tmp_path / "calls.log")}
    result = run_evq("worker", "--burst", "-q", "--app", "tests.apps.recorder", **env)
    assert result.returncode == 0, result.stderr
    assert {event_id for event_id, _ in calls(tmp_path / "calls.log")} == set(ids)


def test_a_damaged_file_stops_a_worker_at_start_with_one_line(queue_path: Path) -> None:
    publish_orders(queue_path, 2000)
    with open(queue_path, "r+b") as file:  # a page in the middle, as a failing disk leaves it
        file.seek(4096 * 100)
        file.write(b"\xa5" * 4096)
    result = run_evq("worker", "--burst", "--app", "tests.apps.recorder", timeout=60)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and ("malformed" in line or "damaged" in line), line


def test_damaged_rows_become_dead_letters_and_the_rest_is_delivered(
    queue_path: Path, tmp_path: Path
) -> None:
    first = evq.publish("order.paid", payload={"n": 1})
    assert run_evq("worker", "--burst", "--app", "tests.apps.recorder").returncode == 0
    later = [evq.publish("order.paid", payload={"n": n}) for n in range(2, 5)]
    with sqlite3.connect(queue_path) as conn:
        conn.execute(
            "UPDATE evq_delivery SET attempt = 'abc', state = 'pending', due_at = 0"
            " WHERE receiver = 'tests.apps.recorder:bill'"
        )
        conn.execute(
            "INSERT INTO evq_event (id, name, payload, published_at, due_at)"
            " VALUES ('01M8RJCHFJ7N6HFYQ5732WMN5Z', X'ff00', '{}', 1.0, 1.0)"
        )
    result = run_evq("worker", "--burst", "--app", "tests.apps.recorder")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    delivered = calls(tmp_path / "calls.log")
    assert all(delivered[(event_id, "bill")] == 1 for event_id in later)
    letters = run_evq("dlq", "list", "--json")
    assert letters.returncode == 0, letters.stderr
    reasons = {letter["receiver"]: letter["error"] for letter in json.loads(letters.stdout)}
    assert "attempt is 'abc'" in reasons["tests.apps.recorder:bill"]
    assert "not UTF-8" in reasons["evq:undeliverable"]
    for command in (("events", "--json"), ("events",), ("show", first), ("status", "--json")):
        shown = run_evq(*command)
        assert shown.returncode == 0 and shown.stderr == "", (command, shown.stderr)


def jsonl(path: Path, count: int) -> Path:
    with open(path, "w") as file:
        for n in range(count):
            file.write(json.dumps({"name": "order.paid", "payload": {"n": n}}) + "\n")
    return path


@pytest.mark.parametrize("written", [1, 4])
def test_a_bulk_publish_killed_while_it_stores_stores_nothing(
    queue_path: Path, tmp_path: Path, written: int
) -> None:
    lines = jsonl(tmp_path / "events.jsonl", 150_000)
    wal = Path(f"{queue_path}-wal")
    process = subprocess.Popen(
        [sys.executable, "-m", "evq", "publish", "--jsonl", str(lines)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=evq_env(),
        cwd=ROOT,
    )
    # Killed once `written` MiB of events are in the write-ahead log: well into storing them
    # (creating the tables writes a few KiB), long before the 20 MiB or so they take.
    wait_until(lambda: wal.exists() and wal.stat().st_size > written * 2**20, timeout=60)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert rows(queue_path, "SELECT count(*) FROM evq_event") == [(0,)]


@needs_root
def test_a_bulk_publish_on_a_full_disk_stores_nothing_and_says_so(
    tmp_path: Path, small_disk: Path
) -> None:
    queue = small_disk / "evq.db"
    assert run_evq("publish", "order.paid", EVQ_URL=str(queue)).returncode == 0
    shutil.copy(jsonl(tmp_path / "events.jsonl", 20_000), tmp_path / "copy.jsonl")
    fill(small_disk, leave_kib=200)
    result = run_evq("publish", "--jsonl", str(tmp_path / "copy.jsonl"), EVQ_URL=str(queue))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and line.endswith("nothing was published"), line
    assert result.stdout == ""
    assert rows(queue, "SELECT count(*) FROM evq_event") == [(1,)]


@needs_root
def test_publish_many_on_a_full_disk_stores_nothing(small_disk: Path) -> None:
    queue = small_disk / "evq.db"
    publish_orders(queue, 1)
    fill(small_disk, leave_kib=200)
    with pytest.raises(evq.errors.StorageFull, match="disk is full"):
        publish_orders(queue, 20_000)
    assert rows(queue, "SELECT count(*) FROM evq_event") == [(1,)]


@needs_root
@pytest.mark.timeout(30)  # refused at once: no retry (for 5 minutes) mends a full disk
def test_a_new_queue_on_a_full_disk_is_refused_with_one_line_naming_it(small_disk: Path) -> None:
    fill(small_disk, leave_kib=0)
    path = str(small_disk / "evq.db")
    with pytest.raises(evq.errors.StorageError) as caught:
        open_queue(path).status()
    assert str(caught.value) == f"cannot open the queue {path!r}: database or disk is full"


@needs_root
def test_only_workers_on_a_nearly_full_disk_checkpoint_their_log_every_few_pages(
    tmp_path: Path, small_disk: Path
) -> None:
    # Under 64 MiB free (the small disk has 8), a worker keeps its write-ahead log short; a
    # durable publisher does not (each checkpoint would cost it a sync), nor anyone with room.
    roomy = os.statvfs(tmp_path)
    assert roomy.f_bavail * roomy.f_frsize > 2**30
    pages = {}
    for disk in (tmp_path, small_disk):
        for role in ("publish", "work"):
            queue = SqliteQueue(str(disk / "evq.db"), role=role)
            try:
                (pages[disk.name, role],) = queue._db.conn.execute(
                    "PRAGMA wal_autocheckpoint"
                ).fetchone()
            finally:
                queue.close()
    assert pages == {
        (tmp_path.name, "publish"): 1000,
        (tmp_path.name, "work"): 1000,
        ("disk", "publish"): 1000,
        ("disk", "work"): 16,
    }


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (
            "UPDATE evq_delivery SET state = 'pending', due_at = 'abc' WHERE id = 1",
            "due_at is 'abc'",
        ),
        ("UPDATE evq_delivery SET state = 'pending', due_at = 0 WHERE id = 1", "event is missing"),
    ],
    ids=["due time not a number", "event row gone"],
)
def test_a_damaged_delivery_row_never_wedges_the_worker(
    queue_path: Path, tmp_path: Path, damage: str, reason: str
) -> None:
    first = evq.publish("order.paid", payload={"n": 1})
    assert run_evq("worker", "--burst", "--app", "tests.apps.recorder").returncode == 0
    later = evq.publish("order.paid", payload={"n": 2})
    with sqlite3.connect(queue_path) as conn:
        conn.execute(damage)
        if "missing" in reason:
            conn.execute("DELETE FROM evq_event WHERE id = ?", (first,))
    status = run_evq("status", "--json")
    assert status.returncode == 0 and status.stderr == "", status.stderr
    result = run_evq("worker", "--burst", "--app", "tests.apps.recorder", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert calls(tmp_path / "calls.log")[(later, "bill")] == 1
    letters = json.loads(run_evq("dlq", "list", "--json").stdout)
    assert [letter["id"] for letter in letters] == ["1"]
    assert reason in letters[0]["error"]
    assert run_evq("status", "--json").returncode == 0
