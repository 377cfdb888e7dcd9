"""Dead letters on Redis: `evq dlq list/show` read them through the sorted set of dead
deliveries; redrive and purge are one script each."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from evq.storage.contract import DeadLetter
from evq.storage.redis.connection import Connection
from evq.storage.redis.inspecting import PAGE, as_count, as_time, pages


def dead_letters(
    connection: Connection,
    ids: Sequence[str],
    receiver: str | None,
    older_than: float | None,
    limit: int | None,
) -> list[DeadLetter]:
    """Dead deliveries with their events, newest first."""
    base = connection.base
    if ids:
        candidates: Iterable[str] = [i for i in dict.fromkeys(ids) if i.isascii() and i.isdigit()]
    else:
        high = "+inf" if older_than is None else f"({older_than!r}"
        candidates = _dead_ids(connection, high)
    letters: list[DeadLetter] = []
    for page in pages(candidates):
        found: list[DeadLetter] = connection.call(
            "read dead letters", functools.partial(_letters, base=base, ids=page)
        )
        for letter in found:
            if receiver is not None and letter.receiver != receiver:
                continue
            if older_than is not None and letter.dead_at >= older_than:
                continue
            letters.append(letter)
        if not ids and limit is not None and len(letters) >= limit:
            break
    letters.sort(key=lambda letter: (letter.dead_at, int(letter.id)), reverse=True)
    return letters if limit is None else letters[:limit]


def _dead_ids(connection: Connection, high: str) -> Iterator[str]:
    key = connection.base + "dead"
    start = 0
    while True:

        def read(client: Any, start: int = start) -> list[str]:
            return list(client.zrevrangebyscore(key, high, "-inf", start=start, num=PAGE))

        page = connection.call("read dead letters", read)
        yield from page
        if len(page) < PAGE:
            return
        start += PAGE


def _letters(client: Any, *, base: str, ids: Sequence[str]) -> list[DeadLetter]:
    pipe = client.pipeline(transaction=False)
    for delivery_id in ids:
        pipe.hgetall(base + "d:" + delivery_id)
    found = [(i, d) for i, d in zip(ids, pipe.execute(), strict=True) if d.get("state") == "dead"]
    pipe = client.pipeline(transaction=False)
    for _, data in found:
        pipe.hmget(base + "e:" + data.get("event_id", ""), "name", "payload", "published_at")
    letters = []
    for (delivery_id, data), (name, payload, published_at) in zip(
        found, pipe.execute(), strict=True
    ):
        letters.append(
            DeadLetter(
                id=delivery_id,
                receiver=data.get("receiver", ""),
                attempts=as_count(data.get("attempt")),
                failures=as_count(data.get("failures")),
                dead_at=as_time(data.get("finished_at")) or 0.0,
                error=data.get("last_error") or None,
                traceback=data.get("traceback") or None,
                created_at=as_time(data.get("created_at")) or 0.0,
                event_id=data.get("event_id", ""),
                name=name or "",
                payload=payload or "",
                published_at=as_time(published_at) or 0.0,
            )
        )
    return letters


def redrive(connection: Connection, ids: Sequence[str], now: float | None) -> int:
    """Put dead letters back in the queue, due now; return how many."""
    args = ["" if now is None else repr(now), *_known(ids)]
    return int(connection.run("redrive", args, doing="redrive dead letters"))


def purge(connection: Connection, ids: Sequence[str]) -> int:
    """Delete dead letters and their history; return how many."""
    known = _known(ids)
    if not known:
        return 0
    return int(connection.run("purge", known, doing="purge dead letters"))


def _known(ids: Sequence[str]) -> list[str]:
    return [i for i in dict.fromkeys(ids) if i.isascii() and i.isdigit()]
