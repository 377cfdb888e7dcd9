"""PostgreSQL keeps due times on the server's clock: an event published with a delay, and a
retry recorded for later, by a process whose clock is an hour ahead of the server's, fall due
after that delay by the server's clock, not an hour late."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from contract.steps import OWNER, outcome, routing_for

from evq.publisher import prepare
from evq.storage import open_queue
from evq.storage.postgres import PostgresQueue
from postgres.conftest import Schema

AHEAD = 3600.0


def due_in(pg: Schema, table: str, row_id: str) -> float:
    """How long until the row `row_id` of `table` is due, by the server's clock."""
    ((seconds,),) = pg.rows(
        f"SELECT due_at - extract(epoch FROM clock_timestamp())::float8 FROM {table} WHERE id = %s",
        (int(row_id) if table == "evq_delivery" else row_id,),
    )
    return float(seconds)


@pytest.fixture
def queue(pg: Schema, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresQueue]:
    handle = open_queue(pg.url, role="work")
    assert isinstance(handle, PostgresQueue)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + AHEAD)  # this process's clock is ahead
    try:
        yield handle
    finally:
        handle.close()


@pytest.mark.parametrize("key", [None, "order-7"])
def test_a_delay_runs_from_the_servers_clock_when_the_publishers_is_ahead(
    pg: Schema, queue: PostgresQueue, key: str | None
) -> None:
    (event_id,) = queue.publish([prepare("order.paid", payload={}, delay=60, key=key)])

    assert 50.0 < due_in(pg, "evq_event", event_id) <= 60.0


def test_a_retry_falls_due_by_the_servers_clock_when_the_workers_is_ahead(
    pg: Schema, queue: PostgresQueue
) -> None:
    queue.publish([prepare("order.paid", payload={})])
    (lease,) = queue.lease(routing_for(), owner=OWNER, limit=10).leases
    now = time.time()

    queue.record([outcome(lease, "retry", at=now, retry_at=now + 60)], owner=OWNER)

    assert 50.0 < due_in(pg, "evq_delivery", lease.delivery_id) <= 60.0
