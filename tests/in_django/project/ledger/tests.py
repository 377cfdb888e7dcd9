"""Tests of a Django project that publishes with evq, written as a Django user writes them
(run by `manage.py test` from tests/in_django/test_django.py, on SQLite and PostgreSQL).

Tagged `queue_in_database` (EVQ = {"DATABASE": "default"}) or `queue_elsewhere`
(EVQ = {"URL": <a SQLite file of its own>}): each run picks one tag.
"""

from __future__ import annotations

from django.core.management import call_command
from django.db import connection, transaction
from django.test import TestCase, TransactionTestCase, tag

import evq
from evq.publisher import queue
from ledger.models import AuditEntry, Order, Receipt


def stored(event_id: str) -> bool:
    """Whether evq's own connection (a worker's view) sees the event: committed."""
    return queue().event(event_id) is not None


def in_transaction(event_id: str) -> bool:
    """Whether Django's connection sees the event (in the current transaction too)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM evq_event WHERE id = %s", [event_id])
        return bool(cursor.fetchone()[0])


class Boom(Exception):
    pass


@tag("queue_in_database")
class PublishJoinsTheTransaction(TransactionTestCase):
    def test_an_event_published_in_a_committed_block_is_stored(self) -> None:
        with transaction.atomic():
            order = Order.objects.create(paid=True)
            event_id = evq.publish("test.published", payload={"order_id": order.pk})
            self.assertFalse(stored(event_id))  # not before the commit
        self.assertTrue(stored(event_id))

    def test_an_event_published_in_a_rolled_back_block_is_never_stored(self) -> None:
        with self.assertRaises(Boom), transaction.atomic():
            event_id = evq.publish("test.published", payload={"order_id": 1})
            self.assertTrue(in_transaction(event_id))
            raise Boom
        self.assertFalse(stored(event_id))
        self.assertFalse(in_transaction(event_id))

    def test_a_rolled_back_savepoint_takes_its_events_and_keeps_the_others(self) -> None:
        with transaction.atomic():
            kept = evq.publish("test.published", payload={"order_id": 1})
            with self.assertRaises(Boom), transaction.atomic():
                dropped = evq.publish("test.published", payload={"order_id": 2})
                raise Boom
        self.assertTrue(stored(kept))
        self.assertFalse(stored(dropped))

    def test_publish_many_joins_the_transaction(self) -> None:
        events = [{"name": "test.published", "payload": {"order_id": n}} for n in range(3)]
        with self.assertRaises(Boom), transaction.atomic():
            ids = evq.publish_many(events)
            raise Boom
        self.assertFalse(any(stored(event_id) for event_id in ids))
        with transaction.atomic():
            ids = evq.publish_many(events)
        self.assertTrue(all(stored(event_id) for event_id in ids))

    def test_outside_a_block_publish_commits_at_once(self) -> None:
        event_id = evq.publish("test.published", payload={"order_id": 1})
        self.assertTrue(stored(event_id))

    def test_the_worker_delivers_to_receivers_that_use_the_orm(self) -> None:
        with transaction.atomic():
            order = Order.objects.create(paid=True)
            evq.publish("order.paid", payload={"order_id": order.pk})
        call_command("evq", "worker", "--burst", "--quiet")
        self.assertTrue(Receipt.objects.filter(order=order).exists())
        self.assertTrue(AuditEntry.objects.filter(text=f"order.paid {order.pk}").exists())

    def test_migrate_evq_zero_drops_the_tables_and_migrate_makes_them_again(self) -> None:
        call_command("migrate", "evq", "zero", verbosity=0)
        self.assertNotIn("evq_event", connection.introspection.table_names())
        call_command("migrate", "evq", verbosity=0)
        self.assertIn("evq_event", connection.introspection.table_names())
        self.assertTrue(stored(evq.publish("test.published", payload={"order_id": 1})))


@tag("queue_in_database")
class TestCaseRollsEvqBack(TestCase):
    # TestCase wraps each test in a transaction it rolls back: evq's rows go with it. The two
    # tests run in this order (by name); the second sees nothing of the first.
    first_id: str | None = None

    def test_1_publish(self) -> None:
        TestCaseRollsEvqBack.first_id = evq.publish("test.published", payload={"order_id": 1})
        self.assertTrue(in_transaction(TestCaseRollsEvqBack.first_id))
        self.assertFalse(stored(TestCaseRollsEvqBack.first_id))

    def test_2_the_event_of_the_test_before_is_gone(self) -> None:
        assert TestCaseRollsEvqBack.first_id is not None
        self.assertFalse(in_transaction(TestCaseRollsEvqBack.first_id))
        self.assertFalse(stored(TestCaseRollsEvqBack.first_id))


@tag("queue_elsewhere")
class OnCommit(TestCase):
    def test_capture_on_commit_callbacks_sees_and_runs_the_deferred_publish(self) -> None:
        with self.captureOnCommitCallbacks() as callbacks:
            event_id = evq.publish("test.published", payload={"order_id": 1}, on_commit=True)
        self.assertEqual(len(callbacks), 1)
        self.assertFalse(stored(event_id))
        with self.captureOnCommitCallbacks(execute=True):
            event_id = evq.publish("test.published", payload={"order_id": 2}, on_commit=True)
        self.assertTrue(stored(event_id))

    def test_without_on_commit_publish_stores_at_once_even_in_a_block_that_rolls_back(
        self,
    ) -> None:
        with self.assertRaises(Boom), transaction.atomic():
            event_id = evq.publish("test.published", payload={"order_id": 1})
            raise Boom
        self.assertTrue(stored(event_id))


@tag("queue_elsewhere")
class OnCommitOutsideTests(TransactionTestCase):
    def test_on_commit_publish_is_dropped_when_the_block_rolls_back(self) -> None:
        with self.assertRaises(Boom), transaction.atomic():
            event_id = evq.publish("test.published", payload={"order_id": 1}, on_commit=True)
            raise Boom
        self.assertFalse(stored(event_id))
        with transaction.atomic():
            event_id = evq.publish("test.published", payload={"order_id": 1}, on_commit=True)
            self.assertFalse(stored(event_id))
        self.assertTrue(stored(event_id))
