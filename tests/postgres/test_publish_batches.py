"""Large batches on PostgreSQL: a batch of `COPY_FROM` events or more without keys streams in
with COPY (`delivering.stream_events`), a batch with a key goes through the INSERT that skips
duplicates. Either way: in order, all or nothing, delays from the server's clock, headers, and
the NOTIFY that wakes idle workers sent with the commit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest
from conftest import run_evq, start_evq

from evq.errors import StorageError
from evq.storage import open_queue
from evq.storage.postgres import PostgresQueue
from evq.storage.postgres.delivering import COPY_FROM
from evq.storage.publishing import NewEvent
from postgres.conftest import Schema

# Text COPY escapes these: each must come back as it went in.
AWKWARD = 'tab\there, new\nline, cr\r, back\\slash, \\N, quote", é, 🙂'


@pytest.fixture
def queue(pg: Schema) -> Iterator[PostgresQueue]:
    handle = open_queue(pg.url)
    assert isinstance(handle, PostgresQueue)
    yield handle
    handle.close()


def _events(count: int, *, at: float, delay: float = 0.0, prefix: str = "e") -> list[NewEvent]:
    return [
        NewEvent(
            id=f"{prefix}{n:06d}",
            name="order.created",
            payload=f'{{"n": {n}}}',
            published_at=at,
            due_at=at + delay,
        )
        for n in range(count)
    ]


def test_a_large_batch_is_stored_in_order_with_every_field(
    pg: Schema, queue: PostgresQueue
) -> None:
    at = time.time()
    events = _events(COPY_FROM, at=at)
    events[1] = events[1]._replace(payload=AWKWARD)  # the store takes text as it is
    events[2] = events[2]._replace(headers=json.dumps({"trace": AWKWARD}, ensure_ascii=False))

    assert queue.publish(events) == [e.id for e in events]

    rows = pg.rows(
        "SELECT id, name, payload, published_at, key, headers FROM evq_event ORDER BY seq"
    )
    assert rows == [(e.id, e.name, e.payload, e.published_at, None, e.headers) for e in events]


def test_a_large_batch_runs_its_delays_from_the_servers_clock(
    pg: Schema, queue: PostgresQueue
) -> None:
    # The publisher's clock is an hour behind: its due times would be in the past.
    behind = time.time() - 3600.0
    queue.publish(_events(COPY_FROM, at=behind, delay=30.0))

    ((low, high, server_now),) = pg.rows(
        "SELECT min(due_at), max(due_at), extract(epoch FROM clock_timestamp())::float8"
        " FROM evq_event"
    )
    assert server_now + 20.0 < low <= high <= server_now + 30.0


def test_a_large_batch_published_at_a_given_time_keeps_its_due_times(
    pg: Schema, queue: PostgresQueue
) -> None:
    events = _events(COPY_FROM, at=1000.0, delay=5.0)
    queue.publish(events, now=1000.0)

    assert pg.rows("SELECT DISTINCT due_at FROM evq_event") == [(1005.0,)]


def test_a_large_batch_is_all_or_nothing(pg: Schema, queue: PostgresQueue) -> None:
    stored = _events(1, at=time.time(), prefix="dup")
    queue.publish(stored)
    # The last event of the batch reuses a stored id: the server refuses it mid-COPY.
    batch = _events(COPY_FROM, at=time.time()) + stored

    with pytest.raises(StorageError):
        queue.publish(batch)

    assert pg.rows("SELECT id FROM evq_event") == [(stored[0].id,)]
    # The handle still works after the failed batch.
    assert queue.publish(_events(COPY_FROM, at=time.time(), prefix="ok"))[0] == "ok000000"


def test_a_large_batch_with_a_key_skips_an_event_whose_key_is_stored(
    pg: Schema, queue: PostgresQueue
) -> None:
    at = time.time()
    first = [_events(1, at=at, prefix="first")[0]._replace(key="order-7")]
    queue.publish(first)
    batch = _events(COPY_FROM, at=at)
    batch[5] = batch[5]._replace(key="order-7")

    ids = queue.publish(batch)

    assert ids[5] == first[0].id
    assert ids[:5] + ids[6:] == [e.id for e in batch[:5] + batch[6:]]
    assert pg.rows("SELECT count(*) FROM evq_event") == [(COPY_FROM,)]


@pytest.mark.parametrize("given", [True, False], ids=["at-a-given-time", "now"])
def test_a_stream_of_batches_with_and_without_keys_is_stored_in_order_as_one_publish(
    pg: Schema, queue: PostgresQueue, given: bool
) -> None:
    """`evq publish --jsonl`'s path: runs of batches without keys stream in with COPY, a batch
    with keys goes through the INSERT that skips a stored key; ids and rows in the stream's
    order, each delay from the given time or from the server's clock."""
    # An hour behind the server when not given: every due time would be in the past.
    at = 1000.0 if given else time.time() - 3600.0
    (stored,) = queue.publish([_events(1, at=at, prefix="old")[0]._replace(key="order-1")])
    keyed = _events(2, at=at, prefix="k")
    keyed = [keyed[0]._replace(key="order-1"), keyed[1]._replace(key="order-2", due_at=at + 30)]
    batches = [
        _events(COPY_FROM, at=at, prefix="a"),
        _events(2, at=at, delay=0.5, prefix="b"),  # half a second is a delay too
        keyed,
        _events(3, at=at, prefix="c"),
    ]

    ids = queue.publish_stream(iter(batches), now=at if given else None)

    expected = [e.id for e in batches[0] + batches[1]] + [stored, "k000001"]
    assert ids == [*expected, *(e.id for e in batches[3])]
    rows = pg.rows("SELECT id, key, due_at FROM evq_event ORDER BY seq")
    assert [row[:2] for row in rows] == (
        [("old000000", "order-1")]
        + [(e.id, None) for e in batches[0] + batches[1]]
        + [("k000001", "order-2")]
        + [(e.id, None) for e in batches[3]]
    )
    delays = {row[0]: row[2] - rows[1][2] for row in rows[1:]}  # from the first's due time
    assert all(0.45 <= delays[e.id] <= 0.55 for e in batches[1]), delays
    assert 29.0 <= delays["k000001"] <= 31.0, delays
    undelayed = {e.id for e in batches[0] + batches[3]}
    assert all(0.0 <= delays[i] <= 1.0 for i in undelayed), delays
    if given:
        assert rows[1][2] == at
    else:
        ((server_now,),) = pg.rows("SELECT extract(epoch FROM clock_timestamp())::float8")
        assert server_now - 60.0 < rows[1][2] <= server_now


def test_a_large_batch_wakes_listeners_when_it_commits(pg: Schema, queue: PostgresQueue) -> None:
    with psycopg.connect(pg.url, autocommit=True) as listener:
        listener.execute("LISTEN evq_wakeup")
        queue.publish(_events(COPY_FROM, at=time.time()))
        woken = list(listener.notifies(timeout=5.0, stop_after=1))

    assert [n.channel for n in woken] == ["evq_wakeup"]


def _copying(pg: Schema) -> int:
    """How many of this schema's sessions are streaming events in with COPY right now."""
    ((count,),) = pg.rows(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE state = 'active' AND query LIKE 'COPY evq_event %%'"
        " AND datname = current_database()"
    )
    return int(count)


def test_jsonl_streams_while_it_reads_and_a_kill_mid_stream_stores_nothing(pg: Schema) -> None:
    # Three megabytes of lines, the input left open: COPY is under way before the input ends.
    text = "".join(
        json.dumps({"name": "order.created", "payload": {"n": n}}) + "\n" for n in range(60_000)
    )
    process = start_evq("publish", "--jsonl", "-", stdin=subprocess.PIPE)
    assert process.stdin is not None
    process.stdin.write(text)
    process.stdin.flush()
    deadline = time.monotonic() + 60.0
    while _copying(pg) == 0:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no COPY while the input was still open"
        time.sleep(0.05)
    assert pg.rows("SELECT count(*) FROM evq_event") == [(0,)]  # nothing committed yet

    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    while _copying(pg):  # the server sees the connection gone and rolls the COPY back
        assert time.monotonic() < deadline, "the killed publisher's COPY never ended"
        time.sleep(0.05)
    assert pg.rows("SELECT count(*) FROM evq_event") == [(0,)]

    # The same input given again is stored whole.
    result = run_evq("publish", "--jsonl", "-", input=text)
    assert result.returncode == 0, result.stderr
    assert pg.rows("SELECT count(*) FROM evq_event") == [(60_000,)]
