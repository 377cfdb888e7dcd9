"""How an idle worker learns, within milliseconds, that there may be new work: `LISTEN`.

Every publish sends `NOTIFY evq_wakeup` in its transaction, so a notification arrives once the
event is committed. The watcher listens on a connection of its own and sleeps in `select()` on
its socket: an idle worker costs no CPU. If that connection drops (a server restart,
`pg_terminate_backend`, a network cut), the watcher says "maybe changed" at once, so that the
worker looks for work it may have missed, and listens again on a new connection, retrying
with backoff while the server cannot be reached.
"""

from __future__ import annotations

import contextlib
import select
import time
from typing import Any

import psycopg

from evq.errors import EvqError
from evq.storage.postgres.connection import Server, _close, connect

CHANNEL = "evq_wakeup"
_RETRY_SECONDS = (0.1, 5.0)


class NotificationWatcher:
    """Waits for `NOTIFY evq_wakeup` on a dedicated connection."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._conn: psycopg.Connection[Any] | None = None
        self._backoff = _RETRY_SECONDS[0]
        self._retry_at = 0.0
        self._listen()

    def _listen(self) -> bool:
        try:
            conn = connect(self._server)
            conn.execute(f"LISTEN {CHANNEL}")
        except (EvqError, psycopg.Error):
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, _RETRY_SECONDS[1])
            return False
        self._conn = conn
        self._backoff = _RETRY_SECONDS[0]
        return True

    def _drop(self) -> None:
        if self._conn is not None:
            _close(self._conn)
            self._conn = None

    @property
    def connected(self) -> bool:
        """Whether the watcher holds a listening connection now."""
        return self._conn is not None

    def backend_pid(self) -> int | None:
        """The server process of the listening connection (for tests and diagnostics)."""
        return None if self._conn is None else self._conn.info.backend_pid

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a notification; tell whether there may be work
        (a notification, or a connection lost and made anew: a catch-up read is due)."""
        if self._conn is None:
            if time.monotonic() < self._retry_at:
                time.sleep(max(0.0, min(timeout, self._retry_at - time.monotonic())))
                return False
            return self._listen()
        pgconn = self._conn.pgconn
        try:
            if self._pending(pgconn):
                return True
            ready, _, _ = select.select([pgconn.socket], [], [], max(0.0, timeout))
            if not ready:
                return False
            pgconn.consume_input()
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError("the notification connection was closed")
            return self._pending(pgconn)
        except (psycopg.Error, OSError, ValueError):
            # Lost: listen again (now, or after a backoff) and have the worker look for work.
            self._drop()
            self._listen()
            return True

    @staticmethod
    def _pending(pgconn: Any) -> bool:
        found = False
        while pgconn.notifies() is not None:
            found = True
        return found

    def close(self) -> None:
        """Stop listening and close the connection."""
        with contextlib.suppress(psycopg.Error):
            self._drop()
