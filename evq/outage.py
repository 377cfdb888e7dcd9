"""How a worker rides out a queue it cannot use for a while: one log line per outage, retries
with backoff, and a clear end when it must give up.

A fault that can pass (a full disk, a file locked for minutes, a server restarting) is logged
once when it starts and once when the queue works again, and retried with exponential backoff
meanwhile, however many threads hit it. A damaged queue (`QueueUnusable`) cannot mend itself:
the worker stops at once, as does a `--burst` worker whose outage outlasts its patience. The
reason travels to the process that started the worker, even from a forked process worker, so
that `evq worker` ends with one line and exit code 1.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from typing import Any

from evq.errors import QueueUnusable, StorageError

logger = logging.getLogger("evq.worker")

FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0
# A --burst worker gives up once an outage has lasted this long: it is run by cron or CI, where
# waiting for an operator helps nobody.
BURST_PATIENCE_SECONDS = 10.0
_REASON_BYTES = 1000


class Outage:
    """The state of one worker run's access to its queue, shared by its threads and (through
    shared memory made before the fork) its processes."""

    def __init__(self, *, burst: bool) -> None:
        self.burst = burst
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0
        # Set by any process of the run when it must stop; read by the one that started it.
        self._fatal: Any = multiprocessing.Array("c", _REASON_BYTES, lock=True)

    def after_fork(self) -> None:
        """Start afresh in a forked process (another thread may have held the lock)."""
        self._lock = threading.Lock()
        self._since = None
        self._failures = 0

    def failed(self, exc: StorageError, stop_flag: threading.Event | None) -> float:
        """Note that using the queue failed with `exc`; return how long to wait before trying
        again. Logs the first failure of an outage; stops the run (`stop_flag`) when the queue
        is damaged, or when a burst's outage outlasts `BURST_PATIENCE_SECONDS`."""
        with self._lock:
            now = time.monotonic()
            if self._since is None:
                self._since = now
                logger.error("cannot use the queue: %s; retrying with backoff", exc)
            self._failures += 1
            backoff = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2.0 ** (self._failures - 1))
            if isinstance(exc, QueueUnusable):
                self._give_up(str(exc), stop_flag)
            elif self.burst and now - self._since >= BURST_PATIENCE_SECONDS:
                self._give_up(
                    f"{exc} (gave up after {now - self._since:.0f} s of retries)", stop_flag
                )
            return backoff

    def recovered(self) -> None:
        """Note that using the queue worked; log the end of an outage if there was one."""
        if self._since is None:  # the usual case, without taking the lock
            return
        with self._lock:
            if self._since is not None:
                logger.warning(
                    "the queue works again after %.1f s of errors",
                    time.monotonic() - self._since,
                )
                self._since = None
                self._failures = 0

    def _give_up(self, reason: str, stop_flag: threading.Event | None) -> None:
        with self._fatal.get_lock():
            if not self._fatal.value:
                data = reason.encode("utf-8", "replace")[: _REASON_BYTES - 1]
                self._fatal.value = data
        if stop_flag is not None:
            stop_flag.set()

    @property
    def fatal(self) -> str | None:
        """Why the run had to stop, if it had to."""
        value = bytes(self._fatal.value)
        return value.decode("utf-8", "replace") if value else None
