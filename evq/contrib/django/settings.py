"""`settings.EVQ`: where the queue of a Django project lives.

    EVQ = {"DATABASE": "default"}       # in Django's own database (SQLite or PostgreSQL)
    EVQ = {"URL": "redis://host/0"}     # in a store of its own (also EVQ_URL, when EVQ is unset)

Every mistake is a `BadSettings` error of one line, which is both evq's `InvalidInput` (the
`evq` command exits 2 with it) and Django's `ImproperlyConfigured`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from evq.errors import InvalidInput

APP = "evq.contrib.django"
KEYS = ("DATABASE", "URL")
# Database vendors (Django's `connection.vendor`) whose database can hold the queue.
VENDORS = ("sqlite", "postgresql")
# Django's own OPTIONS of a PostgreSQL database, which libpq does not know.
_DJANGO_POSTGRES_OPTIONS = {
    "isolation_level",
    "server_side_binding",
    "pool",
    "assume_role",
    "cursor_factory",
    "context",
}


class BadSettings(InvalidInput, ImproperlyConfigured):
    """`settings.EVQ` (or what it names) cannot be used; the message says why in one line."""


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """Where the queue is: in the Django database `alias`, at `url`, or (both None) where
    evq's own settings say (EVQ_URL, else evq.db)."""

    alias: str | None = None
    url: str | None = None


def read_settings() -> QueueSettings:
    """Return `settings.EVQ` checked; raise `BadSettings` naming the mistake."""
    value = getattr(settings, "EVQ", None)
    if value is None:
        return QueueSettings()
    if not isinstance(value, Mapping):
        raise BadSettings(
            f"settings.EVQ must be a dict such as {{'DATABASE': 'default'}}, not"
            f" {type(value).__name__}"
        )
    unknown = sorted(str(key) for key in value if key not in KEYS)
    if unknown:
        raise BadSettings(
            f"settings.EVQ has unknown key {unknown[0]!r}: evq reads"
            f" {' and '.join(repr(k) for k in KEYS)}"
        )
    if "DATABASE" in value and "URL" in value:
        raise BadSettings(
            "settings.EVQ sets both 'DATABASE' and 'URL': keep 'DATABASE' for a queue in"
            " Django's database, or 'URL' for a queue of its own"
        )
    if "URL" in value:
        url = value["URL"]
        if not isinstance(url, str) or not url:
            raise BadSettings(f"settings.EVQ['URL'] must be a queue URL, not {url!r}")
        return QueueSettings(url=url)
    if "DATABASE" in value:
        alias = value["DATABASE"]
        check_database(alias)
        return QueueSettings(alias=alias)
    return QueueSettings()


def check_database(alias: object) -> None:
    """Raise `BadSettings` unless `alias` names a database evq can keep its queue in."""
    from django.db import connections

    databases = getattr(settings, "DATABASES", {})
    if not isinstance(alias, str) or alias not in databases:
        known = ", ".join(repr(name) for name in databases) or "none"
        raise BadSettings(
            f"settings.EVQ['DATABASE'] names the database {alias!r}, which is not in"
            f" settings.DATABASES (it has {known})"
        )
    engine = str(databases[alias].get("ENGINE", "?"))
    # Known engines are told apart by name: loading MySQL's backend needs its driver.
    vendor = next((v for v in ("mysql", "oracle") if v in engine), None)
    vendor = vendor or connections[alias].vendor
    if vendor not in VENDORS:
        shown = {"mysql": "MySQL", "oracle": "Oracle"}.get(vendor, vendor)
        raise BadSettings(
            f"settings.EVQ['DATABASE'] names {alias!r}, a {shown} database ({engine}), and evq"
            f" has no {shown} backend: keep the queue in a PostgreSQL or SQLite database, or"
            " in a store of its own with EVQ = {'URL': 'redis://...'} (or a SQLite file path)"
        )


def url_for(alias: str) -> str:
    """Return the evq URL of the Django database `alias` as its connection is set now (the
    test runner renames it to the test database)."""
    from django.db import connections

    connection = connections[alias]
    params: dict[str, Any] = connection.settings_dict
    name = params.get("NAME")
    if connection.vendor == "sqlite":
        if not name or connection.is_in_memory_db():
            raise BadSettings(
                f"the database {alias!r} is in memory, and evq's worker cannot open it: give"
                f" it a file (for tests, DATABASES[{alias!r}]['TEST']['NAME'] = 'test.sqlite3')"
            )
        return os.path.abspath(str(name))
    return _postgres_url(params)


def check_app_installed() -> None:
    """Raise `BadSettings` if `settings.EVQ` is set but the app that reads it is not
    installed: evq would publish to a queue nobody configured."""
    from django.apps import apps

    if not settings.configured or getattr(settings, "EVQ", None) is None:
        return
    if not apps.ready or apps.is_installed(APP):
        return
    raise BadSettings(
        f"settings.EVQ is set but {APP!r} is not in INSTALLED_APPS: add it, so that evq uses"
        " the queue EVQ names"
    )


def _postgres_url(params: Mapping[str, Any]) -> str:
    user = quote(str(params.get("USER") or ""), safe="")
    password = str(params.get("PASSWORD") or "")
    credentials = f"{user}:{quote(password, safe='')}" if password else user
    host = str(params.get("HOST") or "")
    if host.startswith("/"):  # a Unix socket directory: a query parameter in a URL
        host_part, socket = "", {"host": host}
    else:
        host_part, socket = (f"[{host}]" if ":" in host else host), {}
    port = f":{params['PORT']}" if params.get("PORT") else ""
    options = {
        key: value
        for key, value in (params.get("OPTIONS") or {}).items()
        if key not in _DJANGO_POSTGRES_OPTIONS and isinstance(value, (str, int))
    }
    query = urlencode({**socket, **options})
    at = "@" if credentials else ""
    name = quote(str(params.get("NAME") or ""), safe="")
    return f"postgresql://{credentials}{at}{host_part}{port}/{name}" + (
        f"?{query}" if query else ""
    )
