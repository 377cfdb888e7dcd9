"""How an idle worker learns, within milliseconds, that there may be new work: every script
that adds work (a publish, a retry, a redrive, a replay) publishes to the queue's `wake`
channel, and the watcher blocks in a read of its subscription. A delayed delivery or a retry
wakes the worker through `next_due`, as on every backend."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis

from evq.storage.redis.connection import Connection

# After a broken connection: how long to wait before saying "maybe" and subscribing again.
_RETRY_SECONDS = 0.5


class ChangeWatcher:
    """Waits for messages on the queue's wake-up channel."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._channel = connection.base + "wake"
        self._pubsub: Any = None

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a message; tell whether there may be new work.
        A lost connection says "maybe": the worker then looks, and its outage handling
        takes over if the server is down."""
        try:
            if self._pubsub is None:
                self._pubsub = self._connection.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                self._pubsub.subscribe(self._channel)
                return True  # work may have come while no one listened
            message = self._pubsub.get_message(timeout=timeout)
            if message is not None:
                # Drain what came with it: one look at the queue serves them all.
                while self._pubsub.get_message(timeout=0) is not None:
                    pass
                return True
            return False
        except (redis.RedisError, OSError):
            self.close()
            time.sleep(min(timeout, _RETRY_SECONDS))
            return True

    def close(self) -> None:
        """Unsubscribe and give the connection back."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()
