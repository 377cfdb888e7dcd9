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


class EvqBackend(task_queue.Backend, BaseTaskBackend):
    """Tasks run by `evq worker` with leases, retries and dead letters (`task_queue.Backend`
    says what it supports)."""

    framework = FRAMEWORK
