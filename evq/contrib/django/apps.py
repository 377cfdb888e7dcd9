"""The Django app `evq.contrib.django` (label `evq`): evq set up when Django is ready."""

from __future__ import annotations

import sys
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks
from django.db import close_old_connections
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.signals import connection_created
from django.utils.module_loading import module_has_submodule

from evq import delivery, publisher, subscriptions
from evq.contrib.django.settings import BadSettings, read_settings
from evq.contrib.django.transactions import DjangoTransactions, RefusingTransactions

SUBSCRIPTIONS_MODULE = "subscriptions"
TASKS_MODULE = "tasks"


class EvqConfig(AppConfig):
    """Reads `settings.EVQ`, joins Django's transactions, imports every installed app's
    `subscriptions` module, makes evq's Tasks backends (and imports the apps' `tasks` modules),
    and has the worker close stale connections around deliveries."""

    name = "evq.contrib.django"
    label = "evq"
    verbose_name = "evq"
    default = True

    #: The mistake in `settings.EVQ`, if any: reported by `manage.py check` (and every command
    #: that runs the checks), by `manage.py evq`, and raised by `evq.publish`.
    error: BadSettings | None = None
    transactions: DjangoTransactions | None = None
    #: The mistake evq found in `settings.TASKS`, if any (the backend's check reports it).
    tasks_error: BadSettings | None = None

    def __init__(self, app_name: str, app_module: Any) -> None:
        super().__init__(app_name, app_module)
        # Now, before any app's ready() runs: subscriptions made there name their app.
        subscriptions.name_sources(_source_of)

    def ready(self) -> None:
        try:
            transactions = DjangoTransactions(read_settings())
        except BadSettings as exc:
            self.error = exc
            publisher.join_transactions(RefusingTransactions(exc))
        else:
            self.transactions = transactions
            publisher.join_transactions(transactions)
            connection_created.connect(self._follow_database, dispatch_uid="evq")
        delivery.call_around_attempts(close_old_connections)
        checks.register(check_settings, "evq")
        _import_subscriptions()
        if self.error is None:
            self.tasks_error = _load_task_backends()

    def _follow_database(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        if connection.alias == NO_DB_ALIAS:
            # Django is about to create or drop a database (the test runner's): evq's own
            # connections to it must not keep it from being dropped.
            publisher.close_queues()
            if "evq.storage.postgres.connection" in sys.modules:
                from evq.storage.postgres.connection import close_all

                close_all()
            return
        if self.transactions is not None and connection.alias == self.transactions.alias:
            if connection.vendor == "sqlite" and not connection.is_in_memory_db():
                from evq.storage.sqlite.connection import use_wal

                use_wal(connection.connection)
            self.transactions.follow_database()


def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """Django's system check of `settings.EVQ` (`manage.py check`, and before `migrate`)."""
    app = apps.get_app_config("evq")
    error = getattr(app, "error", None)
    return [] if error is None else [checks.Error(str(error), id="evq.E001")]


# evq's Tasks backends, by the framework they belong to.
TASK_BACKENDS = {
    "evq.contrib.django.tasks.EvqBackend": "django.tasks",
    "evq.contrib.django.tasks_backport.EvqBackend": "django_tasks",
}


def _load_task_backends() -> BadSettings | None:
    """Make evq's Tasks backends now, so that a worker subscribes to their queues, and import
    the `tasks` module of every installed app (the worker runs only tasks it imported); return
    the first backend's mistake, if any."""
    from importlib import import_module

    found = False
    for alias, params in (getattr(settings, "TASKS", None) or {}).items():
        package = TASK_BACKENDS.get(str(params.get("BACKEND")))
        if package is not None:
            found = True
            error = getattr(import_module(package).task_backends[alias], "error", None)
            if error is not None:
                return BadSettings(str(error))
    if found:
        for app_config in apps.get_app_configs():
            if app_config.label == "evq":
                continue  # its `tasks` is the backend for Django 6's framework
            if module_has_submodule(app_config.module, TASKS_MODULE):
                import_module(f"{app_config.name}.{TASKS_MODULE}")
    return None


def _import_subscriptions() -> None:
    """Import `<app>.subscriptions` of every installed app that has one, as Django's admin
    imports `admin.py`; an error in one stops Django's start, as it would for admin."""
    from importlib import import_module

    for app_config in apps.get_app_configs():
        if module_has_submodule(app_config.module, SUBSCRIPTIONS_MODULE):
            with subscriptions.loading(
                f"Django app {app_config.label} ({app_config.name}.{SUBSCRIPTIONS_MODULE})"
            ):
                import_module(f"{app_config.name}.{SUBSCRIPTIONS_MODULE}")


def _source_of(receiver: subscriptions.Receiver) -> str | None:
    """Subscriptions made in an `AppConfig.ready()` (or any module of an app) name the app."""
    module = getattr(receiver, "__module__", None)
    if not apps.apps_ready:
        return None
    app_config = apps.get_containing_app_config(module) if isinstance(module, str) else None
    return None if app_config is None else f"Django app {app_config.label}"
