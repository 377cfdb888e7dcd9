"""Publishing: validate an event, store it durably, return its id.

Publishing needs no subscriber code: the worker decides who receives an event when it fans it
out. Only the standard library is imported here, so that `evq publish` starts fast.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from evq import config
from evq.errors import InvalidInput
from evq.event import encode_payload, event_id_floor, new_event_id
from evq.names import validate_name
from evq.storage.sqlite import NewEvent, SqliteQueue, ensure_schema, insert_events

Delay = float | int | dt.timedelta | None


def publish(
    name: str,
    /,
    *,
    payload: dict[str, Any],
    delay: Delay = None,
    key: str | None = None,
    connection: sqlite3.Connection | None = None,
) -> str:
    """Publish the event `name` with `payload` for every receiver subscribed to it.

    Returns the event id once the event is committed to disk. `delay` (seconds or a timedelta)
    holds delivery back. With `key`, an event already published with the same key is not
    published again: its id is returned. With `connection`, an open `sqlite3` connection to the
    queue file, the event is written inside the caller's current transaction and commits or
    rolls back with it (the transactional outbox); evq then neither commits nor rolls back.
    """
    event = prepare(name, payload=payload, delay=delay, key=key)
    if connection is not None:
        ensure_schema(connection)
        return insert_events(connection, [event])[0]
    return queue().publish([event])[0]


def publish_many(
    events: Iterable[Mapping[str, Any]],
    /,
    *,
    batch_size: int = 1000,
) -> list[str]:
    """Publish many events, each a mapping with `name`, `payload` and optionally `key` and
    `delay`; return their ids in order.

    Every event is validated before anything is stored: one bad event raises `InvalidInput`
    (naming its position) and stores nothing. Events are then committed `batch_size` at a time.
    """
    prepared = [_prepare_item(index, item) for index, item in enumerate(events)]
    store = queue()
    ids: list[str] = []
    for start in range(0, len(prepared), batch_size):
        ids.extend(store.publish(prepared[start : start + batch_size]))
    return ids


def prepare(
    name: str,
    /,
    *,
    payload: dict[str, Any],
    delay: Delay = None,
    key: str | None = None,
    now: float | None = None,
) -> NewEvent:
    """Validate an event and return it ready to store; raise `InvalidInput` if it is bad."""
    validate_name(name)
    text = encode_payload(payload, max_bytes=config.current().max_payload_bytes)
    if key is not None and (not isinstance(key, str) or not key or len(key) > 500):
        raise InvalidInput("an idempotency key must be a non-empty string of at most 500 chars")
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
    )


def delay_seconds(delay: Delay) -> float:
    """Return a delay given as seconds or a timedelta as seconds; reject negative delays."""
    if delay is None:
        return 0.0
    seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else float(delay)
    if not seconds >= 0:
        raise InvalidInput(f"delay must be zero or more seconds, got {delay!r}")
    return seconds


_queues: dict[tuple[str, str], SqliteQueue] = {}
_queues_lock = threading.Lock()


def queue() -> SqliteQueue:
    """Return this process's handle on the queue named by the current settings."""
    settings = config.current()
    handle = (settings.url, settings.sync)
    with _queues_lock:
        if handle not in _queues:
            _queues[handle] = SqliteQueue(settings.url, sync=settings.sync)
        return _queues[handle]


def prepare_item(item: object, /, *, delay: Delay = None) -> NewEvent:
    """Validate one event given as a mapping with `name`, `payload` and optionally `key` and
    `delay` (which overrides the `delay` given here), as `publish_many` and `evq publish
    --jsonl` take them; return it ready to store."""
    if not isinstance(item, Mapping):
        raise InvalidInput('expected an object like {"name": ..., "payload": {...}}')
    unknown = set(item) - {"name", "payload", "key", "delay"}
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}")
    if "name" not in item:
        raise InvalidInput('missing "name"')
    return prepare(
        item["name"],
        payload=item.get("payload", {}),
        key=item.get("key"),
        delay=item.get("delay", delay),
    )


def _prepare_item(index: int, item: Mapping[str, Any]) -> NewEvent:
    try:
        return prepare_item(item)
    except InvalidInput as exc:
        raise type(exc)(f"event {index + 1}: {exc}") from None
