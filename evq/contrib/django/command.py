"""The `evq` command with Django set up: `manage.py evq ...` and
`evq --django-settings shop.settings ...` (or `DJANGO_SETTINGS_MODULE`)."""

from __future__ import annotations

import os
import sys

from evq import config
from evq.contrib.django.settings import APP, BadSettings
from evq.errors import InvalidInput


def set_up(settings_module: str) -> None:
    """Set Django up with `settings_module` (a module of the current directory, as
    `manage.py` finds it), then point the command at the queue `settings.EVQ` names."""
    if "" not in sys.path:
        sys.path.insert(0, "")
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    try:
        import django
    except ImportError:
        raise InvalidInput(
            "--django-settings (or DJANGO_SETTINGS_MODULE) needs Django: pip install 'evq[django]'"
        ) from None
    from django.core.exceptions import ImproperlyConfigured

    try:
        django.setup()
    except ModuleNotFoundError as exc:
        if exc.name is not None and f"{settings_module}.".startswith(f"{exc.name}."):
            raise InvalidInput(
                f"cannot import the Django settings module {settings_module!r}: no such module"
            ) from None
        raise
    except ImproperlyConfigured as exc:
        raise InvalidInput(f"Django is not configured: {exc}") from None
    use_django_queue()


def use_django_queue() -> None:
    """Make the queue of `settings.EVQ` the default of every `evq` command in this process
    (its `--url`, through EVQ_URL); raise `BadSettings` if the settings are wrong."""
    from django.apps import apps
    from django.conf import settings

    if not apps.is_installed(APP):
        if getattr(settings, "EVQ", None) is not None:
            raise BadSettings(
                f"settings.EVQ is set but {APP!r} is not in INSTALLED_APPS: add it, so that"
                " evq uses the queue EVQ names"
            )
        return
    from evq.contrib.django.apps import EvqConfig

    app = apps.get_app_config("evq")
    assert isinstance(app, EvqConfig)
    if app.error is not None:
        raise app.error
    if app.tasks_error is not None:
        raise app.tasks_error
    if app.transactions is not None:
        app.transactions.follow_database()
        if app.transactions.error is not None:
            raise app.transactions.error
    if app.transactions is not None and (
        app.transactions.alias is not None or getattr(settings, "EVQ", {}).get("URL")
    ):
        os.environ["EVQ_URL"] = config.current().url
