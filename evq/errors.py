"""Exception types raised by evq.

Library code raises these; only the command line turns them into one line on stderr and an exit
code. Every error that a user can fix by changing their input derives from `InvalidInput` (exit
code 2 at the command line); everything else derives from `EvqError` (exit code 1).
"""

from __future__ import annotations


class EvqError(Exception):
    """Base class of every error evq raises on purpose."""


class InvalidInput(EvqError, ValueError):
    """The caller passed something evq cannot accept; nothing was stored."""

    #: Where one of many events was bad, the index of that event among them.
    position: int | None = None


class InvalidEventName(InvalidInput):
    """An event name that is not dot-separated segments of letters, digits, `_` and `-`."""


class InvalidPattern(InvalidInput):
    """A subscription pattern that is not a valid name, or uses `*`/`**` wrongly."""


class InvalidPayload(InvalidInput):
    """A payload that is not a JSON object that round-trips through JSON exactly."""


class PayloadTooLarge(InvalidPayload):
    """A payload whose JSON encoding is over the configured size limit."""


class InvalidDuration(InvalidInput):
    """A duration or point in time that cannot be parsed (`30s`, `5m`, ISO 8601, ...)."""


class InvalidReceiver(InvalidInput):
    """A receiver that the worker could not find again by its `module:qualname`."""


class InvalidStorageURL(InvalidInput):
    """A storage URL or path that evq cannot use (unknown scheme, missing directory, ...)."""


class AppImportError(EvqError):
    """A subscriptions module (from `--app` or an entry point) that raised while importing."""

    traceback: str = ""


class UnknownApp(AppImportError, InvalidInput):
    """An `--app` module that does not exist."""


class NoSubscriptions(InvalidInput):
    """A worker was started without any subscription to deliver to."""


class UnknownBackend(InvalidStorageURL):
    """A storage URL whose scheme names no backend, or one whose driver is not installed."""


class OutboxUnsupported(InvalidInput):
    """`publish(..., connection=...)` on a backend (or a connection) that cannot write inside
    the caller's transaction."""


class MissingExtra(InvalidInput):
    """An option that needs an optional extra which is not installed (`pip install 'evq[...]'`)."""


class MetricsPortUnavailable(InvalidInput):
    """`evq worker --metrics-port` names a port that cannot be listened on (one in use)."""


class StorageError(EvqError):
    """The queue's storage failed (disk full, corrupt file, ...)."""


class StorageFull(StorageError):
    """The queue's storage has no room left (a full disk): smaller writes may still fit."""


class QueueUnusable(StorageError):
    """A queue that cannot be used at all: a file that is not a queue, or a damaged one."""


class QueueNotFound(InvalidInput):
    """A read-only command pointed at a queue file that does not exist."""


class NotFound(InvalidInput):
    """An event or dead letter id that is not in the queue."""


class Retry(Exception):
    """Raise from a receiver to ask for another attempt, optionally after `delay` seconds.

    It counts as one of the subscription's `retries` (so a receiver cannot loop forever), but
    it is logged as a requested retry, not as an error.
    """

    def __init__(self, reason: str = "", *, delay: float | None = None) -> None:
        super().__init__(reason or "retry requested")
        self.delay = delay
