"""The SQLite backend's lease rules, driven directly through its interface on a real file."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from workers import rows

import evq
from evq.storage.sqlite import MAX_LOST_ATTEMPTS, Outcome, SqliteQueue


class OneReceiver:
    """A router with one receiver subscribed to everything."""

    def __init__(self, lease_seconds: float, retries: int = 5) -> None:
        self.lease_seconds = lease_seconds
        self.retries = retries

    def receivers_for(self, name: str, /) -> Sequence[str]:
        return ["app:receiver"]

    def policy(self, receiver: str, /) -> tuple[int, float] | None:
        return (self.retries, self.lease_seconds) if receiver == "app:receiver" else None


def state(queue: SqliteQueue) -> tuple[str, int, int, int, str | None]:
    row = queue.conn.execute(
        "SELECT state, attempt, attempt_base, failures, last_error FROM evq_delivery"
    ).fetchone()
    return tuple(row)  # type: ignore[return-value]


def test_a_lease_that_expires_again_and_again_ends_as_a_dead_letter(queue_path: Path) -> None:
    evq.publish("a.b", payload={})
    queue = SqliteQueue(str(queue_path))
    router = OneReceiver(lease_seconds=0)  # every lease has expired by the next call
    for attempt in range(1, MAX_LOST_ATTEMPTS + 1):
        (lease,) = queue.lease(router, owner="w", limit=10, now=time.time() + attempt).leases
        assert lease.attempt == attempt
        assert lease.failures == 0  # a lost worker uses up none of the receiver's retries
    batch = queue.lease(router, owner="w", limit=10, now=time.time() + MAX_LOST_ATTEMPTS + 1)
    assert batch.leases == []
    assert batch.dead_lettered == 1
    dead, attempts, _base, failures, error = state(queue)
    assert (dead, attempts, failures) == ("dead", MAX_LOST_ATTEMPTS, 0)
    assert error is not None and "worker lost" in error
    history = queue.conn.execute("SELECT outcome FROM evq_attempt").fetchall()
    assert history == [("lost",)] * MAX_LOST_ATTEMPTS


def test_redrive_restarts_the_count_but_fences_off_outcomes_from_before(
    queue_path: Path,
) -> None:
    evq.publish("a.b", payload={})
    queue = SqliteQueue(str(queue_path))
    router = OneReceiver(lease_seconds=60)
    (first,) = queue.lease(router, owner="w1", limit=10).leases
    queue.record([Outcome(first, "dead", time.time(), time.time(), error="boom")], owner="w1")
    assert queue.redrive([d["id"] for d in queue.dead_letters()]) == 1

    (second,) = queue.lease(router, owner="w2", limit=10).leases
    assert second.attempt - second.attempt_base == 1  # what the receiver sees as event.attempt
    assert second.attempt == 2  # the row keeps counting: the fencing token moves on
    # A stale worker recording the outcome of the attempt before the redrive changes nothing.
    queue.record([Outcome(first, "done", time.time(), time.time())], owner="w1")
    assert state(queue)[0] == "running"
    queue.record([Outcome(second, "done", time.time(), time.time())], owner="w2")
    assert state(queue)[0] == "done"
    outcomes = queue.conn.execute("SELECT attempt, outcome FROM evq_attempt ORDER BY 1").fetchall()
    assert outcomes == [(1, "dead"), (2, "done")]


def test_an_unregistered_receiver_makes_a_dead_letter_not_a_stuck_row(queue_path: Path) -> None:
    evq.publish("a.b", payload={})
    queue = SqliteQueue(str(queue_path))
    queue.lease(OneReceiver(lease_seconds=60), owner="w", limit=0)  # fan out only

    class Nobody(OneReceiver):
        def policy(self, receiver: str, /) -> tuple[int, float] | None:
            return None

    batch = queue.lease(Nobody(lease_seconds=60), owner="w", limit=10)
    assert (batch.leases, batch.dead_lettered) == ([], 1)
    assert state(queue)[4] == "receiver app:receiver is not registered with the worker"


def test_nothing_due_takes_no_write_transaction(queue_path: Path) -> None:
    queue = SqliteQueue(str(queue_path))
    evq.publish("a.b", payload={}, delay=3600)
    router = OneReceiver(lease_seconds=60)
    # The first call fans the event out at once, to a delivery due in an hour.
    assert queue.lease(router, owner="w", limit=10).leases == []
    assert rows(
        queue_path, "SELECT state, due_at > ? FROM evq_delivery", (time.time() + 3500,)
    ) == [("pending", 1)]
    before = queue.conn.total_changes
    batch = queue.lease(router, owner="w", limit=10)
    assert batch.leases == []
    assert batch.next_due is not None and batch.next_due > time.time() + 3500
    assert queue.conn.total_changes == before


def test_a_failed_write_never_leaves_the_write_lock_held(queue_path: Path) -> None:
    queue = SqliteQueue(str(queue_path))
    try:
        with queue._write() as conn:
            conn.execute("DELETE FROM evq_event")
            raise KeyboardInterrupt  # as a receiver's timeout, raised at any instruction
    except KeyboardInterrupt:
        pass
    assert not queue.conn.in_transaction
    other = SqliteQueue(str(queue_path))
    with other._write() as conn:  # would wait, then fail, if the lock were still held
        conn.execute("SELECT 1")


def test_deliveries_whose_worker_died_are_taken_back_one_at_a_time(queue_path: Path) -> None:
    evq.publish_many([{"name": "a.b", "payload": {}}] * 3)
    queue = SqliteQueue(str(queue_path))
    router = OneReceiver(lease_seconds=0)
    assert len(queue.lease(router, owner="w1", limit=10).leases) == 3  # w1 then dies
    later = time.time() + 1
    for _ in range(3):
        batch = queue.lease(OneReceiver(lease_seconds=60), owner="w2", limit=10, now=later)
        assert len(batch.leases) == 1
    assert queue.lease(router, owner="w2", limit=10, now=later).leases == []


def test_pruning_goes_on_past_events_that_must_be_kept(queue_path: Path) -> None:
    # Dead letters at the head of the log used to stop each bounded pass before it reached
    # the finished events behind them.
    evq.publish_many([{"name": "a.b", "payload": {}}] * 30)
    queue = SqliteQueue(str(queue_path))
    router = OneReceiver(lease_seconds=60)
    leases = queue.lease(router, owner="w", limit=30).leases
    now = time.time()
    queue.record(
        [Outcome(lease, "dead" if i < 20 else "done", now, now) for i, lease in enumerate(leases)],
        owner="w",
    )
    total, after = 0, None
    for _ in range(10):
        pruned, after = queue.prune_step(time.time() + 60, after=after, batch_size=5, max_batches=1)
        total += pruned
        if after is None:
            break
    assert total == 10
    assert queue.conn.execute("SELECT count(*) FROM evq_event").fetchone()[0] == 20


def test_replay_goes_batch_by_batch_and_misses_no_event(queue_path: Path) -> None:
    from evq.storage.sqlite import EventSelection

    evq.publish_many([{"name": "a.b", "payload": {"n": n}} for n in range(7)])
    queue = SqliteQueue(str(queue_path))
    queue.lease(OneReceiver(lease_seconds=60), owner="w", limit=0)  # fan out: 7 deliveries
    selection = EventSelection(since=0)
    assert queue.replay_count(selection) == 7
    assert queue.replay(selection, batch_size=2) == 7
    assert queue.replay(selection, receiver="app:other", batch_size=3) == 7
    replays = queue.conn.execute(
        "SELECT receiver, count(DISTINCT event_seq) FROM evq_delivery WHERE replay = 1"
        " GROUP BY receiver ORDER BY receiver"
    ).fetchall()
    assert replays == [("app:other", 7), ("app:receiver", 7)]


# Fan-out from the dispatch cursor


def cursor(queue_path: Path) -> int:
    ((value,),) = rows(queue_path, "SELECT value FROM evq_counter WHERE name = 'dispatch_cursor'")
    return int(value)


def test_a_delayed_event_is_fanned_out_at_once_to_a_delivery_due_later(queue_path: Path) -> None:
    queue = SqliteQueue(str(queue_path))
    published = time.time()
    evq.publish("a.b", payload={}, delay=3600)
    evq.publish("a.b", payload={})
    batch = queue.lease(OneReceiver(lease_seconds=60), owner="w", limit=10)
    assert len(batch.leases) == 1  # only the one without a delay
    ((due_at,),) = rows(queue_path, "SELECT due_at FROM evq_delivery WHERE state = 'pending'")
    assert published + 3600 <= due_at < time.time() + 3600
    assert rows(queue_path, "SELECT count(*) FROM evq_event WHERE due_at IS NOT NULL") == [(0,)]
    assert cursor(queue_path) == 2


def test_events_published_after_everything_was_pruned_are_still_fanned_out(
    queue_path: Path,
) -> None:
    # SQLite numbers a new row from the highest one left: with every event pruned, the next
    # one starts again from 1, behind where the dispatch cursor had got to.
    queue = SqliteQueue(str(queue_path))
    router = OneReceiver(lease_seconds=60)
    for round_ in range(3):
        evq.publish_many([{"name": "a.b", "payload": {"round": round_}}] * 3)
        leases = queue.lease(router, owner="w", limit=10).leases
        assert [json.loads(lease.payload) for lease in leases] == [{"round": round_}] * 3
        now = time.time()
        queue.record([Outcome(lease, "done", now, now) for lease in leases], owner="w")
        assert queue.prune(time.time() + 60) == 3
        assert rows(queue_path, "SELECT count(*) FROM evq_event") == [(0,)]
        assert cursor(queue_path) == 0


def test_a_queue_file_of_schema_1_is_brought_up_to_date_and_loses_no_event(
    queue_path: Path,
) -> None:
    # Schema 1 found events to fan out through an index on due_at: one fanned out at once,
    # one with a delay not fanned out yet, and behind it one fanned out and one not.
    assert SqliteQueue(str(queue_path)).conn  # a file of the current schema, made older below
    conn = sqlite3.connect(queue_path, isolation_level=None)
    conn.executescript(
        "CREATE INDEX evq_event_due ON evq_event (due_at) WHERE due_at IS NOT NULL;"
        "DELETE FROM evq_counter; PRAGMA user_version = 1;"
    )
    now = time.time()
    for seq, due_at in ((1, None), (2, now - 1), (3, None), (4, now - 1)):
        conn.execute(
            "INSERT INTO evq_event (seq, id, name, payload, published_at, due_at, dispatched_at)"
            " VALUES (?, ?, 'a.b', ?, ?, ?, ?)",
            (
                seq,
                f"id{seq}",
                json.dumps({"seq": seq}),
                now - 5,
                due_at,
                now if due_at is None else None,
            ),
        )
    conn.close()

    queue = SqliteQueue(str(queue_path))
    assert queue.conn.execute("PRAGMA user_version").fetchone() == (2,)
    assert rows(queue_path, "SELECT name FROM sqlite_master WHERE name = 'evq_event_due'") == []
    assert cursor(queue_path) == 1
    leases = queue.lease(OneReceiver(lease_seconds=60), owner="w", limit=10).leases
    assert sorted(json.loads(lease.payload)["seq"] for lease in leases) == [2, 4]
    assert cursor(queue_path) == 4
    assert rows(queue_path, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == [
        ("evq_event_newest_deleted",)
    ]


def test_events_deleted_by_an_older_evq_or_by_hand_do_not_hide_new_ones(queue_path: Path) -> None:
    # An older evq prunes without knowing the cursor: a trigger on the table keeps it right.
    queue = SqliteQueue(str(queue_path))
    router = OneReceiver(lease_seconds=60)
    evq.publish_many([{"name": "a.b", "payload": {"n": n}} for n in range(3)])
    assert len(queue.lease(router, owner="w", limit=10).leases) == 3
    with contextlib.closing(sqlite3.connect(queue_path, isolation_level=None)) as conn:
        conn.execute("DELETE FROM evq_event WHERE seq >= 2")
    assert cursor(queue_path) == 1
    evq.publish("a.b", payload={"n": "new"})
    leases = queue.lease(router, owner="w", limit=10).leases
    assert [json.loads(lease.payload) for lease in leases] == [{"n": "new"}]
