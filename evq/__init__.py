"""evq: durable publish/subscribe events on an embedded SQLite queue.

    import evq

    @evq.subscriber("user.created")
    def send_welcome_email(event: evq.Event, /) -> None:
        ...

    evq.publish("user.created", payload={"user_id": 42})

Run `evq worker` to deliver published events to their receivers. Importing evq imports only the
standard library: the worker's machinery (huey) loads when a worker starts.
"""

from __future__ import annotations

from evq.config import configure
from evq.errors import EvqError, InvalidInput, Retry
from evq.event import Event
from evq.publisher import publish, publish_many
from evq.subscriptions import Receiver, Subscription, subscribe, subscriber

__version__ = "0.1.0"

__all__ = [
    "Event",
    "EvqError",
    "InvalidInput",
    "Receiver",
    "Retry",
    "Subscription",
    "__version__",
    "configure",
    "publish",
    "publish_many",
    "subscribe",
    "subscriber",
]
