"""Where the queue lives: `open_queue(url)`, the one place that picks a backend.

- `contract`: the types that cross the seam and the `Queue` protocol every backend implements,
  with what each method promises (atomic, fenced by a lease, lazy); `publishing`, the part of
  it a publish needs, apart so that `evq publish` builds nothing more.
- `rules`: the rules of the domain, written once: states, dead letters, replay, retention.
- one package per backend: `sqlite` (a file; the default), `postgres` and `redis` (servers),
  `memory` (inside one process, for tests: see `evq.testing`).

Every module outside `evq.storage` gets its queue from `open_queue()`, and a backend's driver
is imported only when a URL names it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from evq.errors import UnknownBackend
from evq.storage.publishing import Role

if TYPE_CHECKING:
    from evq.storage.contract import Queue

__all__ = ["Queue", "Role", "open_queue"]

# URL scheme -> (backend module, class, the extra that installs its driver or None).
_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "sqlite": ("evq.storage.sqlite", "SqliteQueue", None),
    "postgresql": ("evq.storage.postgres", "PostgresQueue", "postgres"),
    "postgres": ("evq.storage.postgres", "PostgresQueue", "postgres"),
    "redis": ("evq.storage.redis", "RedisQueue", "redis"),
    "rediss": ("evq.storage.redis", "RedisQueue", "redis"),
    "unix": ("evq.storage.redis", "RedisQueue", "redis"),
    "memory": ("evq.storage.memory", "MemoryQueue", None),
}


def open_queue(url: str, *, role: Role = "publish", create: bool = True) -> Queue:
    """Return a handle on the queue at `url`.

    The scheme picks the backend: `sqlite:///path` or a plain path is SQLite,
    `postgresql://` or `postgres://` is PostgreSQL; `redis://`, `rediss://` and `unix://` are
    Redis; `memory://` is a queue inside this process, for tests. `role` lets a backend choose
    how durably to write (see `contract.Role`); with `create=False`, a queue that does not
    exist yet is an error (`QueueNotFound`) instead of being created.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else "sqlite"
    if scheme not in _BACKENDS:
        known = ", ".join(f"{name}://" for name in _BACKENDS)
        raise UnknownBackend(
            f"unsupported storage URL scheme {scheme!r}: use a path, or one of {known}"
        )
    module_name, class_name, extra = _BACKENDS[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name is None or exc.name.startswith("evq"):
            raise
        raise UnknownBackend(
            f"the {scheme} backend needs a driver that is not installed ({exc.name}):"
            f" pip install 'evq[{extra}]'"
        ) from None
    queue: Queue = getattr(module, class_name)(url, role=role, create=create)
    return queue


def __getattr__(name: str) -> Any:
    # `Queue` loads the whole contract: only when asked for, never by a publish.
    if name == "Queue":
        from evq.storage.contract import Queue

        return Queue
    raise AttributeError(f"module 'evq.storage' has no attribute {name!r}")
