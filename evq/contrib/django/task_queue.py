"""Django's Tasks framework on evq, written once for `django.tasks` (Django 6.0 and later) and
for the `django_tasks` backport: `evq.contrib.django.tasks.EvqBackend` and
`evq.contrib.django.tasks_backport.EvqBackend` differ only in the framework they subclass.

A task enqueued on queue Q is the event `django.tasks.Q` with the task's path, arguments and
backend alias as its payload; its result id is the event id. The worker delivers it to
`run_task`, so a task has evq's guarantees: a lease, retries, dead letters, `evq status`,
`evq events`, `evq replay`. A task's JSON return value is kept as the event
`django.task-results.<result id>` (pruned with the rest, after the retention period).

The worker runs only `Task` objects of modules already imported when it runs (installed apps,
`--app`): the path read from the queue never imports anything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sys
import types
from collections.abc import Iterable
from typing import Any

from django.core import checks

import evq
from evq import publisher
from evq.errors import EvqError, InvalidPayload
from evq.storage.contract import DeliveryRecord, EventSelection
from evq.subscriptions import DEFAULT_RETRIES, loading

EVENT_PREFIX = "django.tasks."
RESULT_PREFIX = "django.task-results."
RECEIVER = "evq.contrib.django.task_queue:run_task"
# A queue name is one segment of an event name.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
OPTIONS = ("RETRIES",)


@dataclasses.dataclass(frozen=True)
class Framework:
    """The parts of one Tasks framework (`django.tasks` or `django_tasks`) evq uses."""

    package: str  # "django.tasks" or "django_tasks"
    base: types.ModuleType
    exceptions: types.ModuleType
    signals: types.ModuleType
    invalid_task: type[Exception]
    invalid_backend: type[Exception]

    def backends(self) -> Any:
        return sys.modules[self.package].task_backends


class Backend:
    """What evq's Tasks backends are, whichever framework they subclass: put it before the
    framework's `BaseTaskBackend`, and set `framework`. Tasks run by `evq worker` with leases,
    retries and dead letters. Supports `run_after`, async tasks, `takes_context` and
    `get_result`; not `priority` (the framework refuses a task with one). OPTIONS:
    {"RETRIES": 5}."""

    framework: Framework
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = False
    queues: set[str]
    options: Any

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)  # type: ignore[call-arg]  # the framework's base
        # Made when a module with a @task is imported: a mistake is reported by check() (and
        # `manage.py evq`), and raised by enqueue, not at import.
        self.error: Exception | None = None
        try:
            retries = check_params(self.framework, alias, self.queues, self.options)
        except self.framework.invalid_backend as exc:
            self.error = exc
        else:
            subscribe_queues(alias, self.queues, retries)

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        """The framework's system check: evq's refusal of this backend's settings, if any."""
        yield from super().check(**kwargs)  # type: ignore[misc]  # the framework's base
        if self.error is not None:
            yield checks.Error(str(self.error), id="evq.E002")

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Publish the task as an evq event (inside the current transaction when the queue is
        in Django's database); return its result, READY."""
        if self.error is not None:
            raise self.error
        return enqueue(self.framework, self, task, args, kwargs)

    def get_result(self, result_id: str) -> Any:
        """The task's result as evq's record of it says: status, attempts, errors, value."""
        return get_result(self.framework, self, result_id)


class TaskNotImported(Exception):
    """The worker has not imported the module that defines a task: a dead letter, replayable
    once a worker that has it runs."""


class TaskFailed(Exception):
    """A task raised; the message starts with the exception's full class path."""


class TaskReturnedNoJSON(Exception):
    """A task returned a value JSON cannot hold: it ran, so it is not run again (a dead
    letter at once, as the framework's own backends fail such a task)."""


def check_params(framework: Framework, alias: str, queues: set[str], options: Any) -> int:
    """Check a backend's QUEUES and OPTIONS; return its number of retries, or raise the
    framework's `InvalidTaskBackend`."""
    for name in sorted(queues):
        if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
            raise framework.invalid_backend(
                f"TASKS[{alias!r}]['QUEUES'] has the queue name {name!r}, which evq refuses: use"
                " letters, digits, '_' and '-' (it becomes part of the event name"
                f" {EVENT_PREFIX}<queue>)"
            )
    unknown = sorted(str(key) for key in options if key not in OPTIONS)
    if unknown:
        raise framework.invalid_backend(
            f"TASKS[{alias!r}]['OPTIONS'] has unknown key {unknown[0]!r}: evq reads"
            f" {', '.join(repr(k) for k in OPTIONS)}"
        )
    retries = options.get("RETRIES", DEFAULT_RETRIES)
    if type(retries) is not int or retries < 0:
        raise framework.invalid_backend(
            f"TASKS[{alias!r}]['OPTIONS']['RETRIES'] must be a whole number, not {retries!r}"
        )
    return int(retries)


def subscribe_queues(alias: str, queues: set[str], retries: int) -> None:
    """Subscribe `run_task` to the events of `queues` (every queue when empty)."""
    patterns = [EVENT_PREFIX + name for name in sorted(queues)] or [EVENT_PREFIX + "*"]
    with loading(f"Django TASKS[{alias!r}]"):
        for pattern in patterns:
            evq.subscribe(
                pattern,
                receiver=run_task,
                retries=retries,
                dont_retry=(TaskNotImported, TaskReturnedNoJSON),
            )


def enqueue(framework: Framework, backend: Any, task: Any, args: Any, kwargs: Any) -> Any:
    """Publish `task` with its arguments; return its `TaskResult` (READY)."""
    backend.validate_task(task)
    now = _now()
    delay = None
    if task.run_after is not None:
        delay = max(0.0, (task.run_after - now).total_seconds())
    payload = {
        "task": task.module_path,
        "args": list(args),
        "kwargs": dict(kwargs),
        "backend": backend.alias,
        "framework": framework.package,
    }
    try:
        event_id = evq.publish(EVENT_PREFIX + task.queue_name, payload=payload, delay=delay)
    except InvalidPayload as exc:
        raise framework.invalid_task(f"the arguments of {task.name} must be JSON: {exc}") from exc
    result = _result(framework, task, event_id, args, kwargs, backend.alias)
    _set(result, status=framework.base.TaskResultStatus.READY, enqueued_at=now)
    framework.signals.task_enqueued.send(type(backend), task_result=result)
    return result


def get_result(framework: Framework, backend: Any, result_id: str) -> Any:
    """Return the `TaskResult` of `result_id` from evq's record of its event."""
    missing = framework.exceptions.TaskResultDoesNotExist
    try:
        record = publisher.queue().event(result_id)
    except EvqError:
        record = None
    if record is None or not record.name.startswith(EVENT_PREFIX):
        raise missing(f"no task result {result_id!r}")
    payload = json.loads(record.payload)
    task = imported_task(framework, payload["task"])
    if task is None:
        raise missing(f"task result {result_id!r} is of {payload['task']}, not imported here")
    result = _result(
        framework, task, record.id, payload["args"], payload["kwargs"], payload["backend"]
    )
    delivery = next((d for d in record.deliveries if d.receiver == RECEIVER), None)
    statuses = framework.base.TaskResultStatus
    status = {
        "running": statuses.RUNNING,
        "done": statuses.SUCCESSFUL,
        "dead": statuses.FAILED,
    }.get(record.status, statuses.READY)
    _set(result, status=status, enqueued_at=_time(record.published_at))
    if delivery is not None:
        _fill_attempts(framework, result, delivery)
    if status == statuses.SUCCESSFUL:
        _set(result, _return_value=_return_value(record.id))
    return result


def run_task(event: evq.Event, /) -> None:
    """evq's receiver of task events: run the task the event names, with its arguments."""
    payload = event.payload
    framework = framework_named(str(payload.get("framework")))
    task = imported_task(framework, str(payload["task"])) if framework else None
    if framework is None or task is None:
        raise TaskNotImported(
            f"the worker has not imported {payload['task']} (nor the Tasks framework it was"
            " enqueued with): it runs only tasks of installed apps and --app modules"
        )
    backend = framework.backends()[payload["backend"]]
    result = _result(
        framework, task, event.id, payload["args"], payload["kwargs"], payload["backend"]
    )
    now = _now()
    _set(
        result,
        status=framework.base.TaskResultStatus.RUNNING,
        started_at=now,
        last_attempted_at=now,
        worker_ids=[str(n) for n in range(event.attempt)],
    )
    framework.signals.task_started.send(type(backend), task_result=result)
    try:
        if task.takes_context:
            context = framework.base.TaskContext(task_result=result)
            value = task.call(context, *result.args, **result.kwargs)
        else:
            value = task.call(*result.args, **result.kwargs)
    except Exception as exc:
        _set(result, status=framework.base.TaskResultStatus.FAILED, finished_at=_now())
        framework.signals.task_finished.send(type(backend), task_result=result)
        kind = type(exc)
        raise TaskFailed(f"{kind.__module__}.{kind.__qualname__}: {exc}") from exc
    try:
        text = json.dumps({"return_value": value})
    except (TypeError, ValueError) as exc:
        # The task ran: running it again would repeat what it did. A dead letter, at once.
        _set(result, status=framework.base.TaskResultStatus.FAILED, finished_at=_now())
        framework.signals.task_finished.send(type(backend), task_result=result)
        raise TaskReturnedNoJSON(
            f"the task returned {type(value).__name__}, which JSON cannot hold: {exc}"
        ) from exc
    evq.publish(RESULT_PREFIX + event.id, payload=json.loads(text), key=RESULT_PREFIX + event.id)
    _set(result, status=framework.base.TaskResultStatus.SUCCESSFUL, finished_at=_now())
    framework.signals.task_finished.send(type(backend), task_result=result)


def imported_task(framework: Framework, path: str) -> Any:
    """The `Task` at `path` if its module is imported already, else None."""
    module_name, _, name = path.rpartition(".")
    module = sys.modules.get(module_name)
    task = getattr(module, name, None) if module is not None else None
    return task if isinstance(task, framework.base.Task) else None


def framework_named(package: str) -> Framework | None:
    """The framework `package` if it is imported in this process, else None."""
    if package not in sys.modules:
        return None
    if package == "django.tasks":
        from evq.contrib.django.tasks import FRAMEWORK
    elif package == "django_tasks":
        from evq.contrib.django.tasks_backport import FRAMEWORK
    else:
        return None
    return FRAMEWORK


# Private


def _result(
    framework: Framework, task: Any, result_id: str, args: Any, kwargs: Any, alias: str
) -> Any:
    return framework.base.TaskResult(
        task=task,
        id=result_id,
        status=framework.base.TaskResultStatus.READY,
        enqueued_at=None,
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=list(args),
        kwargs=dict(kwargs),
        backend=alias,
        errors=[],
        worker_ids=[],
    )


def _set(result: Any, **fields: Any) -> None:
    # TaskResult is a frozen dataclass, filled in as the framework's own backends do.
    for name, value in fields.items():
        object.__setattr__(result, name, value)


def _fill_attempts(framework: Framework, result: Any, delivery: DeliveryRecord) -> None:
    history = delivery.history
    errors = [
        framework.base.TaskError(
            exception_class_path=_class_path(attempt.error),
            traceback=(
                delivery.traceback
                if attempt is history[-1] and delivery.traceback
                else attempt.error or ""
            ),
        )
        for attempt in history
        if attempt.error
    ]
    started = [a.started_at for a in history if a.started_at is not None]
    if delivery.started_at is not None:
        started.append(delivery.started_at)
    _set(
        result,
        errors=errors,
        worker_ids=[a.worker or "" for a in history],
        started_at=_time(min(started)) if started else None,
        last_attempted_at=_time(max(started)) if started else None,
        finished_at=_time(delivery.finished_at) if delivery.state in ("done", "dead") else None,
    )


def _class_path(error: str | None) -> str:
    # evq records "TaskFailed: module.Class: message" for a task that raised.
    text = (error or "").removeprefix("TaskFailed: ")
    head = text.split(":", 1)[0]
    return head if re.fullmatch(r"[\w.]+", head) else "builtins.Exception"


def _return_value(result_id: str) -> Any:
    found = publisher.queue().events(EventSelection(name=RESULT_PREFIX + result_id), limit=1)
    return json.loads(found[0].payload)["return_value"] if found else None


def _now() -> dt.datetime:
    from django.utils import timezone

    now: dt.datetime = timezone.now()  # aware or naive, as settings.USE_TZ says
    return now


def _time(timestamp: float | None) -> dt.datetime | None:
    return None if timestamp is None else dt.datetime.fromtimestamp(timestamp, dt.UTC)
