"""evq: durable publish/subscribe events on an embedded SQLite queue.

    import evq

    @evq.subscriber("user.created")
    def send_welcome_email(event: evq.Event, /) -> None:
        ...

    evq.publish("user.created", payload={"user_id": 42})

Run `evq worker` to deliver published events to their receivers. Importing evq imports only the
standard library, and the subscription machinery only when it is first used: `evq publish`
and the worker's machinery (huey) stay out of each other's start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evq.config import configure
from evq.errors import EvqError, InvalidInput, Retry
from evq.event import Event
from evq.publisher import publish, publish_many

if TYPE_CHECKING:
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

_LAZY = {"Receiver", "Subscription", "subscribe", "subscriber"}


def __getattr__(name: str) -> Any:
    # Publishing never needs the subscription registry: load it on first use.
    if name in _LAZY:
        from evq import subscriptions

        return getattr(subscriptions, name)
    raise AttributeError(f"module 'evq' has no attribute {name!r}")
