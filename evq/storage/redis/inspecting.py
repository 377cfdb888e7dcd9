"""What `evq status`, `events` and `show` read on Redis (dead letters: `dead_letters.py`;
replay and retention: `retention.py`).

Reads go through indexes only: the event log is a sorted set of event ids (ids sort by publish
time, so a time range is an id range, compared exactly on `published_at` after), one more per
event name, and the unfinished and dead deliveries are sorted sets by due time. Writes are
one script each. The states a person sees, replay targets and what may be pruned come from
`evq.storage.rules`.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from evq.ids import event_id_floor
from evq.storage import rules
from evq.storage.contract import (
    AttemptRecord,
    DeliveryRecord,
    DeliveryState,
    EventRecord,
    EventSelection,
    MinuteCount,
    QueueStatus,
    StoredCounts,
    WorkerRecord,
)
from evq.storage.redis import publishing
from evq.storage.redis.connection import Connection

# As on SQLite: an id's time and `published_at` are two reads of the clock, so id ranges are
# taken this much wider and `published_at` is compared exactly.
ID_TIME_MARGIN = 1.0
PAGE = 500
_DELIVERY_FIELDS = ("state", "failures", "due_at")


# Status


def status(connection: Connection, now: float | None, warnings: Sequence[str]) -> QueueStatus:
    """Counts from counters and sorted sets, in one script (one consistent read)."""
    row = connection.run(
        "status",
        [
            "" if now is None else repr(now),
            rules.RATE_WINDOW_SECONDS,
            repr(rules.WORKER_SEEN_WITHIN_SECONDS),
        ],
        doing="read the status",
    )
    at = float(row[0]) if now is None else now
    pending_due, pending_later, retrying_due, retrying_later = map(int, row[4:8])
    running, dead = int(row[8]), int(row[9])
    counts = rules.count_states(
        [
            StoredCounts("pending", False, False, pending_due),
            StoredCounts("pending", False, True, pending_later),
            StoredCounts("pending", True, False, retrying_due),
            StoredCounts("pending", True, True, retrying_later),
            StoredCounts("running", False, False, running),
            StoredCounts("dead", False, False, dead),
        ]
    )
    oldest = float(row[10]) if row[10] else None
    workers = sorted((_worker(text) for text in row[13:]), key=lambda w: (w.started_at, w.id))
    return QueueStatus(
        time=at,
        published=int(row[1]),
        awaiting_dispatch=int(row[2]),
        delayed=int(row[3]),
        pending=counts["pending"],
        scheduled=counts["scheduled"],
        retrying=counts["retrying"],
        running=counts["running"],
        dead=counts["dead"],
        oldest_due_at=oldest if oldest is not None and oldest <= at else None,
        delivered_last_minute=int(row[11]),
        failed_last_minute=int(row[12]),
        workers=workers,
        warnings=tuple(warnings),
    )


def _worker(text: str) -> WorkerRecord:
    data = json.loads(text)
    return WorkerRecord(
        id=str(data["id"]),
        hostname=str(data["hostname"]),
        pid=int(data["pid"]),
        started_at=float(data["started_at"]),
        seen_at=float(data["seen_at"]),
        info=str(data["info"]),
    )


def worker_seen(connection: Connection, worker_id: str, record: dict[str, Any]) -> None:
    """Record a worker's heartbeat, and when it was seen."""
    base = connection.base

    def write(client: Any) -> None:
        pipe = client.pipeline(transaction=True)
        pipe.hset(base + "workers", worker_id, json.dumps(record))
        pipe.zadd(base + "workers_seen", {worker_id: record["seen_at"]})
        pipe.execute()

    connection.call("record a worker", write)


def worker_stopped(connection: Connection, worker_id: str) -> None:
    """Forget a worker."""
    base = connection.base

    def write(client: Any) -> None:
        pipe = client.pipeline(transaction=True)
        pipe.hdel(base + "workers", worker_id)
        pipe.zrem(base + "workers_seen", worker_id)
        pipe.execute()

    connection.call("forget a worker", write)


def server_time(connection: Connection) -> float:
    """The server's clock."""
    seconds, micros = connection.call("read the time", lambda client: client.time())
    return float(seconds) + float(micros) / 1e6


def finished_per_minute(connection: Connection, minutes: int, now: float) -> list[MinuteCount]:
    """Deliveries finished per minute since `minutes` whole minutes before now's minute, from
    the per-second fields of the statistics hash (one HMGET)."""
    start = (int(now) // 60 - minutes) * 60
    seconds = range(start, int(now) + 1)
    fields = [f"{kind}:{second}" for second in seconds for kind in ("done", "failed")]
    key = connection.base + "stats"
    values = connection.call("read the statistics", lambda client: client.hmget(key, fields))
    per_minute: dict[int, list[int]] = {}
    for index, second in enumerate(seconds):
        done, failed = values[2 * index], values[2 * index + 1]
        if done or failed:
            counts = per_minute.setdefault(second // 60 * 60, [0, 0])
            counts[0] += int(done or 0)
            counts[1] += int(failed or 0)
    return [MinuteCount(float(m), done, failed) for m, (done, failed) in sorted(per_minute.items())]


# Events


def events(
    connection: Connection,
    selection: EventSelection,
    state: DeliveryState | None,
    limit: int | None,
    now: float,
) -> list[EventRecord]:
    """The selected events, newest first, each with its delivery counts by state."""
    publishing.ingest(connection)
    if state is not None and state != "done":
        ids = _with_state(connection, state, now)
        if selection.before is not None:
            ids = {i for i in ids if i < selection.before}
        candidates: Iterable[str] = sorted(ids, reverse=True)
    else:
        candidates = walk_selection(connection, selection, reverse=True)
    found: list[EventRecord] = []
    for page in pages(candidates):
        for record in records(connection, page, now):
            if selected(record, selection) and _has_state(record, state, now):
                found.append(record)
                if limit is not None and len(found) >= limit:
                    return found
    return found


def _has_state(record: EventRecord, state: DeliveryState | None, now: float) -> bool:
    if state is None:
        return True
    if record.due_at is not None:
        return rules.undispatched_state(record.due_at, now) == state
    return record.counts[state] > 0


def selected(record: EventRecord, selection: EventSelection) -> bool:
    if selection.name is not None:
        from evq.names import matches

        if not matches(selection.name, record.name):
            return False
    if selection.since is not None and record.published_at < selection.since:
        return False
    if selection.before is not None and record.id >= selection.before:
        return False
    return selection.until is None or record.published_at < selection.until


def _with_state(connection: Connection, state: DeliveryState, now: float) -> set[str]:
    """The ids of events that may have a delivery in `state`, from the sorted sets of
    unfinished and dead deliveries (and of events not fanned out yet)."""
    base, at = connection.base, repr(now)
    ranges = {
        "pending": [("due:pending", "-inf", at)],
        "scheduled": [("due:pending", f"({at}", "+inf")],
        "retrying": [("due:retrying", "-inf", "+inf")],
        "running": [("due:running", "-inf", "+inf")],
        "dead": [("dead", "-inf", "+inf")],
    }[state]

    def read(client: Any) -> set[str]:
        pipe = client.pipeline(transaction=False)
        for key, low, high in ranges:
            pipe.zrangebyscore(base + key, low, high)
        deliveries = [d for found in pipe.execute() for d in found]
        ids: set[str] = set()
        for page in pages(deliveries):
            pipe = client.pipeline(transaction=False)
            for delivery_id in page:
                pipe.hget(base + "d:" + delivery_id, "event_id")
            ids.update(event_id for event_id in pipe.execute() if event_id)
        if state in ("pending", "scheduled"):
            ids.update(client.zrange(base + "undispatched", 0, -1))
        return ids

    result: set[str] = connection.call("read the event log", read)
    return result


def walk_selection(
    connection: Connection, selection: EventSelection, *, reverse: bool, after: str | None = None
) -> Iterator[str]:
    """Event ids of the selection's names and id range, newest first (or oldest first)."""
    base = connection.base
    if selection.name is None:
        keys = [base + "log"]
    elif "*" not in selection.name:
        keys = [base + "n:" + selection.name]
    else:
        from evq.names import matches

        names = connection.call("read the event log", lambda c: c.smembers(base + "names"))
        keys = [base + "n:" + name for name in sorted(names) if matches(selection.name, name)]
    low = "-" if selection.since is None else "[" + id_floor(selection.since - ID_TIME_MARGIN)
    high = "+" if selection.until is None else "(" + id_floor(selection.until + ID_TIME_MARGIN)
    if after is not None:
        low = "(" + after if low == "-" or after >= low[1:] else low
    if selection.before is not None and (high == "+" or selection.before < high[1:]):
        high = "(" + selection.before
    walks = [_walk(connection, key, low, high, reverse=reverse) for key in keys]
    if len(walks) == 1:
        return walks[0]
    return heapq.merge(*walks, reverse=reverse)


def _walk(connection: Connection, key: str, low: str, high: str, *, reverse: bool) -> Iterator[str]:
    """The members of a sorted set of ids between `low` and `high`, a page at a time."""
    while True:
        page = connection.call("read the event log", _range_by_lex(key, low, high, reverse))
        yield from page
        if len(page) < PAGE:
            return
        if reverse:
            high = "(" + page[-1]
        else:
            low = "(" + page[-1]


def _range_by_lex(key: str, low: str, high: str, reverse: bool) -> Callable[[Any], list[str]]:
    def read(client: Any) -> list[str]:
        if reverse:
            return list(client.zrevrangebylex(key, high, low, start=0, num=PAGE))
        return list(client.zrangebylex(key, low, high, start=0, num=PAGE))

    return read


def id_floor(at: float) -> str:
    return event_id_floor(max(0.0, at))


def pages(items: Iterable[str]) -> Iterator[list[str]]:
    page: list[str] = []
    for item in items:
        page.append(item)
        if len(page) >= PAGE:
            yield page
            page = []
    if page:
        yield page


def records(connection: Connection, ids: Sequence[str], now: float) -> list[EventRecord]:
    """The stored events among `ids` with their delivery counts (in the order of `ids`)."""
    base = connection.base

    def read(client: Any) -> list[EventRecord]:
        pipe = client.pipeline(transaction=False)
        for event_id in ids:
            pipe.hgetall(base + "e:" + event_id)
            pipe.lrange(base + "ed:" + event_id, 0, -1)
        replies = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for deliveries in replies[1::2]:
            for delivery_id in deliveries:
                pipe.hmget(base + "d:" + delivery_id, *_DELIVERY_FIELDS)
        fields = iter(pipe.execute())
        records = []
        for event_id, data, deliveries in zip(ids, replies[0::2], replies[1::2], strict=True):
            counts = rules.zero_counts()
            for _ in deliveries:
                stored, failures, due_at = next(fields)
                if stored is not None:
                    counts[_user_state(stored, failures, due_at, now)] += 1
            if data:
                records.append(_event(event_id, data, counts, now))
        return records

    result: list[EventRecord] = connection.call("read the event log", read)
    return result


def event(connection: Connection, event_id: str, now: float) -> EventRecord | None:
    """One event with every delivery and its attempts, or None."""
    publishing.ingest(connection)
    base = connection.base

    def read(client: Any) -> EventRecord | None:
        pipe = client.pipeline(transaction=True)
        pipe.hgetall(base + "e:" + event_id)
        pipe.lrange(base + "ed:" + event_id, 0, -1)
        data, delivery_ids = pipe.execute()
        if not data:
            return None
        pipe = client.pipeline(transaction=True)
        for delivery_id in delivery_ids:
            pipe.hgetall(base + "d:" + delivery_id)
            pipe.hgetall(base + "h:" + delivery_id)
        replies = pipe.execute()
        deliveries = tuple(
            _delivery(delivery_id, fields, history, now)
            for delivery_id, fields, history in zip(
                delivery_ids, replies[0::2], replies[1::2], strict=True
            )
            if fields
        )
        counts = rules.zero_counts()
        for delivery in deliveries:
            counts[delivery.state] += 1
        return _event(event_id, data, counts, now, deliveries)

    result: EventRecord | None = connection.call("read an event", read)
    return result


def _event(
    event_id: str,
    data: dict[str, str],
    counts: dict[DeliveryState, int],
    now: float,
    deliveries: tuple[DeliveryRecord, ...] = (),
) -> EventRecord:
    due_at = as_time(data.get("due_at"))
    return EventRecord(
        id=event_id,
        name=data.get("name", ""),
        payload=data.get("payload", ""),
        published_at=as_time(data.get("published_at")) or 0.0,
        due_at=due_at,
        dispatched_at=as_time(data.get("dispatched_at")),
        key=data.get("key"),
        headers=data.get("headers") or None,
        status=rules.event_status(due_at, counts, now),
        counts=counts,
        deliveries=deliveries,
    )


def _delivery(
    delivery_id: str, data: dict[str, str], history: dict[str, str], now: float
) -> DeliveryRecord:
    due_at = as_time(data.get("due_at"))
    return DeliveryRecord(
        id=delivery_id,
        receiver=data.get("receiver", ""),
        state=_user_state(data.get("state"), data.get("failures"), data.get("due_at"), now),
        attempts=as_count(data.get("attempt")),
        failures=as_count(data.get("failures")),
        replay=data.get("replay") == "1",
        created_at=as_time(data.get("created_at")) or 0.0,
        due_at=due_at,
        started_at=as_time(data.get("started_at")),
        finished_at=as_time(data.get("finished_at")),
        worker=data.get("lease_owner"),
        last_error=data.get("last_error") or None,
        traceback=data.get("traceback") or None,
        history=tuple(
            _attempt(int(attempt), text)
            for attempt, text in sorted(history.items(), key=lambda item: as_count(item[0]))
            if attempt.isdigit()
        ),
    )


def _attempt(attempt: int, text: str) -> AttemptRecord:
    try:
        worker, started_at, finished_at, outcome, error = json.loads(text)
    except ValueError:  # not evq's: shown as best it can be
        worker, started_at, finished_at, outcome, error = None, None, None, "damaged", text
    return AttemptRecord(
        attempt=attempt,
        outcome=str(outcome),
        worker=None if worker is None else str(worker),
        started_at=as_time(started_at),
        finished_at=as_time(finished_at) or 0.0,
        error=None if error is None else str(error),
    )


def _user_state(stored: Any, failures: Any, due_at: Any, now: float) -> DeliveryState:
    try:
        return rules.user_state(str(stored), as_count(failures), as_time(due_at), now)
    except ValueError:  # a state no evq wrote: the value is damaged
        return "dead"


def as_time(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def as_count(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
