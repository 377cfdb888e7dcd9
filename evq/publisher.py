"""Publishing: validate an event, store it durably, return its id.

Publishing needs no subscriber code: the worker decides who receives an event when it fans it
out. Only the standard library is imported here, so that `evq publish` starts fast.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import operator
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from evq import config
from evq.errors import InvalidInput, OutboxUnsupported
from evq.ids import event_id_floor, new_event_id, new_event_ids
from evq.names import validate_name
from evq.payload import encode_decoded_payloads, encode_payload, encode_payloads
from evq.storage import open_queue
from evq.storage.publishing import NewEvent

if TYPE_CHECKING:
    from evq.storage import Queue

Delay = float | int | dt.timedelta | None


def publish(
    name: str,
    /,
    *,
    payload: dict[str, Any],
    delay: Delay = None,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
    connection: Any = None,
    on_commit: bool = False,
) -> str:
    """Publish the event `name` with `payload` for every receiver subscribed to it.

    Returns the event id once the event is committed to disk. `delay` (seconds or a timedelta)
    holds delivery back. With `key`, an event already published with the same key is not
    published again: its id is returned. `headers` is string metadata for the event (trace
    context, a correlation id), with CloudEvents attribute names (see `evq.headers`). With
    `connection`, an open connection to the queue's database (for SQLite, a `sqlite3` connection
    to the queue file), the event is written inside the caller's current transaction and commits
    or rolls back with it (the transactional outbox); evq then neither commits nor rolls back. A
    backend that cannot do that raises `OutboxUnsupported`.

    In a framework whose transactions evq joins (Django, with `evq.contrib.django` installed),
    `publish` writes through the framework's connection when the queue is in its database; with
    `on_commit=True` the event is validated now and stored only when the framework's current
    transaction commits (at once outside one). That leaves a window: a crash between the commit
    and the store loses the event, and a store that fails then (the queue unreachable) raises
    in the committing code, after the commit. With `key`, the id returned is the new event's,
    even if an event with that key is found when it is stored.
    """
    event = prepare(name, payload=payload, delay=delay, key=key, headers=headers)
    if on_commit:
        return _store([event], _store_on_commit)[0]
    if connection is None and _transactions is not None:
        return _store([event], _transactions.publish)[0]
    store = queue()
    if connection is None:
        return _store([event], store.publish)[0]
    if not store.capabilities.outbox:
        raise OutboxUnsupported(
            f"the {store.backend} backend cannot write inside your transaction (it has no"
            " transactional outbox): publish after your commit, or keep the queue in your"
            " database"
        )
    return _store([event], lambda events: store.publish_within(connection, events))[0]


def publish_many(
    events: Iterable[Mapping[str, Any]],
    /,
    *,
    batch_size: int = 1000,
    on_commit: bool = False,
) -> list[str]:
    """Publish many events, each a mapping with `name`, `payload` and optionally `key`,
    `delay` and `headers`; return their ids in order.

    Every event is validated before anything is stored (`batch_size` at a time): one bad
    event raises `InvalidInput` (naming its position) and stores nothing. All are then stored
    in one transaction: a failure there (`StorageError`), or the process killed meanwhile,
    stores none of them, so the same call can simply be made again. Inside a framework's
    transaction, and with `on_commit`, they are stored as `publish` stores one event.
    """
    if not isinstance(events, Iterable) or isinstance(events, (str, bytes, Mapping)):
        raise InvalidInput(
            f"events must be a list (or another iterable) of mappings, not {type(events).__name__}"
        )
    try:
        batches = prepare_many(list(events), batch_size=batch_size)
    except InvalidInput as exc:
        if exc.position is None:
            raise
        raise type(exc)(f"event {exc.position + 1}: {exc}") from None
    prepared = [event for batch in batches for event in batch]
    if on_commit:
        return _store(prepared, _store_on_commit)
    if _transactions is not None:
        return _store(prepared, _transactions.publish)
    return _store(prepared, queue().publish)


def store(events: list[NewEvent]) -> list[str]:
    """Store prepared events (`prepare`, `prepare_many`) in this process's queue, in one
    transaction, inside a span when tracing is on; return their ids."""
    return _store(events, queue().publish)


def store_stream(batches: Iterable[list[NewEvent]]) -> list[str]:
    """Store batches of prepared events in this process's queue, in one transaction, as
    `batches` yields them; return their ids. A backend that can (a `StreamingQueue`:
    PostgreSQL) stores each batch while the next is prepared; on the others, and inside a
    span when tracing is on, every batch is gathered first. An exception raised by `batches`
    stores none of them."""
    handle = queue()
    stream: Callable[[Iterable[list[NewEvent]]], list[str]] | None = getattr(
        handle, "publish_stream", None
    )
    if stream is None or config.tracing_enabled():
        return store([event for batch in batches for event in batch])
    return stream(batches)


def _store(events: list[NewEvent], store: Callable[[list[NewEvent]], list[str]]) -> list[str]:
    """Store prepared events with `store`, inside a span when tracing is on."""
    if events and config.tracing_enabled():
        from evq.tracing import traced_publish  # the otel extra, only when tracing

        return traced_publish(events, store)
    return store(events)


class Transactions(Protocol):
    """How `publish` joins the transactions of a framework; `evq.contrib.django` installs
    one with `join_transactions`."""

    def publish(self, events: list[NewEvent], /) -> list[str]:
        """Store `events` in the framework's current transaction when the queue is in its
        database (committing at once outside one), else as `queue().publish` does."""
        ...

    def on_commit(self, events: list[NewEvent], /) -> None:
        """Store `events` when the framework's current transaction commits (at once outside
        one); never if it rolls back."""
        ...


_transactions: Transactions | None = None


def join_transactions(transactions: Transactions | None) -> None:
    """Make `publish` and `publish_many` join `transactions` in this process (None: stop)."""
    global _transactions
    _transactions = transactions


def _store_on_commit(events: list[NewEvent]) -> list[str]:
    if _transactions is None:
        raise InvalidInput(
            "on_commit=True needs a framework whose transactions evq joins: add"
            " 'evq.contrib.django' to INSTALLED_APPS"
        )
    _transactions.on_commit(events)
    return [event.id for event in events]


def prepare(
    name: str,
    /,
    *,
    payload: dict[str, Any],
    delay: Delay = None,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
    now: float | None = None,
) -> NewEvent:
    """Validate an event and return it ready to store; raise `InvalidInput` if it is bad."""
    validate_name(name)
    text = encode_payload(payload, max_bytes=config.current().max_payload_bytes)
    if key is not None:
        _check_key(key)
    header_text = None if headers is None else _encode_headers(headers)
    published_at = time.time() if now is None else now
    event_id = new_event_id()
    if now is not None:
        # An event published "as if" at `now` gets an id of that time too: time ranges are
        # looked up through the id index (its first 10 characters are the millisecond).
        event_id = event_id_floor(now)[:10] + event_id[10:]
    return NewEvent(
        id=event_id,
        name=name,
        payload=text,
        published_at=published_at,
        due_at=published_at + delay_seconds(delay),
        key=key,
        headers=header_text,
    )


def delay_seconds(delay: Delay) -> float:
    """Return a delay given as seconds or a timedelta as seconds; reject negative delays and
    delays over ten years (`config.MAX_DELAY_SECONDS`), whose due times no reader could show."""
    if delay is None:
        return 0.0
    if isinstance(delay, dt.timedelta):
        seconds = delay.total_seconds()
    elif _is_real(delay):
        try:
            seconds = float(delay)
        except OverflowError:
            seconds = math.inf
    else:
        raise InvalidInput(f"delay must be a number of seconds, not {_shown(delay)}")
    if not seconds >= 0:
        raise InvalidInput(f"delay must be zero or more seconds, got {_shown(delay)}")
    if seconds == math.inf:
        raise InvalidInput(f"delay must be a finite number of seconds, got {_shown(delay)}")
    if seconds > config.MAX_DELAY_SECONDS:
        raise InvalidInput(
            f"delay must be at most {config.MAX_DELAY_SECONDS:.0f} seconds (ten years),"
            f" got {_shown(delay)}"
        )
    return seconds


def _shown(value: object) -> str:
    """`repr(value)`, cut short so that an error message stays readable."""
    try:
        text = repr(value)
    except ValueError:  # An int too long to convert to text.
        return "a number too large to show"
    return text if len(text) <= 40 else text[:39] + "…"


def _is_real(value: object) -> bool:
    """Whether `value` is a real number (int, float, Fraction, numpy's...), but not a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    import numbers  # Only for the rare other kinds: publishing must start fast.

    return isinstance(value, numbers.Real)


_queues: dict[str, Queue] = {}
_queues_lock = threading.Lock()


def queue() -> Queue:
    """Return this process's handle on the queue named by the current settings."""
    url = config.current().url
    with _queues_lock:
        if url not in _queues:
            if _transactions is None and "django.conf" in sys.modules:
                # A Django project that set EVQ but forgot the app must not publish elsewhere.
                from evq.contrib.django.settings import check_app_installed

                check_app_installed()
            _queues[url] = open_queue(url)
        return _queues[url]


def forget_queue(url: str) -> None:
    """Close and forget this process's handle on the queue at `url`, if it has one."""
    with _queues_lock:
        handle = _queues.pop(url, None)
    if handle is not None:
        handle.close()


def close_queues() -> None:
    """Close this process's handles on queues (the next publish opens a new one): frameworks
    call it before the database that holds the queue is dropped, as test runners do."""
    with _queues_lock:
        handles = list(_queues.values())
        _queues.clear()
    for handle in handles:
        handle.close()


def prepare_many(
    items: list[Any], /, *, delay: Delay = None, batch_size: int = 1000
) -> list[list[NewEvent]]:
    """Validate events given as mappings with `name`, `payload` and optionally `key` and
    `delay` (which overrides the `delay` given here), as `publish_many` takes them; return
    them ready to store, `batch_size` at a time.

    The first bad event raises `InvalidInput` with its index in `items` as `position`. Each
    batch is checked at once (see `encode_payloads`): per event, that costs a fraction of
    `prepare`.
    """
    return _prepare_batches(items, delay, batch_size, encode_payloads)


def prepare_decoded(
    items: list[Any], /, *, delay: Delay = None, batch_size: int = 1000
) -> list[list[NewEvent]]:
    """`prepare_many` for events `json` has just decoded from text, as `evq publish --jsonl`
    reads them: their payloads round-trip by construction, so they are checked as
    `encode_decoded_payloads` checks them, in a tenth less time."""
    return _prepare_batches(items, delay, batch_size, encode_decoded_payloads)


def _prepare_batches(
    items: list[Any], delay: Delay, batch_size: int, encode: _Encode
) -> list[list[NewEvent]]:
    if type(batch_size) is not int:
        raise InvalidInput(f"batch_size must be an int, got {_shown(batch_size)}")
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, got {batch_size!r}")
    max_bytes = config.current().max_payload_bytes
    due_in = delay_seconds(delay)
    batches = []
    for start in range(0, len(items), batch_size):
        try:
            batch = items[start : start + batch_size]
            batches.append(_prepare_batch(batch, due_in, max_bytes, encode))
        except InvalidInput as exc:
            if exc.position is not None:
                exc.position += start
            raise
    return batches


def _prepare_batch(
    items: list[Any], due_in: float, max_bytes: int, encode: _Encode
) -> list[NewEvent]:
    now = time.time()
    fields = _plain_fields(items, now, now + due_in)
    if fields is None:
        fields = _checked_fields(items, now, now + due_in, max_bytes)
    names, payloads, keys, dues, headers = fields
    texts = encode(payloads, max_bytes=max_bytes)
    ids = new_event_ids(len(texts))
    # What NewEvent._make does, less its Python frame and length check (zip makes each
    # tuple the right length).
    return list(
        map(
            tuple.__new__,
            itertools.repeat(NewEvent),
            zip(ids, names, texts, itertools.repeat(now), dues, keys, headers or _NO_HEADERS),
        )
    )


_NO_HEADERS = itertools.repeat(None)


class _Encode(Protocol):
    def __call__(self, payloads: list[object], /, *, max_bytes: int) -> list[str]: ...


class _Fields(NamedTuple):
    names: list[str]
    payloads: list[object]
    keys: list[str | None]
    dues: list[float]
    # None when no event has headers: the common case costs nothing.
    headers: list[str | None] | None


def _plain_fields(items: list[Any], now: float, default_due: float) -> _Fields | None:
    """The fields of `items` if every one is a dict of known fields with a valid name, key
    and delay, else None. The common case, checked a column at a time at C speed."""
    if not set(map(type, items)) <= {dict}:
        return None
    # The commonest batch (every `--jsonl` line of a plain export): a name and a payload only.
    plain = all(map(operator.eq, map(dict.keys, items), itertools.repeat(_NAME_AND_PAYLOAD)))
    if not plain and not all(map(_ITEM_FIELDS.issuperset, items)):
        return None
    try:
        names = list(map(_NAME, items))
        if not set(map(type, names)) <= {str}:
            return None
        # Checked once per distinct value (equal means the same: every one is a str).
        for name in set(names):
            validate_name(name)
        if plain:
            nothing: list[str | None] = [None] * len(items)
            payloads = list(map(_GIVEN_PAYLOAD, items))
            return _Fields(names, payloads, nothing, [default_due] * len(items), None)
        keys = list(map(_KEY, items))
        if not set(map(type, keys)) <= {str, type(None)}:
            return None
        for key in set(keys) - {None}:
            _check_key(key)
        if any(map(operator.contains, items, itertools.repeat("delay"))):
            dues = [
                now + delay_seconds(item["delay"]) if "delay" in item else default_due
                for item in items
            ]
        else:
            dues = [default_due] * len(items)
        headers = None
        if any(map(operator.contains, items, itertools.repeat("headers"))):
            headers = [
                _encode_headers(item["headers"]) if "headers" in item else None for item in items
            ]
    except (KeyError, TypeError, InvalidInput):
        return None
    return _Fields(names, list(map(_PAYLOAD, items)), keys, dues, headers)


def _checked_fields(items: list[Any], now: float, default_due: float, max_bytes: int) -> _Fields:
    """The fields of `items`, checked one at a time to name the first bad item."""
    fields = _Fields([], [], [], [], [])
    assert fields.headers is not None
    for index, item in enumerate(items):
        named = False
        try:
            _check_item(item)
            name = validate_name(item["name"])
            named = True
            key = item.get("key")
            if key is not None:
                _check_key(key)
            due = now + delay_seconds(item["delay"]) if "delay" in item else default_due
            headers = _encode_headers(item.get("headers")) if "headers" in item else None
        except InvalidInput as exc:
            # The first problem is the one reported: a bad payload of an earlier event, or of
            # this one when its name is good (an event is checked name, payload, key, delay).
            checked = [*fields.payloads, item.get("payload", {})] if named else fields.payloads
            encode_payloads(checked, max_bytes=max_bytes)
            exc.position = index
            raise
        fields.names.append(name)
        fields.payloads.append(item.get("payload", {}))
        fields.keys.append(key)
        fields.dues.append(due)
        fields.headers.append(headers)
    return fields


_NAME = operator.itemgetter("name")
_KEY = operator.methodcaller("get", "key")
_PAYLOAD = operator.methodcaller("get", "payload", {})
_GIVEN_PAYLOAD = operator.itemgetter("payload")
_NAME_AND_PAYLOAD = frozenset({"name", "payload"})
_ITEM_FIELDS = frozenset({"name", "payload", "key", "delay", "headers"})


def _check_item(item: object) -> None:
    if not isinstance(item, Mapping):
        raise InvalidInput('expected an object like {"name": ..., "payload": {...}}')
    unknown = set(item) - _ITEM_FIELDS
    if unknown:
        # Keys of a mapping given from Python need not be strings, nor comparable.
        fields = sorted(key if isinstance(key, str) else repr(key) for key in unknown)
        raise InvalidInput(f"unknown field(s): {', '.join(fields)}")
    if "name" not in item:
        raise InvalidInput('missing "name"')


def _encode_headers(headers: object) -> str | None:
    # Imported only for events that have headers: `evq publish` without them never loads it.
    from evq.headers import encode_headers

    return encode_headers(headers)


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key or len(key) > 500:
        raise InvalidInput("an idempotency key must be a non-empty string of at most 500 chars")
    try:
        key.encode()
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"an idempotency key must be valid Unicode text ({exc.reason}: {key[exc.start]!a})"
        ) from None
