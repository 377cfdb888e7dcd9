"""Subscriptions: which receiver runs for which events, with which delivery options.

Subscriptions live in ordinary Python modules. A worker finds them through the entry-point group
`evq.subscriptions` and through `--app MODULE` / `EVQ_APP`; importing such a module runs its
`subscribe()` calls and `@subscriber` decorators, which register here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from evq.config import MAX_DURATION_SECONDS
from evq.errors import AppImportError, InvalidInput, InvalidReceiver, UnknownApp
from evq.names import matches, validate_pattern

ENTRY_POINT_GROUP = "evq.subscriptions"
MAX_RETRIES = 10_000


class Receiver(Protocol):
    """A callable that handles an event: `def receiver(event: evq.Event, /) -> None`.

    It may also be an `async def`; the worker awaits it.
    """

    __qualname__: str

    def __call__(self, event: Any, /) -> Any: ...


ReceiverT = TypeVar("ReceiverT", bound=Callable[..., Any])

# The delivery options' defaults, written once: `Subscription`, `subscribe` and `subscriber`
# all read them.
DEFAULT_RETRIES = 5
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_RETRY_BACKOFF = 2.0
DEFAULT_MAX_RETRY_DELAY = 3600.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Subscription:
    """A receiver subscribed to an event pattern, with its delivery options."""

    pattern: str
    receiver: Receiver
    name: str
    retries: int = DEFAULT_RETRIES
    retry_delay: float = DEFAULT_RETRY_DELAY
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY
    jitter: bool = True
    timeout: float | None = None
    dont_retry: tuple[type[BaseException], ...] = ()
    source: str = "python"

    def options(self) -> dict[str, Any]:
        """Return the delivery options as plain JSON-friendly values."""
        return {
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "retry_backoff": self.retry_backoff,
            "max_retry_delay": self.max_retry_delay,
            "jitter": self.jitter,
            "timeout": self.timeout,
            "dont_retry": [f"{t.__module__}.{t.__qualname__}" for t in self.dont_retry],
        }


def subscribe(
    pattern: str,
    /,
    *,
    receiver: Receiver,
    retries: int = DEFAULT_RETRIES,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    retry_backoff: float = DEFAULT_RETRY_BACKOFF,
    max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY,
    jitter: bool = True,
    timeout: float | None = None,
    dont_retry: Sequence[type[BaseException]] = (),
) -> Subscription:
    """Subscribe `receiver` to the events matching `pattern` (`user.created`, `user.*`, `**`).

    A failing attempt is retried `retries` times, the n-th retry after
    `retry_delay * retry_backoff ** (n - 1)` seconds (at most `max_retry_delay`; with `jitter`,
    a random time between half that and that). An exception of a type in `dont_retry` makes the
    delivery a dead letter at once. An attempt running longer than `timeout` seconds fails.
    Subscribing the same receiver to the same pattern again replaces the first subscription.
    """
    subscription = Subscription(
        pattern=validate_pattern(pattern),
        receiver=receiver,
        name=receiver_name(receiver),
        retries=_retries(retries),
        retry_delay=_non_negative("retry_delay", retry_delay),
        retry_backoff=max(1.0, float(retry_backoff)),
        max_retry_delay=_non_negative("max_retry_delay", max_retry_delay),
        jitter=jitter,
        timeout=None if timeout is None else _positive("timeout", timeout),
        dont_retry=tuple(dont_retry),
        source=_registry.source_of(receiver),
    )
    _registry.add(subscription)
    return subscription


def subscriber(
    pattern: str,
    /,
    *,
    retries: int = DEFAULT_RETRIES,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    retry_backoff: float = DEFAULT_RETRY_BACKOFF,
    max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY,
    jitter: bool = True,
    timeout: float | None = None,
    dont_retry: Sequence[type[BaseException]] = (),
) -> Callable[[ReceiverT], ReceiverT]:
    """Decorator form of `subscribe()`: `@evq.subscriber("user.created")`."""

    def decorate(receiver: ReceiverT) -> ReceiverT:
        subscribe(
            pattern,
            receiver=receiver,
            retries=retries,
            retry_delay=retry_delay,
            retry_backoff=retry_backoff,
            max_retry_delay=max_retry_delay,
            jitter=jitter,
            timeout=timeout,
            dont_retry=dont_retry,
        )
        return receiver

    return decorate


def receiver_name(receiver: object, /) -> str:
    """Return `module:qualname`, the name a receiver is stored under in the queue.

    Raises `InvalidReceiver` for a callable the worker could not find again by that name: a
    lambda, a function defined inside another function, a bound method or a callable object.
    """
    module = getattr(receiver, "__module__", None)
    qualname = getattr(receiver, "__qualname__", None)
    if not callable(receiver) or not isinstance(module, str) or not isinstance(qualname, str):
        raise InvalidReceiver(
            f"receiver {receiver!r} must be a module-level function (it has no module:qualname)"
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise InvalidReceiver(
            f"receiver {module}:{qualname} cannot be found by a worker: define it with `def`"
            " at the top level of a module, not as a lambda or inside a function"
        )
    if isinstance(receiver, types.MethodType):
        raise InvalidReceiver(
            f"receiver {module}:{qualname} is a bound method; subscribe a module-level function"
        )
    name = f"{module}:{qualname}"
    if not name.isprintable():  # Lone surrogates and control characters included.
        raise InvalidReceiver(f"receiver {name!a} has a name that cannot be stored as text")
    return name


def subscriptions(pattern: str | None = None) -> list[Subscription]:
    """Return the subscriptions registered in this process, optionally only those whose
    pattern matches the event name `pattern` or equals it."""
    return _registry.all(pattern)


def subscriptions_for(name: str, /) -> list[Subscription]:
    """Return the subscriptions whose pattern matches the event `name`."""
    return _registry.matching(name)


def clear() -> None:
    """Forget every subscription registered in this process (for tests)."""
    _registry.clear()


@dataclasses.dataclass(frozen=True)
class LoadedModule:
    """A subscriptions module the worker imported, and where it was named."""

    module: str
    source: str


def load(apps: Sequence[str] = (), *, entry_points: bool = True) -> list[LoadedModule]:
    """Import the subscription modules of installed packages and of `apps`.

    Raises `AppImportError` naming the module, with its traceback, if one fails to import: a
    broken subscription module must stop a worker, never be skipped silently.
    """
    loaded = []
    if entry_points:
        for entry_point in _entry_points():
            source = f"entry point {entry_point.name}"
            with _registry.importing(source):
                try:
                    entry_point.load()
                except Exception as exc:
                    raise _import_error(entry_point.value, source, exc) from exc
            loaded.append(LoadedModule(entry_point.value, source))
    for app in apps:
        if not all(part.isidentifier() for part in app.split(".")):
            # importlib reads "../x" as a relative import and fails with a TypeError.
            raise UnknownApp(
                f"cannot import --app module {app!r}: not a module name; use a dotted name"
                " like shop.subscriptions, not a path"
            )
        if sys.path[0] != "" and "" not in sys.path:
            # `--app` names modules of the current directory, like `python -m` does.
            sys.path.insert(0, "")
        with _registry.importing("--app"):
            try:
                importlib.import_module(app)
            except ModuleNotFoundError as exc:
                if exc.name is not None and f"{app}.".startswith(f"{exc.name}."):
                    raise UnknownApp(f"cannot import --app module {app!r}: no such module") from exc
                raise _import_error(app, "--app", exc) from exc
            except Exception as exc:
                raise _import_error(app, "--app", exc) from exc
        loaded.append(LoadedModule(app, "--app"))
    return loaded


def loading(source: str) -> contextlib.AbstractContextManager[None]:
    """Within this context, subscriptions made in this thread are listed as coming from
    `source` (`evq list-subscribers`); frameworks use it when they import subscription
    modules."""
    return _registry.importing(source)


def name_sources(finder: Callable[[Receiver], str | None] | None) -> None:
    """Let a framework name the source of subscriptions made outside any module evq loads
    (in Django, an `AppConfig.ready()`): `finder` returns it for a receiver, or None for the
    default, `python`."""
    _registry.finder = finder


def split_apps(values: Sequence[str]) -> list[str]:
    """Return module names from repeated `--app` values and comma-separated `EVQ_APP`."""
    modules: list[str] = []
    for value in values:
        modules.extend(part.strip() for part in value.split(",") if part.strip())
    return modules


def select_receivers(patterns: Sequence[str]) -> frozenset[str] | None:
    """Return the names of the loaded receivers that match one of `patterns`
    (`module:qualname`, where `*` matches any run of characters), or None if no pattern is
    given (every receiver). A pattern that matches no loaded receiver raises
    `InvalidReceiver`: a typo would otherwise leave a worker idle for ever."""
    if not patterns:
        return None
    import fnmatch

    names = sorted({s.name for s in subscriptions()})
    selected: set[str] = set()
    for pattern in patterns:
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise InvalidReceiver(
                f"--receiver {pattern!r} matches none of the loaded receivers"
                f" ({', '.join(names) or 'none loaded'})"
            )
        selected.update(matched)
    return frozenset(selected)


# Private


def _retries(value: int) -> int:
    # Stored with every delivery, as an SQLite integer.
    if type(value) is not int or not 0 <= value <= MAX_RETRIES:
        raise InvalidInput(f"retries must be an int from 0 to {MAX_RETRIES:,}, got {value!r}")
    return value


def _non_negative(option: str, value: float) -> Any:
    _check_seconds(option, value)
    if value < 0:
        raise InvalidInput(f"{option} must not be negative, got {value}")
    return value


def _positive(option: str, value: float) -> float:
    _check_seconds(option, value)
    if value <= 0:
        raise InvalidInput(f"{option} must be positive, got {value}")
    return float(value)


def _check_seconds(option: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{option} must be a number of seconds, got {value!r}")
    if not value <= MAX_DURATION_SECONDS:  # NaN too
        raise InvalidInput(f"{option} must be at most 36500 days (a hundred years), got {value}")


def _import_error(module: str, source: str, exc: BaseException) -> AppImportError:
    details = "".join(traceback.format_exception(exc)).rstrip()
    error = AppImportError(f"cannot import subscriptions module {module!r} ({source}): {exc!r}")
    error.traceback = details
    return error


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: dict[tuple[str, str], Subscription] = {}
        self._source = threading.local()
        self.finder: Callable[[Receiver], str | None] | None = None

    def source_of(self, receiver: Receiver) -> str:
        source = getattr(self._source, "value", None)
        if source is None and self.finder is not None:
            source = self.finder(receiver)
        return source or "python"

    @contextlib.contextmanager
    def importing(self, source: str) -> Iterator[None]:
        previous = getattr(self._source, "value", None)
        self._source.value = source
        try:
            yield
        finally:
            self._source.value = previous

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            for other in self._subscriptions.values():
                # A receiver gets one delivery per event, however many of its patterns match,
                # so all its subscriptions must agree on how that delivery is retried.
                if other.name == subscription.name and other.options() != subscription.options():
                    raise InvalidInput(
                        f"receiver {subscription.name} is already subscribed to"
                        f" {other.pattern!r} with other delivery options; give every"
                        " subscription of a receiver the same options"
                    )
            self._subscriptions[(subscription.pattern, subscription.name)] = subscription

    def all(self, pattern: str | None) -> list[Subscription]:
        with self._lock:
            items = list(self._subscriptions.values())
        if pattern is not None:
            items = [s for s in items if s.pattern == pattern or matches(s.pattern, pattern)]
        return items

    def matching(self, name: str) -> list[Subscription]:
        with self._lock:
            items = list(self._subscriptions.values())
        return [s for s in items if matches(s.pattern, name)]

    def clear(self) -> None:
        with self._lock:
            self._subscriptions.clear()


_registry = _Registry()
