"""The seed's events.py, unchanged, on evq's Tasks backend; and the backend's contract."""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
from pathlib import Path

import events
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.test import TransactionTestCase, tag
from django.utils import timezone
from ledger.models import AuditEntry

import evq
from accounts import tasks
from evq.publisher import queue


def deliver() -> None:
    call_command("evq", "worker", "--burst", "--quiet")


@tag("queue_in_database")
class SeedOnEvq(TransactionTestCase):
    def test_the_seeds_publish_runs_its_receiver_through_the_evq_worker(self) -> None:
        events.publish("user.created", payload={"user_id": 42})
        self.assertFalse(AuditEntry.objects.filter(text="user.created 42").exists())
        deliver()
        self.assertTrue(AuditEntry.objects.filter(text="user.created 42").exists())
        stored = queue().events(limit=None)
        self.assertIn("django.tasks.events", {record.name for record in stored})

    def test_the_seeds_task_result_goes_from_ready_to_successful(self) -> None:
        result = events._execute_event.enqueue(
            receiver_identifier="accounts.apps:user_created",
            name="user.created",
            payload={"user_id": 7},
        )
        self.assertEqual(result.status, "READY")
        self.assertIsNotNone(queue().event(result.id))  # the result id is the event id
        deliver()
        result.refresh()
        self.assertEqual(result.status, "SUCCESSFUL")
        self.assertIsNone(result.return_value)
        self.assertIsNotNone(result.finished_at)


@tag("queue_in_database")
class TasksBackend(TransactionTestCase):
    def test_get_result_has_the_json_return_value(self) -> None:
        result = tasks.add.enqueue(2, 3)
        deliver()
        fetched = tasks.add.get_result(result.id)
        self.assertEqual((fetched.status, fetched.return_value), ("SUCCESSFUL", 5))
        self.assertEqual((fetched.args, fetched.kwargs), ([2, 3], {}))

    def test_a_failing_task_is_failed_with_its_error(self) -> None:
        result = tasks.fail.enqueue("no stock")
        deliver()
        result.refresh()
        self.assertEqual(result.status, "FAILED")
        self.assertEqual(result.errors[-1].exception_class_path, "builtins.ValueError")
        self.assertIn("no stock", result.errors[-1].traceback)
        dead = queue().dead_letters()
        self.assertIn(result.id, {letter.event_id for letter in dead})

    def test_a_task_returning_what_json_cannot_hold_is_failed_without_running_again(
        self,
    ) -> None:
        result = tasks.return_a_date.enqueue()
        deliver()
        result.refresh()
        self.assertEqual(result.status, "FAILED")
        [letter] = [d for d in queue().dead_letters() if d.event_id == result.id]
        self.assertIn("the task returned date, which JSON cannot hold", letter.error or "")
        self.assertEqual(letter.attempts, 1)

    def test_a_failed_task_redriven_from_the_dead_letters_runs_again(self) -> None:
        marker = Path(tempfile.mkdtemp()) / "fixed"
        result = tasks.fail_until.enqueue(str(marker))
        deliver()
        result.refresh()
        self.assertEqual((result.status, len(result.errors)), ("FAILED", 1))
        marker.touch()
        [letter] = [d for d in queue().dead_letters() if d.event_id == result.id]
        call_command("evq", "dlq", "redrive", letter.id)
        deliver()
        result.refresh()
        self.assertEqual((result.status, result.return_value), ("SUCCESSFUL", "fixed"))

    def test_run_after_is_evqs_delay(self) -> None:
        later = timezone.now() + dt.timedelta(hours=1)
        result = tasks.add.using(run_after=later).enqueue(1, 1)
        deliver()
        result.refresh()
        self.assertEqual(result.status, "READY")
        self.assertEqual(queue().event(result.id).status, "scheduled")

    def test_takes_context_and_async_tasks_run(self) -> None:
        with_context = tasks.attempt_number.enqueue()
        asynchronous = async_to_sync(tasks.add_later.aenqueue)(4, 5)
        deliver()
        self.assertEqual(tasks.attempt_number.get_result(with_context.id).return_value, 1)
        self.assertEqual(tasks.add_later.get_result(asynchronous.id).return_value, 9)

    def test_priority_is_refused_by_the_frameworks_validation(self) -> None:
        with self.assertRaisesMessage(Exception, "does not support setting priority"):
            tasks.add.using(priority=10).enqueue(1, 2)

    def test_a_queue_the_backend_does_not_have_is_refused(self) -> None:
        with self.assertRaisesMessage(Exception, "Queue 'other' is not valid for backend"):
            tasks.add.using(queue_name="other").enqueue(1, 2)

    def test_arguments_that_are_not_json_are_refused(self) -> None:
        before = len(queue().events(limit=None))
        with self.assertRaisesMessage(Exception, "must be JSON"):
            tasks.add.enqueue(object(), 2)
        self.assertEqual(len(queue().events(limit=None)), before)

    def test_a_task_path_from_the_queue_never_imports_anything(self) -> None:
        event_id = evq.publish(
            "django.tasks.events",
            payload={
                "task": "never_imported_module.run",
                "args": [],
                "kwargs": {},
                "backend": "default",
                "framework": tasks.add.__class__.__module__.rsplit(".", 1)[0],
            },
        )
        deliver()
        self.assertNotIn("never_imported_module", sys.modules)
        record = queue().event(event_id)
        self.assertEqual(record.status, "dead")
        self.assertIn("TaskNotImported", record.deliveries[0].last_error)
