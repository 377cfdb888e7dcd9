"""Dead letters in the SQLite file: what a purge leaves behind, and a damaged row."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from contract.steps import finish, publish, take
from workers import rows

from evq.storage.sqlite import SqliteQueue


def test_purge_deletes_the_history_rows_of_the_purged_dead_letters_only(
    queue_path: Path,
) -> None:
    # The contract can only see history through a delivery: rows left behind by a purge
    # would be invisible there, and fill the file.
    queue = SqliteQueue(str(queue_path))
    at = time.time() - 600
    publish(queue, "order.paid", at=at)
    publish(queue, "order.paid", at=at + 1)
    finish(queue, take(queue, now=at + 2), "dead", at=at + 3)
    purged, kept = (letter.id for letter in queue.dead_letters())

    assert queue.purge([purged]) == 1

    assert rows(queue_path, "SELECT delivery_id, attempt FROM evq_attempt") == [(int(kept), 1)]
    queue.close()


def test_an_event_to_fan_out_whose_publish_time_is_damaged_is_due_at_once(
    queue_path: Path,
) -> None:
    # Alone to fan out, its publish time once stopped every lease (a ValueError reading when
    # the next delivery is due): a worker wedged by one damaged row.
    queue = SqliteQueue(str(queue_path))
    event_id = publish(queue, "order.paid", at=time.time() - 60)
    with sqlite3.connect(queue_path) as conn:
        conn.execute("UPDATE evq_event SET published_at = x'00ff' WHERE id = ?", (event_id,))
    conn.close()

    assert queue.next_due() == 0.0
    (lease,) = take(queue, now=time.time())
    assert (lease.event_id, lease.published_at) == (event_id, b"\x00\xff")
    queue.close()
