"""How a worker rides out a queue it cannot use for a while: one log line per outage, retries
with backoff, and a clear end when it must give up.

A fault that can pass (a full disk, a file locked for minutes, a server restarting) is logged
once when it starts and once when the queue works again, and retried with exponential backoff
meanwhile, however many threads hit it. The queue works again once writes have kept working
for `STEADY_SECONDS`: on a nearly full disk small writes get through between failures, and
each of those is not the end of an outage (nor the next failure the start of another). A
damaged queue (`QueueUnusable`) cannot mend itself: the worker stops at once, as does a
`--burst` worker whose outage outlasts its patience. The reason travels to the process that
started the worker, even from a forked process worker, so that `evq worker` ends with one
line and exit code 1.
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
# How long writes must keep working after an outage before it is over.
STEADY_SECONDS = 1.0
_REASON_BYTES = 1000


class Outage:
    """The state of one worker run's access to its queue, in shared memory made before any
    fork, so that its threads and its processes see one outage (and log it once)."""

    def __init__(self, *, burst: bool) -> None:
        self.burst = burst
        # One lock (a semaphore, valid across forks) guards the three values.
        self._lock = multiprocessing.Lock()
        self._since: Any = multiprocessing.Value("d", 0.0, lock=False)  # 0: no outage
        self._failures: Any = multiprocessing.Value("i", 0, lock=False)
        # When writes started working again during the outage (0: they fail still).
        self._working_since: Any = multiprocessing.Value("d", 0.0, lock=False)
        # Set by any process of the run when it must stop; read by the one that started it.
        self._fatal: Any = multiprocessing.Array("c", _REASON_BYTES, lock=False)

    def failed(self, exc: StorageError, stop_flag: threading.Event | None) -> float:
        """Note that using the queue failed with `exc`; return how long to wait before trying
        again. Logs the first failure of an outage; stops the run (`stop_flag`) when the queue
        is damaged, or when a burst's outage outlasts `BURST_PATIENCE_SECONDS`."""
        with self._lock:
            now = time.monotonic()
            if not self._since.value:
                self._since.value = now
                logger.error("cannot use the queue: %s; retrying with backoff", exc)
            self._working_since.value = 0.0  # not over yet
            self._failures.value += 1
            failures: int = self._failures.value
            lasted = now - self._since.value
            if isinstance(exc, QueueUnusable):
                self._give_up(str(exc), stop_flag)
            elif self.burst and lasted >= BURST_PATIENCE_SECONDS:
                self._give_up(f"{exc} (gave up after {lasted:.0f} s of retries)", stop_flag)
        return min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2.0 ** min(failures - 1, 32))

    def recovered(self) -> None:
        """Note that a write to the queue committed; log the end of an outage if there was
        one and writes have kept working for `STEADY_SECONDS`. (Reads may work while writes
        fail, on a full disk: only a write ends it.)"""
        if not self._since.value:  # the usual case, without taking the lock
            return
        with self._lock:
            if not self._since.value:
                return
            now = time.monotonic()
            if not self._working_since.value:
                self._working_since.value = now
            elif now - self._working_since.value >= STEADY_SECONDS:
                self._end()

    def ended(self) -> None:
        """The run is over: an outage whose writes were working again is over too."""
        with self._lock:
            if self._since.value and self._working_since.value:
                self._end()

    def _end(self) -> None:
        logger.warning(
            "the queue works again after %.1f s of errors",
            self._working_since.value - self._since.value,
        )
        self._since.value = 0.0
        self._failures.value = 0
        self._working_since.value = 0.0

    def _give_up(self, reason: str, stop_flag: threading.Event | None) -> None:
        if not self._fatal.value:
            self._fatal.value = reason.encode("utf-8", "replace")[: _REASON_BYTES - 1]
        if stop_flag is not None:
            stop_flag.set()

    @property
    def fatal(self) -> str | None:
        """Why the run had to stop, if it had to."""
        with self._lock:
            value = bytes(self._fatal.value)
        return value.decode("utf-8", "replace") if value else None
