"""evq as a backend of Django's Tasks framework (`django.tasks`, Django 6.0 and later):

    TASKS = {
        "default": {
            "BACKEND": "evq.contrib.django.tasks.EvqBackend",
            "QUEUES": ["events"],
        },
    }

See `evq.contrib.django.task_queue` for how tasks map onto events; the backport `django_tasks`
has `evq.contrib.django.tasks_backport.EvqBackend`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core import checks
from django.tasks import base, exceptions, signals
from django.tasks.backends.base import BaseTaskBackend

from evq.contrib.django import task_queue

FRAMEWORK = task_queue.Framework(
    package="django.tasks",
    base=base,
    exceptions=exceptions,
    signals=signals,
    invalid_task=exceptions.InvalidTask,
    invalid_backend=exceptions.InvalidTaskBackend,
)


class EvqBackend(BaseTaskBackend):
    """Tasks run by `evq worker` with leases, retries and dead letters. Supports `run_after`,
    async tasks, `takes_context` and `get_result`; not `priority` (the framework refuses a
    task with one). OPTIONS: {"RETRIES": 5}."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        # Made when a module with a @task is imported: a mistake is reported by check() (and
        # `manage.py evq`), and raised by enqueue, not at import.
        self.error: Exception | None = None
        try:
            retries = task_queue.check_params(FRAMEWORK, alias, self.queues, self.options)
        except FRAMEWORK.invalid_backend as exc:
            self.error = exc
        else:
            task_queue.subscribe_queues(alias, self.queues, retries)

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        """The framework's system check: evq's refusal of this backend's settings, if any."""
        yield from super().check(**kwargs)
        if self.error is not None:
            yield checks.Error(str(self.error), id="evq.E002")

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Publish the task as an evq event (inside the current transaction when the queue is
        in Django's database); return its result, READY."""
        if self.error is not None:
            raise self.error
        return task_queue.enqueue(FRAMEWORK, self, task, args, kwargs)

    def get_result(self, result_id: str) -> Any:
        """The task's result as evq's record of it says: status, attempts, errors, value."""
        return task_queue.get_result(FRAMEWORK, self, result_id)
