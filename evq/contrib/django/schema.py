"""evq's tables in Django's database, made and dropped by the `evq` app's migration with
the storage backend's own schema code (one source for the schema)."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def create_tables(registry: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Create evq's tables (or bring them up to date) if the queue is in this database."""
    connection = _queue_connection(schema_editor)
    if connection is None:
        return
    if connection.vendor == "sqlite":
        from evq.storage.sqlite.schema import ensure_schema

        ensure_schema(connection.connection)
        return
    from evq.storage.postgres.schema import migrate_within

    with connection.connection.cursor() as cursor:
        migrate_within(cursor, f"the database {connection.alias!r}")


def drop_tables(registry: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Drop evq's tables, with every event in them, if the queue is in this database."""
    connection = _queue_connection(schema_editor)
    if connection is None:
        return
    if connection.vendor == "sqlite":
        from evq.storage.sqlite.schema import drop_schema

        drop_schema(connection.connection)
        return
    from evq.storage.postgres.schema import drop_within

    with connection.connection.cursor() as cursor:
        drop_within(cursor)


def _queue_connection(schema_editor: BaseDatabaseSchemaEditor) -> Any:
    """Django's connection being migrated, if it holds the queue (`settings.EVQ`), else None;
    raise the settings' mistake, if any, before anything is created."""
    from evq.contrib.django.apps import EvqConfig

    app = apps.get_app_config("evq")
    assert isinstance(app, EvqConfig)
    if app.error is not None:
        raise app.error
    connection = schema_editor.connection
    if app.transactions is None or app.transactions.alias != connection.alias:
        return None
    connection.ensure_connection()
    return connection
