"""Redis servers for the Redis-only tests: a fresh key prefix on the server of
`EVQ_TEST_REDIS_URL` (`redis_url`), or a `redis-server` of the test's own on a free port, which
it may stop, kill and restart (`own_server`), or one whose queue a user may not run scripts on
(`scripts_refused`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from backends import drop_redis_prefix, new_redis_prefix

from evq.storage import open_queue
from evq.storage.contract import Queue
from evq.storage.redis.connection import parse_url

ENV = "EVQ_TEST_REDIS_URL"
T = TypeVar("T")


@pytest.fixture(name="redis_url")
def redis_url_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The URL of an empty queue of its own on the server of EVQ_TEST_REDIS_URL, made the
    default of this process and of the `evq` subprocesses the test starts."""
    import evq.config
    import evq.publisher

    server = os.environ.get(ENV)
    if not server:
        pytest.skip(f"set {ENV} to run the Redis tests (e.g. {ENV}=redis://127.0.0.1:6379/9)")
    url = new_redis_prefix(tmp_path, server)
    monkeypatch.setenv("EVQ_URL", url)
    monkeypatch.setenv("EVQ_TEST_LOG", str(tmp_path / "calls.log"))
    evq.config.reset()
    evq.publisher._queues.clear()
    yield url
    for handle in evq.publisher._queues.values():
        handle.close()
    evq.publisher._queues.clear()
    evq.config.reset()
    drop_redis_prefix(url)


class RedisServer:
    """A `redis-server` process of a test's own, in a directory of its own."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.directory = directory
        self.args = args
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self._wait_loaded()

    def _wait_loaded(self) -> None:
        client = redis.Redis(port=self.port, password=self._password())
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
            except redis.AuthenticationError:
                return

    def _password(self) -> str | None:
        if "--requirepass" in self.args:
            return self.args[self.args.index("--requirepass") + 1]
        return None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, with an append-only file synced at every write;
    not started yet (call `start()`), killed after the test."""
    server = RedisServer(tmp_path, "--save", "", "--appendonly", "yes", "--appendfsync", "always")
    yield server
    server.kill()


@contextlib.contextmanager
def scripts_refused(
    tmp_path: Path, prepare: Callable[[Queue], T]
) -> Iterator[tuple[Queue, str, T]]:
    """A queue on a `redis-server` of the test's own, filled by `prepare` (its result comes
    third), then opened as a user the server lets run every command but scripts, as some
    managed servers do; and the URL's location, as error lines name it."""
    server = RedisServer(tmp_path, "--save", "")
    server.start()
    try:
        admin = redis.Redis(port=server.port)
        admin.acl_setuser(
            "reader",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", "-@scripting"],
        )
        admin.close()
        owner = open_queue(server.url + "?prefix=p")
        prepared = prepare(owner)
        owner.close()
        url = f"redis://reader:pw@127.0.0.1:{server.port}/0?prefix=p"
        queue = open_queue(url)
        try:
            yield queue, parse_url(url).location, prepared
        finally:
            queue.close()
    finally:
        server.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
