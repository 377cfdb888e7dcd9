"""Tasks of the test project's own, on the Tasks framework of the Django it runs on."""

import os
from pathlib import Path

import django

if django.VERSION >= (6, 0):
    from django.tasks import task
else:
    from django_tasks import task


@task(queue_name="events")
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="events")
def fail(message: str) -> None:
    raise ValueError(message)


@task(queue_name="events", takes_context=True)
def attempt_number(context: object) -> int:
    return context.attempt  # type: ignore[attr-defined, no-any-return]


@task(queue_name="events")
async def add_later(a: int, b: int) -> int:
    return a + b


@task(queue_name="events")
def hang_the_first_time(marker: str) -> str:
    """Hangs on its first run (a worker killed then must leave it to the next)."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        import time

        time.sleep(3600)
    return "done"


@task(queue_name="events")
def fail_until(marker: str) -> str:
    """Fails until the file `marker` exists (a bug fixed, a service back)."""
    if not Path(marker).exists():
        raise RuntimeError("not yet")
    return "fixed"


@task(queue_name="events")
def return_a_date() -> object:
    """Returns what JSON cannot hold, after it has done its work."""
    import datetime

    return datetime.date(2026, 12, 1)
