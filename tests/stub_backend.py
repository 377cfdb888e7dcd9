"""A backend with nothing but the core of the contract, to check what neutral code does with a
backend that lacks a capability. Registered by the tests that need it, never installed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evq.storage.contract import Capabilities, NewEvent


class StubQueue:
    """Stores published events in a list; has no outbox and cannot wake workers."""

    backend = "Stub"
    capabilities = Capabilities()

    def __init__(self, url: str, *, role: str = "publish", create: bool = True) -> None:
        self.url = url
        self.published: list[NewEvent] = []

    def publish(self, events: Sequence[NewEvent]) -> list[str]:
        self.published.extend(events)
        return [event.id for event in events]

    def publish_within(self, connection: Any, events: Sequence[NewEvent]) -> list[str]:
        raise AssertionError("neutral code must not call a capability the backend lacks")

    def close(self) -> None:
        pass
