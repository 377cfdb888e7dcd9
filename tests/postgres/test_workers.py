"""Workers on PostgreSQL: several processes of both types share one backlog without doing
anything twice, SIGKILLed workers lose nothing, and an idle worker sleeps in LISTEN, woken by
each publish, and listens again when its connection is cut (without timing windows: the idle
wait runs on a clock that stands still). Idle CPU is measured by benchmarks/postgres.py."""

from __future__ import annotations

import importlib
import random
import threading
import time

import pytest
from conftest import calls, run_evq
from test_wakeup import StoppedClock, idle_until_leased
from workers import WorkerProcess, log_lines, wait_until

import evq
from evq.storage.postgres.wakeup import NotificationWatcher
from evq.worker import LeasedStorage, WorkerOptions, create_consumer
from postgres.conftest import Schema

RECEIVERS = ("bill", "ship", "audit")
LEASE = "2s"


def _backlog(count: int) -> set[tuple[str, str]]:
    # order.created matches bill (order.*), ship (order.**) and audit (**): 3 receivers each.
    ids = evq.publish_many({"name": "order.created", "payload": {"n": n}} for n in range(count))
    return {(event_id, receiver) for event_id in ids for receiver in RECEIVERS}


def _worker(pg: Schema, worker_type: str, *args: str, **env: str) -> WorkerProcess:
    return WorkerProcess(
        pg.tmp_path / "queue",
        "--app",
        "tests.apps.recorder",
        "--workers",
        "2",
        "--worker-type",
        worker_type,
        "--quiet",
        *args,
        **env,
    )


@pytest.mark.timeout(240)
def test_three_worker_processes_of_both_types_do_every_delivery_exactly_once(pg: Schema) -> None:
    expected = _backlog(400)
    workers = [
        _worker(pg, kind, EVQ_TEST_SLEEP="0.002") for kind in ("thread", "process", "thread")
    ]
    try:
        wait_until(lambda: pg.states().get("done") == len(expected), timeout=180)
        for worker in workers:
            assert worker.stop() == 0, worker.stderr
            assert "Traceback" not in worker.stderr
            assert "deadlock" not in worker.stderr
    finally:
        for worker in workers:
            worker.kill_group()

    counted = calls(pg.log)
    assert set(counted) == expected
    assert set(counted.values()) == {1}, "a delivery ran twice without any crash"
    assert pg.states() == {"done": len(expected)}
    # They shared the work: more than one process delivered (each worker has 2 threads or 2
    # forked processes of its own).
    assert len({line[3] for line in log_lines(pg.log)}) >= 3
    assert pg.rows("SELECT sum(value) FROM evq_counter WHERE name = 'dispatched'") == [(400,)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_workers_killed_at_random_moments_lose_no_delivery(pg: Schema, worker_type: str) -> None:
    expected = _backlog(300)
    rng = random.Random(3)
    args = ("--lease", LEASE)
    workers = [_worker(pg, worker_type, *args, EVQ_TEST_SLEEP="0.003") for _ in range(2)]
    try:
        for _ in range(6):
            time.sleep(rng.uniform(0.3, 1.5))
            # SIGKILL one worker (or both) with its children, mid-delivery, and restart it.
            for index in rng.sample(range(2), rng.choice((1, 1, 2))):
                workers[index].kill_group()
                workers[index] = _worker(pg, worker_type, *args, EVQ_TEST_SLEEP="0.003")
        wait_until(lambda: pg.states().get("done") == len(expected), timeout=240)
        for worker in workers:
            assert worker.stop() == 0, worker.stderr
    finally:
        for worker in workers:
            worker.kill_group()

    burst = run_evq("worker", "--burst", "--app", "tests.apps.recorder", "--lease", LEASE, "-q")
    assert burst.returncode == 0, burst.stderr
    counted = calls(pg.log)
    assert set(counted) == expected  # nothing lost
    # The kills landed while deliveries were leased: otherwise this tested nothing.
    assert pg.rows("SELECT count(*) FROM evq_attempt WHERE outcome = 'lost'")[0][0] > 0
    assert pg.states() == {"done": len(expected)}
    assert pg.rows("SELECT count(*) FROM evq_event WHERE due_at IS NOT NULL") == [(0,)]


def _listening(pg: Schema) -> list[int]:
    return [
        pid
        for (pid,) in pg.rows(
            # This database's only: other test runs may share the server.
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'evq'"
            " AND datname = current_database()"
            " AND query = 'LISTEN evq_wakeup' AND pid <> pg_backend_pid()"
        )
    ]


@pytest.mark.timeout(180)
def test_an_idle_worker_listens_again_when_its_connection_is_cut_and_catches_up(
    pg: Schema,
) -> None:
    # The worker's wait runs on a clock that stands still (see tests/test_wakeup.py): only a
    # wake-up ends it. Its LISTEN connection is killed while it waits, and an event published
    # then must still end the wait: the worker listens again, and reads what it missed.
    importlib.import_module("tests.apps.recorder")
    storage = create_consumer(WorkerOptions(url=pg.url)).huey.storage
    assert isinstance(storage, LeasedStorage)
    clock = StoppedClock()
    storage.clock = clock
    stop = threading.Event()
    leased: list[str] = []

    def idle_worker() -> None:
        leased.extend(idle_until_leased(storage, clock, stop))

    waiting = threading.Thread(target=idle_worker)
    waiting.start()
    try:
        assert clock.waited.wait(60), "the idle wait never waited"
        # This worker's own LISTEN connection (other tests' workers may listen in this database).
        watcher = storage._watcher
        assert isinstance(watcher, NotificationWatcher)
        listener = watcher.backend_pid()
        assert listener in _listening(pg)
        pg.rows("SELECT pg_terminate_backend(%s)", (listener,))
        result = run_evq("publish", "order.created", "--payload", "{}", EVQ_URL=pg.url)
        assert result.returncode == 0, result.stderr
        waiting.join(60)
        assert not waiting.is_alive(), "a publish after the LISTEN connection died never woke it"
        assert set(leased) == {result.stdout.strip()}
        # It listens again, on a new connection.
        assert watcher.backend_pid() not in (None, listener)
        assert watcher.backend_pid() in _listening(pg)
    finally:
        stop.set()
        waiting.join(60)
        storage.close()
