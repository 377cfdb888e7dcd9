"""Dead letters on PostgreSQL: what a purge leaves behind."""

from __future__ import annotations

import time

from contract.steps import finish, publish, take

from evq.storage import open_queue
from postgres.conftest import Schema


def test_purge_deletes_the_history_rows_of_the_purged_dead_letters_only(pg: Schema) -> None:
    # The contract can only see history through a delivery: rows left behind by a purge
    # would be invisible there, and grow the table for ever.
    queue = open_queue(pg.url)
    try:
        at = time.time() - 600
        publish(queue, "order.paid", at=at)
        publish(queue, "order.paid", at=at + 1)
        finish(queue, take(queue, now=at + 2), "dead", at=at + 3)
        purged, kept = (letter.id for letter in queue.dead_letters())

        assert queue.purge([purged]) == 1
    finally:
        queue.close()

    assert pg.rows("SELECT delivery_id, attempt FROM evq_attempt") == [(int(kept), 1)]
