"""evq: durable publish/subscribe events on an embedded SQLite queue.

    import evq

    @evq.subscriber("user.created")
    def send_welcome_email(event: evq.Event, /) -> None:
        ...

    evq.publish("user.created", payload={"user_id": 42})
    await evq.apublish("user.created", payload={"user_id": 42})  # in asyncio code

Run `evq worker` to deliver published events to their receivers. The names below load on first
use, so that `evq publish` pays only for what publishing needs, and publishing never imports
the worker's machinery (huey).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evq.async_publisher import apublish, apublish_many
    from evq.config import configure
    from evq.errors import EvqError, InvalidInput, Retry
    from evq.event import Event
    from evq.publisher import publish, publish_many
    from evq.subscriptions import Receiver, Subscription, subscribe, subscriber

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "apublish": "evq.async_publisher",
    "apublish_many": "evq.async_publisher",
    "configure": "evq.config",
    "EvqError": "evq.errors",
    "InvalidInput": "evq.errors",
    "Retry": "evq.errors",
    "Event": "evq.event",
    "publish": "evq.publisher",
    "publish_many": "evq.publisher",
    "Receiver": "evq.subscriptions",
    "Subscription": "evq.subscriptions",
    "subscribe": "evq.subscriptions",
    "subscriber": "evq.subscriptions",
}

__all__ = [
    "Event",
    "EvqError",
    "InvalidInput",
    "Receiver",
    "Retry",
    "Subscription",
    "__version__",
    "apublish",
    "apublish_many",
    "configure",
    "publish",
    "publish_many",
    "subscribe",
    "subscriber",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'evq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
