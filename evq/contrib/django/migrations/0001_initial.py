"""evq's tables, when the queue is in Django's database (`EVQ = {"DATABASE": alias}`): made
by the storage backend's own schema code, dropped by `manage.py migrate evq zero`."""

from __future__ import annotations

from django.db import migrations

from evq.contrib.django.schema import create_tables, drop_tables


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [migrations.RunPython(create_tables, drop_tables, elidable=False)]
