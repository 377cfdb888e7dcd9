"""The inspection commands read the SQLite file through its indexes, however long the log."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from contract.steps import every_state

from evq.storage import rules
from evq.storage.contract import DELIVERY_STATES, EventSelection
from evq.storage.sqlite import SqliteQueue


def query_plans(queue: SqliteQueue, run: Callable[[], object]) -> list[tuple[str, list[str]]]:
    """Run `run()` and return each SELECT it executed with its query plan."""
    conn = queue._db.conn
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        run()
    finally:
        conn.set_trace_callback(None)
    return [
        (sql, [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")])
        for sql in statements
        if sql.lstrip().upper().startswith("SELECT")
    ]


def test_status_events_replay_and_prune_read_the_event_log_through_indexes(
    queue_path: Path,
) -> None:
    queue = SqliteQueue(str(queue_path))
    states = every_state(queue, at=time.time())

    def common_queries() -> None:
        queue.status()
        queue.events()
        queue.events(EventSelection(name="order.*", since=time.time() - 3600))
        queue.events(EventSelection(since=time.time() - 40, until=time.time() - 15))
        for status in DELIVERY_STATES:
            queue.events(status=status)
        queue.event(states.dead)
        queue.dead_letters(ids=["1", "2"])
        selection = EventSelection(since=time.time() - 3600)
        rules.replay(queue, selection, receiver="shop:audit", dry_run=True)
        rules.prune(queue, time.time() - 30, dry_run=True)
        rules.prune(queue, time.time() - 86400)

    plans = query_plans(queue, common_queries)

    assert len(plans) > 10
    full_scan = re.compile(r"^SCAN (evq_event|evq_delivery|evq_attempt|e|d)\b(?! USING)")
    for sql, plan in plans:
        assert not [step for step in plan if full_scan.match(step)], (sql, plan)
    # There is no index on published_at: a time range is a range of the id index.
    ranged = [plan for sql, plan in plans if "published_at <" in sql or "published_at >" in sql]
    assert len(ranged) >= 4
    for plan in ranged:
        assert any(re.match(r"^SEARCH e USING INDEX \S+ \(id[<>]", step) for step in plan), plan
