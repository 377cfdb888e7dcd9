"""The part of the storage contract (`evq.storage.contract`, which re-exports it) that a
publish needs: the event it hands a backend, the role it opens a queue in, and what a backend
can do. Kept apart so that `evq publish` does not build the contract's other classes."""

from typing import Literal, NamedTuple

# No `from __future__ import annotations`: see `evq.storage.contract`.

#: Who opens a queue, so that a backend can choose how durably to write. Publishers wait for
#: durable commits; a worker may write its outcomes less durably (a lost outcome only repeats a
#: delivery); inspection only reads.
Role = Literal["publish", "work", "inspect"]


class NewEvent(NamedTuple):
    """An event ready to be stored: validated, with its payload already encoded as JSON, and
    its headers too (None when it has none: most events, stored at no cost)."""

    id: str
    name: str
    payload: str
    published_at: float
    due_at: float
    key: str | None = None
    headers: str | None = None


class Capabilities(NamedTuple):
    """What a backend can do beyond the contract's core.

    `wakeup`: `Queue.watch()` returns a watcher that wakes an idle worker within milliseconds of
    a commit (without it, workers poll). `outbox`: `Queue.publish_within()` writes inside a
    caller's transaction on the connection types named here. `durability`: the values of the
    backend's `sync` URL parameter, most durable first.
    """

    wakeup: bool = False
    outbox: tuple[str, ...] = ()
    durability: tuple[str, ...] = ()
