"""Redis URLs: what evq accepts, what it refuses in one line, and that a password never shows."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import pytest
from conftest import run_evq
from redis_server import RedisServer, redis_url_fixture  # noqa: F401

from evq.errors import InvalidStorageURL, StorageError, UnknownBackend
from evq.storage import open_queue
from evq.storage.redis.connection import parse_url

PASSWORD = "s3cr3t-pa55"


@pytest.mark.parametrize(
    ("url", "location", "base"),
    [
        ("redis://localhost", "redis://localhost:6379/0", "{evq}:"),
        ("redis://:pw@h:7000/3?prefix=shop", "redis://h:7000/3?prefix=shop", "{evq:shop}:"),
        ("rediss://user:pw@h/1", "rediss://h:6379/1", "{evq}:"),
        ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2", "{evq}:"),
    ],
)
def test_a_redis_url_names_the_server_database_and_prefix_without_the_password(
    url: str, location: str, base: str
) -> None:
    address = parse_url(url)
    assert (address.location, address.base) == (location, base)
    assert "pw" not in address.location


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pw@h:99999/0",
        "redis://h/abc",
        "redis://h/0?prefix=a{b}",
        "redis://h/0?prefix=",
        "redis://h/0?colour=blue",
        "redis:///0",
        "unix://",
    ],
)
def test_a_malformed_redis_url_is_bad_input_in_one_line(url: str) -> None:
    with pytest.raises(InvalidStorageURL) as caught:
        open_queue(url)
    assert "\n" not in str(caught.value)
    assert ":pw@" not in str(caught.value)


def test_the_redis_schemes_are_known_backends() -> None:
    with pytest.raises(UnknownBackend, match="redis://"):
        open_queue("mongodb://h/0")


def test_publish_while_the_server_is_down_fails_in_one_line_within_seconds(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path)  # never started: nothing listens on its port
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0?prefix=down"
    started = time.monotonic()
    result = run_evq("publish", "order.paid", "--payload", "{}", "--url", url)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach Redis at redis://127.0.0.1")
    assert PASSWORD not in result.stderr
    assert elapsed < 15


def test_a_wrong_password_and_a_missing_database_are_bad_input_without_the_password(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path, "--save", "", "--requirepass", PASSWORD)
    server.start()
    try:
        wrong = f"redis://:not-{PASSWORD}@127.0.0.1:{server.port}/0"
        result = run_evq("publish", "order.paid", "--url", wrong)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("Error: Redis at redis://127.0.0.1")
        assert "password" in result.stderr and len(result.stderr.splitlines()) == 1
        assert PASSWORD not in result.stderr

        missing = run_evq("publish", "x.y", "--url", f"redis://127.0.0.1:{server.port}/0")
        assert missing.returncode == 2 and "needs a password" in missing.stderr

        no_db = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/99"
        result = run_evq("publish", "order.paid", "--url", no_db)
        assert result.returncode == 2, result.stderr
        assert "no database 99" in result.stderr and PASSWORD not in result.stderr

        good = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0?prefix=p"
        assert run_evq("publish", "order.paid", "--url", good).returncode == 0
        for command in (["status"], ["status", "--json"], ["events"], ["dlq", "list"]):
            result = run_evq(*command, "--url", good)
            assert result.returncode == 0, result.stderr
            assert PASSWORD not in result.stdout + result.stderr
    finally:
        server.kill()


def test_the_worker_log_never_shows_the_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--save", "", "--requirepass", PASSWORD)
    server.start()
    try:
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        assert run_evq("publish", "order.paid", "--url", url).returncode == 0
        result = run_evq(
            "worker",
            "--burst",
            "--app",
            "tests.apps.recorder",
            "--url",
            url,
            EVQ_TEST_LOG=str(tmp_path / "calls.log"),
        )
        assert result.returncode == 0, result.stderr
        assert f"queue redis://127.0.0.1:{server.port}/0" in result.stderr
        assert PASSWORD not in result.stderr + result.stdout
    finally:
        server.kill()


def test_an_inspection_of_a_prefix_holding_no_queue_is_bad_input(redis_url: str) -> None:
    result = run_evq("status", "--url", redis_url.replace("prefix=", "prefix=none-"))
    assert result.returncode == 2
    assert result.stderr.startswith("Error: no queue at redis://")


def test_storage_errors_while_running_are_storage_errors(caplog: pytest.LogCaptureFixture) -> None:
    queue = open_queue("redis://127.0.0.1:1/0")
    with caplog.at_level(logging.DEBUG), pytest.raises(StorageError, match="cannot reach Redis"):
        queue.next_due()


def _an_older_server(reply: bytes) -> bytes:
    """What a Redis 6.0 would answer to INFO: the version rewritten, in as many bytes (the
    reply's length prefix stays true)."""
    head, found, rest = reply.partition(b"redis_version:")
    if not found:
        return reply
    version, newline, tail = rest.partition(b"\r\n")
    older = b"6.0." + b"9" * max(1, len(version) - 4)
    return head + found + older[: len(version)].ljust(len(version), b"9") + newline + tail


def test_a_server_older_than_6_2_is_refused_in_one_line_naming_the_minimum(
    tmp_path: Path,
) -> None:
    from proxy import Proxy

    server = RedisServer(tmp_path, "--save", "")
    server.start()
    try:
        with contextlib.closing(Proxy(target_port=server.port, replies=_an_older_server)) as old:
            url = f"redis://127.0.0.1:{old.port}/0?prefix=old"
            for command in (
                ["publish", "order.paid", "--payload", "{}"],
                ["status"],
                ["worker", "--burst", "--app", "tests.apps.recorder"],
            ):
                result = run_evq(*command, "--url", url)
                assert result.returncode == 1, result.stderr
                assert result.stdout == ""
                (line,) = result.stderr.splitlines()
                assert line.startswith(f"Error: Redis at redis://127.0.0.1:{old.port}/0")
                assert "is version 6.0." in line
                assert line.endswith("evq needs Redis 6.2 or newer")
        # Nothing was written through it: the real server holds no key of that queue.
        import redis

        client = redis.Redis(port=server.port)
        assert client.keys("{evq:old}*") == []
        client.close()
    finally:
        server.kill()


def test_a_publish_makes_the_queue_an_inspection_opens_and_refuses_a_newer_evqs_queue(
    redis_url: str,
) -> None:
    import redis

    from evq.publisher import prepare
    from evq.storage.redis.connection import parse_url

    publisher = open_queue(redis_url)
    publisher.publish([prepare("order.paid", payload={}, now=time.time())])
    publisher.close()
    inspector = open_queue(redis_url, role="inspect", create=False)  # not QueueNotFound
    assert inspector.status().published == 1
    inspector.close()

    client = redis.Redis.from_url(os.environ["EVQ_TEST_REDIS_URL"])
    client.hset(parse_url(redis_url).base + "meta", "version", "99")
    client.close()
    newer = open_queue(redis_url)
    with pytest.raises(StorageError, match=r"written by a newer evq \(layout 99\)"):
        newer.publish([prepare("order.paid", payload={}, now=time.time())])
    newer.close()
