"""Replay and retention on Redis: each step walks the event log (a sorted set of ids, which
sort by publish time) a batch at a time and writes with one script; `evq.storage.rules` says
which receivers a replay goes to and which events may be pruned."""

from __future__ import annotations

import time
from typing import Any

from evq.storage import rules
from evq.storage.contract import EventRecord, EventSelection
from evq.storage.redis.connection import Connection
from evq.storage.redis.inspecting import (
    ID_TIME_MARGIN,
    as_time,
    id_floor,
    pages,
    records,
    selected,
    walk_selection,
)


def replay_step(
    connection: Connection,
    selection: EventSelection,
    receiver: str | None,
    after: str | None,
    batch_size: int,
    now: float,
    dry_run: bool,
) -> tuple[int, str | None]:
    """Create (or count) the replay deliveries of the next batch of dispatched events."""
    base = connection.base
    chosen: list[EventRecord] = []
    walk = walk_selection(connection, selection, reverse=False, after=after)
    for page in pages(walk):
        for record in records(connection, page, now):
            if record.due_at is None and selected(record, selection):
                chosen.append(record)
                if len(chosen) == batch_size:
                    break
        if len(chosen) == batch_size:
            break

    def receivers_of(client: Any) -> list[list[str]]:
        pipe = client.pipeline(transaction=False)
        for record in chosen:
            pipe.lrange(base + "ed:" + record.id, 0, -1)
        lists = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for deliveries in lists:
            for delivery_id in deliveries:
                pipe.hget(base + "d:" + delivery_id, "receiver")
        names = iter(pipe.execute())
        # A delivery whose hash is gone (a dead letter purged since the event's list was
        # read) has no receiver to replay to, as on the SQL backends, where its row is gone.
        receivers = [[next(names) for _ in deliveries] for deliveries in lists]
        return [[name for name in found if name is not None] for found in receivers]

    had = [[] for _ in chosen] if receiver is not None else connection.call("replay", receivers_of)
    args: list[str | int] = [repr(now)]
    total = 0
    for record, receivers in zip(chosen, had, strict=True):
        targets = rules.replay_receivers(receivers, receiver)
        args += [record.id, len(targets), *targets]
        total += len(targets)
    if not dry_run and total:
        total = int(connection.run("replay", args, doing="replay events"))
    following = chosen[-1].id if len(chosen) == batch_size else None
    return total, following


def prune_step(
    connection: Connection, older_than: float, after: str | None, size: int, dry_run: bool
) -> tuple[int, str | None]:
    """Delete (or count) the finished events among the next `size` published before
    `older_than`, walking the log from the id `after`."""
    base = connection.base
    low = "-" if after is None else "(" + after
    high = "(" + id_floor(older_than + ID_TIME_MARGIN)
    ids: list[str] = connection.call(
        "read the event log", lambda c: c.zrangebylex(base + "log", low, high, start=0, num=size)
    )

    def read(client: Any) -> list[tuple[str, int, str]]:
        pipe = client.pipeline(transaction=False)
        for event_id in ids:
            pipe.hmget(base + "e:" + event_id, "published_at", "due_at", "dispatched_at")
            pipe.lrange(base + "ed:" + event_id, 0, -1)
        replies = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for deliveries in replies[1::2]:
            for delivery_id in deliveries:
                pipe.hget(base + "d:" + delivery_id, "state")
        states = iter(pipe.execute())
        finished = []
        for event_id, fields, deliveries in zip(ids, replies[0::2], replies[1::2], strict=True):
            published_at, due_at, dispatched_at = fields
            unfinished = sum(next(states) != "done" for _ in deliveries)
            dispatched = due_at is None and dispatched_at is not None
            old = (as_time(published_at) or 0.0) < older_than
            if old and rules.is_finished(dispatched, unfinished):
                finished.append((event_id, len(deliveries), deliveries[-1] if deliveries else ""))
        return finished

    finished = connection.call("read the event log", read)
    following = ids[-1] if len(ids) == size else None
    if dry_run or not finished:
        return len(finished), following
    args = [value for row in finished for value in row]
    return int(connection.run("prune", args, doing="prune events")), following


def forget_old_statistics(connection: Connection, now: float | None) -> None:
    """Delete delivery statistics and heartbeats of workers older than a day."""
    now = time.time() if now is None else now
    connection.run("forget", [repr(now - rules.FORGET_SECONDS)], doing="forget statistics")
