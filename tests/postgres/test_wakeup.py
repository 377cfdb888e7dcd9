"""The PostgreSQL watcher: a NOTIFY wakes it on the one connection it listens on; when that
connection is lost it says "maybe" (a catch-up read is due), says nothing while the server
refuses it, without trying again at every wait, and listens again as soon as it can; closed,
it lets go of its connection. (A worker cut off while idle: `tests/postgres/test_workers.py`.)
The server is reached through `proxy.Proxy`, so that a test can cut it off and refuse it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from proxy import Proxy

from evq.storage.postgres.connection import Server
from evq.storage.postgres.wakeup import NotificationWatcher
from postgres.conftest import Schema


@pytest.fixture
def proxy(pg: Schema) -> Iterator[Proxy]:
    parts = urlsplit(pg.url)
    with Proxy(parts.hostname or "127.0.0.1", parts.port or 5432) as running:
        yield running


def notify(pg: Schema) -> None:
    """What every publish sends in its transaction."""
    pg.rows("NOTIFY evq_wakeup")


def refused_without_a_wake_up(watcher: NotificationWatcher, proxy: Proxy, attempts: int) -> None:
    """Wait, a little at a time, until the watcher has tried `attempts` more times to listen
    (and been refused); every one of those waits must say that nothing changed."""
    until = proxy.refused + attempts
    give_up = time.monotonic() + 60
    while proxy.refused < until and time.monotonic() < give_up:
        assert watcher.wait(0.05) is False
    assert proxy.refused >= until, "the watcher stopped trying to listen again"
    assert not watcher.connected


def listens_again(watcher: NotificationWatcher) -> None:
    """Wait, a little at a time, until a wait says "maybe": the watcher listens again."""
    give_up = time.monotonic() + 60
    while not watcher.wait(0.05):
        assert time.monotonic() < give_up, "the watcher never listened again"
    assert watcher.connected


@pytest.mark.timeout(120)
def test_a_notification_wakes_the_watcher_on_the_connection_it_keeps(pg: Schema) -> None:
    watcher = NotificationWatcher(Server(pg.url))
    try:
        listener = watcher.backend_pid()
        assert listener is not None
        assert watcher.wait(0.05) is False  # nothing sent
        for _ in range(2):
            notify(pg)
            assert watcher.wait(30) is True
            # Woken, not reconnected: a notification sent while it listened anew would be lost.
            assert watcher.backend_pid() == listener
    finally:
        watcher.close()


@pytest.mark.timeout(120)
def test_a_closed_watcher_lets_go_of_its_connection(pg: Schema) -> None:
    watcher = NotificationWatcher(Server(pg.url))
    listener = watcher.backend_pid()
    assert watcher.connected and listener is not None
    watcher.close()
    assert not watcher.connected
    assert watcher.backend_pid() is None
    give_up = time.monotonic() + 30
    while pg.rows("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (listener,)) != [(0,)]:
        assert time.monotonic() < give_up, "the watcher's connection is still open on the server"
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_a_watcher_cut_off_says_maybe_at_once_and_listens_again_when_the_server_lets_it(
    pg: Schema, proxy: Proxy
) -> None:
    watcher = NotificationWatcher(Server(proxy.url(pg.url)))
    try:
        listener = watcher.backend_pid()
        assert watcher.connected and listener is not None
        with proxy.refusing():  # a server restart: the connection dies, new ones are refused
            assert proxy.cut() == 1
            # Events may have been published while it could not hear: a catch-up read is due.
            assert watcher.wait(30) is True
            assert not watcher.connected
            refused_without_a_wake_up(watcher, proxy, attempts=2)
        listens_again(watcher)
        assert watcher.backend_pid() not in (None, listener)
        notify(pg)
        assert watcher.wait(30) is True
    finally:
        watcher.close()


@pytest.mark.timeout(180)
def test_a_watcher_made_while_the_server_refuses_it_listens_once_it_can(
    pg: Schema, proxy: Proxy
) -> None:
    with proxy.refusing():
        watcher = NotificationWatcher(Server(proxy.url(pg.url)))
        try:
            assert not watcher.connected
            refused_without_a_wake_up(watcher, proxy, attempts=2)
            # Waits that end at once (a worker's many threads, its stop checks): they do not
            # each try again; the watcher waits out its backoff between attempts.
            tried = proxy.refused
            for _ in range(20):
                assert watcher.wait(0) is False
            assert proxy.refused - tried < 5
        except BaseException:
            watcher.close()
            raise
    try:
        listens_again(watcher)
        notify(pg)
        assert watcher.wait(30) is True
    finally:
        watcher.close()
