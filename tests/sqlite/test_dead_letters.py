"""Dead letters in the SQLite file: what a purge leaves behind."""

from __future__ import annotations

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
