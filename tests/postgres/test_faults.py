"""Faults between evq and PostgreSQL, with real worker processes and a real server: a proxy
(`proxy.Proxy`) cut several times mid-backlog, a server that refuses new connections for a
while, `evq publish` while the server cannot be reached, and a wrong password on a private
cluster. Workers log one line per outage, reconnect with backoff and carry on; nothing is lost,
and a delivery runs again only when the outcome of its earlier attempt was never recorded."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import calls, run_evq
from proxy import Proxy
from workers import WorkerProcess, log_lines, wait_until

import evq
from postgres.conftest import Schema

RECEIVERS = ("bill", "ship", "audit")
LEASE = "2s"
OUTAGE_LINE = "cannot use the queue"


@pytest.fixture
def proxy(pg: Schema) -> Iterator[Proxy]:
    from urllib.parse import urlsplit

    parts = urlsplit(pg.url)
    with Proxy(parts.hostname or "127.0.0.1", parts.port or 5432) as running:
        yield running


def _backlog(count: int) -> set[tuple[str, str]]:
    # order.created matches bill (order.*), ship (order.**) and audit (**): 3 receivers each.
    ids = evq.publish_many({"name": "order.created", "payload": {"n": n}} for n in range(count))
    return {(event_id, receiver) for event_id in ids for receiver in RECEIVERS}


def _worker(pg: Schema, proxy: Proxy, worker_type: str) -> WorkerProcess:
    return WorkerProcess(
        pg.tmp_path / "queue",
        "--app",
        "tests.apps.recorder",
        "--workers",
        "2",
        "--worker-type",
        worker_type,
        "--lease",
        LEASE,
        name=f"worker-{worker_type}",
        EVQ_URL=proxy.url(pg.url),
        EVQ_TEST_SLEEP="0.002",
    )


def _done(pg: Schema) -> int:
    return pg.states().get("done", 0)


def _check_outcome(pg: Schema, expected: set[tuple[str, str]]) -> None:
    """Every delivery done, each called at least once; a call repeated only for an attempt
    whose outcome the worker could not record (the next lease found it and noted it lost)."""
    assert pg.states() == {"done": len(expected)}
    counted = calls(pg.log)
    assert set(counted) == expected  # nothing lost, nothing made up
    attempts: dict[tuple[str, str], set[str]] = {}
    for event_id, receiver, attempt, _pid in log_lines(pg.log):
        key = (event_id, receiver)
        assert attempt not in attempts.setdefault(key, set()), f"attempt {attempt} ran twice"
        attempts[key].add(attempt)
    lost = {
        (event_id, receiver, str(attempt))
        for event_id, receiver, attempt in pg.rows(
            "SELECT e.id, d.receiver, a.attempt FROM evq_attempt a"
            " JOIN evq_delivery d ON d.id = a.delivery_id JOIN evq_event e ON e.seq = d.event_seq"
            " WHERE a.outcome = 'lost'"
        )
    }
    for key, numbers in attempts.items():
        if len(numbers) > 1:
            earlier = sorted(numbers, key=int)[:-1]
            for number in earlier:
                assert (*key, number) in lost, f"{key} ran again after attempt {number} recorded"


def _check_logs(workers: list[WorkerProcess], outages: int) -> None:
    """Each worker stopped cleanly, without a traceback, having logged at most one line per
    outage and the end of each; the outages were seen. (A worker whose connections were all
    idle at a cut replaces them quietly at their next use: it may log nothing.)"""
    seen = 0
    for worker in workers:
        assert worker.stop() == 0, worker.stderr
        stderr = worker.stderr
        assert "Traceback" not in stderr, stderr
        errors = [line for line in stderr.splitlines() if OUTAGE_LINE in line]
        assert len(errors) <= outages, stderr
        assert all("ERROR" in line for line in errors), errors
        assert stderr.count("the queue works again") == len(errors), stderr
        seen += len(errors)
        # The line is one line: no multi-line message from libpq leaks into the log.
        for line in stderr.splitlines():
            assert line.strip() == "" or not line.startswith((" ", "\t")), stderr
    assert seen >= 1, "no worker noticed an outage"


@pytest.mark.timeout(120)
def test_workers_ride_out_a_proxy_cut_several_times_mid_backlog(pg: Schema, proxy: Proxy) -> None:
    expected = _backlog(1000)  # 3000 deliveries
    workers = [_worker(pg, proxy, kind) for kind in ("thread", "process")]
    try:
        # Both workers at work (the thread worker's process and the two forked processes of
        # the other) before the first cut.
        wait_until(lambda: len({line[3] for line in log_lines(pg.log)}) >= 3, timeout=30)
        cuts = 0
        for _ in range(4):
            start = _done(pg)
            # Cut while the workers are busy: some deliveries done since the last cut, and
            # plenty left.
            wait_until(lambda: _done(pg) >= start + 150, timeout=40)  # noqa: B023 (run at once)
            if _done(pg) > len(expected) - 600:
                break
            assert proxy.cut() > 0
            cuts += 1
        assert cuts >= 3, f"the backlog drained too fast: only {cuts} cuts"
        wait_until(lambda: _done(pg) == len(expected), timeout=60)
        _check_logs(workers, outages=cuts)
    finally:
        for worker in workers:
            worker.kill_group()
    _check_outcome(pg, expected)


@pytest.mark.timeout(120)
def test_workers_wait_out_a_server_that_refuses_connections_for_a_few_seconds(
    pg: Schema, proxy: Proxy
) -> None:
    expected = _backlog(800)
    workers = [_worker(pg, proxy, kind) for kind in ("thread", "process")]
    try:
        wait_until(lambda: len({line[3] for line in log_lines(pg.log)}) >= 3, timeout=30)
        wait_until(lambda: _done(pg) >= 300, timeout=40)
        # A server restart: every connection dropped, new ones refused for 4 s.
        proxy.refuse(4)
        proxy.cut()
        progress = _done(pg)
        time.sleep(3)
        assert _done(pg) == progress, "deliveries were recorded while the server was away"
        assert proxy.refused > 0, "nobody tried to reconnect while the server was away"
        assert _done(pg) < len(expected)
        wait_until(lambda: _done(pg) == len(expected), timeout=60)
        _check_logs(workers, outages=1)
        for worker in workers:
            assert "works again" in worker.stderr, worker.stderr
    finally:
        for worker in workers:
            worker.kill_group()
    _check_outcome(pg, expected)


@pytest.mark.timeout(60)
def test_publish_while_the_server_refuses_connections_fails_in_one_line_at_once(
    pg: Schema, proxy: Proxy
) -> None:
    with proxy.refusing():
        started = time.monotonic()
        result = run_evq(
            "publish", "order.created", "--payload", '{"n": 1}', EVQ_URL=proxy.url(pg.url)
        )
        took = time.monotonic() - started
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert f"127.0.0.1:{proxy.port}" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    # Refused at once: far within the 10 s connect timeout (with slack for the interpreter).
    assert took < 8, took
    assert proxy.refused >= 1
    assert pg.rows("SELECT count(*) FROM evq_event") == [(0,)]


# A private cluster for the wrong password: the shared server trusts everyone.

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "s3cret-Pa55word-for-evq"
WRONG = "WRONG-pw-7f3a9c"


def _pg_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidate = PG_BIN / name
    return str(candidate) if candidate.exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _private_cluster() -> Iterator[int]:
    """A PostgreSQL cluster in a directory of its own with password (SCRAM) authentication
    for user postgres; yields its port, stops and deletes it afterwards. initdb refuses to run
    as root: then the cluster belongs to the `postgres` account (and lives outside pytest's
    private tmp directory, which that account cannot enter)."""
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("initdb (PostgreSQL's server binaries) not found: no private cluster")
    as_user: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="evq-cluster-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres account to run initdb as")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser to run initdb as postgres")
        as_user = [runuser, "-u", "postgres", "--"]
        os.chown(home, account.pw_uid, account.pw_gid)
    (home / "pwfile").write_text(PASSWORD + "\n")
    if as_user:
        os.chown(home / "pwfile", pwd.getpwnam("postgres").pw_uid, -1)
    try:
        yield from _run_cluster(as_user, initdb, pg_ctl, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _run_cluster(as_user: list[str], initdb: str, pg_ctl: str, home: Path) -> Iterator[int]:
    pwfile = home / "pwfile"
    data = home / "data"
    port = _free_port()
    _run(
        [
            *as_user,
            initdb,
            *("-D", str(data), "-U", "postgres", "--auth=scram-sha-256"),
            *(f"--pwfile={pwfile}", "--no-sync"),
        ]
    )
    _run(
        [
            *as_user,
            pg_ctl,
            *("-D", str(data), "-l", str(home / "log"), "-w", "-t", "60", "start"),
            *("-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"),
        ]
    )
    try:
        yield port
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


@pytest.mark.timeout(180)
def test_a_wrong_password_is_bad_input_in_one_line_that_never_shows_it() -> None:
    with _private_cluster() as port:
        good = run_evq(
            "migrate", EVQ_URL=f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
        )
        assert good.returncode == 0, good.stderr  # the cluster works with the right one
        for password in (WRONG, PASSWORD[:-1]):
            url = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
            started = time.monotonic()
            result = run_evq("status", "--url", url)
            assert time.monotonic() - started < 10
            assert result.returncode == 2, result  # bad input, as the README says
            lines = result.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
            assert "password authentication failed" in lines[0]
            assert f"127.0.0.1:{port}/postgres" in lines[0]
            output = result.stdout + result.stderr
            assert password not in output and PASSWORD not in output
            assert "Traceback" not in output
