"""How an idle worker learns, within milliseconds, that there may be new work: it blocks in
one XREAD of two streams, the queue's inbox (where every publish of an event due now adds an
entry) and `wake` (where every other script that adds work adds one: a delayed publish, a
retry, a redrive, a replay). It reads past the last entries it saw, so an entry added while
it was busy wakes it at once, and none is missed between two waits. A delayed delivery or a
retry falls due and wakes the worker through `next_due`, as on every backend."""

from __future__ import annotations

import time
from typing import Any

import redis

from evq.storage.redis.connection import READ_TIMEOUT_SECONDS, Connection

# After a broken connection: how long to wait before saying "maybe" and reading again.
_RETRY_SECONDS = 0.5
_STREAMS = ("inbox", "wake")
# Below the client's read timeout: a longer wait is several reads.
_LONGEST_BLOCK_SECONDS = READ_TIMEOUT_SECONDS / 2


class ChangeWatcher:
    """Waits for new entries in the queue's inbox and wake-up streams."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._keys = [connection.base + name for name in _STREAMS]
        # The last entry seen of each stream; None until the first wait reads them.
        self._seen: list[str] | None = None

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a new entry; tell whether there may be new work.
        A lost connection says "maybe": the worker then looks, and its outage handling
        takes over if the server is down."""
        client = self._connection.client
        try:
            if self._seen is None:
                self._seen = [self._last_id(client, key) for key in self._keys]
                return True  # work may have come before the watcher knew where to read from
            streams: dict[Any, Any] = dict(zip(self._keys, self._seen, strict=True))
            # One entry a stream: an inbox entry is gone once a worker took it into the log,
            # so one left means work; `wake` keeps only its last.
            block = round(min(timeout, _LONGEST_BLOCK_SECONDS) * 1000)
            reply = client.xread(streams, count=1, block=max(1, block))
            if not reply:
                return False
            for key, entries in reply.items() if isinstance(reply, dict) else reply:
                self._seen[self._keys.index(str(key))] = str(entries[-1][0])
            return True
        except (redis.RedisError, OSError):
            self._seen = None
            time.sleep(min(timeout, _RETRY_SECONDS))
            return True

    @staticmethod
    def _last_id(client: redis.Redis, key: str) -> str:
        last = client.xrevrange(key, count=1)
        return str(last[0][0]) if last else "0-0"

    def close(self) -> None:
        """Nothing to give back: each wait borrows a connection of the pool."""
        self._seen = None
