"""How an idle worker learns, within a millisecond or two, that there may be new work.

A commit by any process shows in SQLite's `PRAGMA data_version`, read on a connection of the
watcher's own (so that commits by the worker's own connection count too). Reading it often
costs CPU even when nothing happens, so on Linux the watcher sleeps in inotify until the queue's
write-ahead log is written, and only then reads `data_version`, every millisecond until the
commit is visible (SQLite makes it visible after syncing the log and updating its index).
Elsewhere, or if inotify cannot be had, it polls `data_version` every few milliseconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import time

from evq.storage.sqlite.connection import Connection

# Without inotify: how often to look. 5 ms keeps latency low at about 1-3 % of a core.
POLL_SECONDS = 0.005
# After a write to the log: how long to wait for the commit to become visible.
SETTLE_SECONDS = 0.05
SETTLE_STEP_SECONDS = 0.001

_IN_MODIFY = 0x00000002
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000


class ChangeWatcher:
    """Waits for commits to a queue file by other connections."""

    def __init__(self, path: str) -> None:
        self._connection = Connection(path, sync="normal", create=True)
        self._version = self._data_version()
        self._inotify = _Inotify.watch(path + "-wal")

    def _data_version(self) -> int:
        # Changes when another connection commits: a cheap way to notice new events.
        return int(self._connection.fetch("PRAGMA data_version")[0][0])

    @property
    def uses_inotify(self) -> bool:
        """Whether waits sleep in inotify rather than poll."""
        return self._inotify is not None

    def changed(self) -> bool:
        """Tell whether another connection committed since the last call."""
        version = self._data_version()
        if version != self._version:
            self._version = version
            return True
        return False

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a commit; tell whether one happened."""
        if self.changed():
            return True
        if self._inotify is None:
            time.sleep(min(timeout, POLL_SECONDS))
            return self.changed()
        if not self._inotify.wait(timeout):
            return False
        settle = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < settle:
            if self.changed():
                return True
            time.sleep(SETTLE_STEP_SECONDS)
        return False

    def close(self) -> None:
        """Release the watcher's connection and inotify descriptor."""
        self._connection.close()
        if self._inotify is not None:
            self._inotify.close()


class _Inotify:
    """A minimal inotify watch for IN_MODIFY on one file, through libc (Linux only)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    @classmethod
    def watch(cls, path: str) -> _Inotify | None:
        if not hasattr(select, "poll") or not os.path.exists(path):
            return None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        if libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY) < 0:
            os.close(fd)
            return None
        return cls(fd)

    def wait(self, timeout: float) -> bool:
        """Wait for writes to the file; drain the events; tell whether there were any."""
        if not self._poll.poll(max(0, int(timeout * 1000))):
            return False
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        os.close(self._fd)
