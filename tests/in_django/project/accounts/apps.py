"""The seed's way to subscribe: in AppConfig.ready(), through the seed's own `events` module."""

import events
from django import apps


class Config(apps.AppConfig):
    name = "accounts"

    def ready(self) -> None:
        events.subscribe("user.created", receiver=user_created)


def user_created(event: events.Event, /) -> None:
    from ledger.models import AuditEntry

    AuditEntry.objects.create(text=f"user.created {event.payload['user_id']}")
