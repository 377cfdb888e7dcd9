"""One delivery attempt: call a receiver with its event and decide what happens next.

The outcome (done, retry at a time, dead letter) is returned, not stored: the worker records it
together with its next lease, in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from evq import config
from evq.errors import InvalidPayload, Retry
from evq.event import Event, timestamp_to_datetime
from evq.headers import decode_headers
from evq.payload import decode_payload
from evq.storage.contract import Lease, Outcome
from evq.subscriptions import Subscription


class DeliveryTimeout(Exception):
    """Raised inside a receiver that ran longer than its subscription's `timeout`."""


def run(
    lease: Lease, subscription: Subscription | None, *, clock: Callable[[], float] = time.time
) -> Outcome:
    """Run one leased attempt and return its outcome, whatever happens: a delivery that
    cannot even be attempted (a damaged row, a bug in evq) is a dead letter. The worker and
    `evq.testing` both deliver through here; `clock` tells the time of the outcome and of its
    retry (a test's clock may run ahead of the process's)."""
    try:
        return attempt(lease, subscription, clock=clock)
    except Exception as exc:
        # Without an outcome, the worker's heartbeat would keep this lease alive for ever.
        return undeliverable(lease, exc, clock=clock)


_around_attempts: list[Callable[[], object]] = []


def call_around_attempts(callback: Callable[[], object]) -> None:
    """Call `callback` before and after every delivery attempt of this process's worker
    (`evq.contrib.django` closes the database connections Django would close at the end of a
    request). An exception from it before the receiver runs fails the attempt (it is retried)."""
    if callback not in _around_attempts:
        _around_attempts.append(callback)


def attempt(
    lease: Lease, subscription: Subscription | None, *, clock: Callable[[], float] = time.time
) -> Outcome:
    """Run one attempt of `lease` and return its outcome."""
    if not _around_attempts:
        return _attempt(lease, subscription, clock)
    try:
        for callback in _around_attempts:
            callback()
    except Exception as exc:
        if subscription is None:
            return _attempt(lease, subscription, clock)
        return failure(lease, subscription, exc, started=clock(), clock=clock)
    try:
        return _attempt(lease, subscription, clock)
    finally:
        for callback in _around_attempts:
            with contextlib.suppress(Exception):
                callback()


def event_of(lease: Lease, payload: dict[str, Any]) -> Event:
    """The event a receiver is given for `lease`, whose payload decoded to `payload`."""
    return Event(
        id=lease.event_id,
        name=lease.name,
        payload=payload,
        published_at=timestamp_to_datetime(lease.published_at),
        attempt=lease.attempt - lease.attempt_base,
        headers=decode_headers(lease.headers),
    )


def _attempt(
    lease: Lease, subscription: Subscription | None, clock: Callable[[], float]
) -> Outcome:
    if subscription is None:
        error = f"receiver {lease.receiver} is not registered with the worker"
        return _dead(lease, None, error, clock)
    try:
        payload = decode_payload(lease.payload)
    except InvalidPayload as exc:
        return _dead(lease, None, str(exc), clock)
    event = event_of(lease, payload)
    started = clock()
    try:
        if config.tracing_enabled():
            from evq.tracing import consuming  # the otel extra, only when tracing

            with consuming(lease, event.headers):
                _call(subscription, event)
        else:
            _call(subscription, event)
    except KeyboardInterrupt:
        # The worker is stopping now: give the delivery back for another worker to take.
        return Outcome(lease, "release", started, clock())
    except BaseException as exc:
        return failure(lease, subscription, exc, started=started, clock=clock)
    return Outcome(lease, "done", started, clock())


def failure(
    lease: Lease,
    subscription: Subscription,
    exc: BaseException,
    *,
    started: float | None,
    clock: Callable[[], float] = time.time,
) -> Outcome:
    """Return the outcome of an attempt that raised `exc`: a retry or a dead letter."""
    now = clock()
    error = _describe(exc, subscription)
    details = _text("".join(traceback.format_exception(exc)))
    failures = lease.failures + 1
    if isinstance(exc, subscription.dont_retry):
        return Outcome(lease, "dead", started, now, error=error, traceback=details)
    if failures > subscription.retries:
        if subscription.retries:
            error = f"{error} (gave up after {failures} failed attempts)"
        return Outcome(lease, "dead", started, now, error=error, traceback=details)
    if isinstance(exc, Retry) and exc.delay is not None:
        delay = max(0.0, exc.delay)
    else:
        delay = retry_delay(subscription, failures)
    return Outcome(
        lease, "retry", started, now, retry_at=now + delay, error=error, traceback=details
    )


def undeliverable(
    lease: Lease, exc: Exception, *, clock: Callable[[], float] = time.time
) -> Outcome:
    """Return the dead letter of a delivery that failed before its receiver was called."""
    error = f"cannot deliver: {_describe_error(exc)}"
    details = _text("".join(traceback.format_exception(exc)))
    return Outcome(
        lease, "dead", None, clock(), error=error, traceback=details, counts_as_failure=False
    )


def retry_delay(subscription: Subscription, failures: int) -> float:
    """Return the wait before the retry that follows the `failures`-th failed attempt."""
    try:
        delay = subscription.retry_delay * subscription.retry_backoff ** (failures - 1)
    except OverflowError:  # thousands of retries: long past the cap anyway
        delay = subscription.max_retry_delay
    delay = min(delay, subscription.max_retry_delay)
    if subscription.jitter:
        # "Equal jitter": never less than half the backoff, so retries stay spread out.
        delay = delay / 2 + random.uniform(0, delay / 2)
    return delay


# Private


def _dead(lease: Lease, started: float | None, error: str, clock: Callable[[], float]) -> Outcome:
    return Outcome(lease, "dead", started, clock(), error=error, counts_as_failure=False)


def _describe(exc: BaseException, subscription: Subscription) -> str:
    if isinstance(exc, DeliveryTimeout):
        return f"timed out after {subscription.timeout:g}s"
    if isinstance(exc, Retry):
        return "Retry: " + _describe_error(exc).split(": ", 1)[-1]
    return _describe_error(exc)


def _describe_error(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:  # a receiver's exception whose __str__ itself fails
        message = "<the exception's message could not be read>"
    name = type(exc).__qualname__
    return _text(f"{name}: {message}" if message else name)


def _text(text: str) -> str:
    # An error message may hold lone surrogates (say, from decoding bad input); SQLite only
    # stores valid UTF-8, and an outcome that cannot be written must never wedge a worker.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _call(subscription: Subscription, event: Event) -> None:
    receiver: Callable[..., Any] = subscription.receiver
    timeout = subscription.timeout
    if inspect.iscoroutinefunction(receiver):
        coroutine = receiver(event)
        if timeout is None:
            asyncio.run(coroutine)
        else:
            asyncio.run(_with_timeout(coroutine, timeout))
        return
    if timeout is None:
        result = receiver(event)
    elif threading.current_thread() is threading.main_thread():
        result = _call_with_alarm(receiver, event, timeout)
    else:
        result = _call_with_watchdog(receiver, event, timeout)
    if inspect.isawaitable(result):
        asyncio.run(_with_timeout(result, timeout) if timeout else _await(result))


async def _await(awaitable: Any) -> None:
    await awaitable


async def _with_timeout(awaitable: Any, timeout: float) -> None:
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            await awaitable
    except TimeoutError:
        if scope.expired():
            raise DeliveryTimeout(f"timed out after {timeout:g}s") from None
        raise  # the receiver's own timeout (an HTTP call, say): its error, its traceback


def _call_with_alarm(receiver: Callable[..., Any], event: Event, timeout: float) -> Any:
    # In a process's main thread (process workers), SIGALRM interrupts even a blocking call.
    def expire(signum: int, frame: Any) -> None:
        raise DeliveryTimeout(f"timed out after {timeout:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return receiver(event)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _call_with_watchdog(receiver: Callable[..., Any], event: Event, timeout: float) -> Any:
    # A thread cannot be signalled: raise the timeout in it asynchronously, as Dramatiq's time
    # limit does. It lands at the receiver's next Python instruction.
    watchdog = _Watchdog(threading.get_ident(), timeout)
    watchdog.start()
    try:
        result = receiver(event)
    finally:
        fired = watchdog.disarm()
    if fired:
        # The timer fired just as the receiver returned; its exception was cleared unraised.
        raise DeliveryTimeout(f"timed out after {timeout:g}s")
    return result


class _Watchdog:
    def __init__(self, thread_id: int, timeout: float) -> None:
        self._thread_id = thread_id
        self._timeout = timeout
        self._lock = threading.Lock()
        self._armed = True
        self._fired = False
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._armed:
                self._fired = True
                _set_async_exc(self._thread_id, DeliveryTimeout)

    def disarm(self) -> bool:
        with self._lock:
            self._armed = False
            self._timer.cancel()
            if self._fired:
                # Clear the exception if it is still pending rather than raised.
                _set_async_exc(self._thread_id, None)
            return self._fired


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )
