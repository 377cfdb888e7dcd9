"""`evq.publish()` inside Django's transactions.

With the queue in Django's database (`EVQ = {"DATABASE": alias}`), events are written through
Django's own connection for that alias, inside `transaction.atomic(using=alias)`: inside an
atomic block that is a savepoint of the current transaction, so the event commits with the
outermost block or not at all; outside one, Django's autocommit commits it at once. There is no
window between the commit and the write: they are the same commit.

With the queue elsewhere (a separate file, PostgreSQL server or Redis), `publish` stores the
event at once, whatever Django's transaction does later; `publish(..., on_commit=True)` defers
the store to `transaction.on_commit` (see `evq.publish` for the window that leaves).
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from evq import config, publisher
from evq.contrib.django.settings import BadSettings, QueueSettings, url_for
from evq.storage.contract import NewEvent


class DjangoTransactions:
    """evq's `publisher.Transactions` for Django: see the module docstring."""

    def __init__(self, queue_settings: QueueSettings) -> None:
        self.alias = queue_settings.alias
        self.error: BadSettings | None = None
        if queue_settings.url is not None:
            config.configure(url=queue_settings.url)
        self.follow_database()

    def follow_database(self) -> None:
        """Point evq at the database the alias's connection uses now (Django's test runner
        renames it to the test database)."""
        if self.alias is None:
            return
        try:
            url = url_for(self.alias)
        except BadSettings as exc:
            self.error = exc
            return
        self.error = None
        if config.current().url != url:
            publisher.close_queues()
            config.configure(url=url)

    def publish(self, events: list[NewEvent], /) -> list[str]:
        """Store `events` in the current transaction of the queue's database alias, or in the
        queue elsewhere at once."""
        if self.error is not None:
            raise self.error
        store = publisher.queue()
        if self.alias is None:
            return store.publish(events)
        with transaction.atomic(using=self.alias):
            wrapper = connections[self.alias]
            wrapper.ensure_connection()
            return store.publish_within(wrapper.connection, events)

    def on_commit(self, events: list[NewEvent], /) -> None:
        """Store `events` when the current transaction commits, never if it rolls back."""
        if self.error is not None:
            raise self.error
        store = publisher.queue()  # a queue that cannot be opened fails here, not at commit
        store_events: Callable[[], object] = lambda: store.publish(events)  # noqa: E731
        transaction.on_commit(store_events, using=self.alias or DEFAULT_DB_ALIAS)


class RefusingTransactions:
    """Stands in for `DjangoTransactions` when `settings.EVQ` is wrong: every publish raises
    the mistake, instead of storing the event where the settings did not mean."""

    def __init__(self, error: BadSettings) -> None:
        self.error = error

    def publish(self, events: list[NewEvent], /) -> list[str]:
        raise self.error

    def on_commit(self, events: list[NewEvent], /) -> None:
        raise self.error
