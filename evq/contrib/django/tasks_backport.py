"""evq as a backend of Django's Tasks framework (the `django_tasks` backport, on Django 5.2):

    TASKS = {
        "default": {
            "BACKEND": "evq.contrib.django.tasks_backport.EvqBackend",
            "QUEUES": ["events"],
        },
    }

See `evq.contrib.django.task_queue` for how tasks map onto events; Django 6's own `django.tasks`
has `evq.contrib.django.tasks.EvqBackend`.
"""

from __future__ import annotations

from django_tasks import base, exceptions, signals
from django_tasks.backends.base import BaseTaskBackend

from evq.contrib.django import task_queue

FRAMEWORK = task_queue.Framework(
    package="django_tasks",
    base=base,
    exceptions=exceptions,
    signals=signals,
    invalid_task=exceptions.InvalidTaskError,
    invalid_backend=exceptions.InvalidTaskBackendError,
)


class EvqBackend(task_queue.Backend, BaseTaskBackend):
    """Tasks run by `evq worker` with leases, retries and dead letters (`task_queue.Backend`
    says what it supports)."""

    framework = FRAMEWORK
