"""One attempt's outcome: the retry schedule."""

from __future__ import annotations

import evq
from evq.delivery import retry_delay
from evq.subscriptions import Subscription


def receiver(event: evq.Event, /) -> None:
    """A receiver to subscribe."""


def subscription(**options: object) -> Subscription:
    return Subscription(pattern="a.b", receiver=receiver, name="m:receiver", **options)  # type: ignore[arg-type]


def test_backoff_grows_exponentially_up_to_the_maximum() -> None:
    plain = subscription(retry_delay=10.0, retry_backoff=3.0, max_retry_delay=100.0, jitter=False)
    assert [retry_delay(plain, n) for n in range(1, 6)] == [10.0, 30.0, 90.0, 100.0, 100.0]


def test_jitter_spreads_retries_between_half_the_backoff_and_the_backoff() -> None:
    jittered = subscription(retry_delay=10.0, retry_backoff=2.0, jitter=True)
    delays = [retry_delay(jittered, 2) for _ in range(200)]
    assert all(10.0 <= delay <= 20.0 for delay in delays)
    assert len(set(delays)) > 100  # actually random, not the plain backoff every time
    assert min(delays) < 12.0 and max(delays) > 18.0


def test_thousands_of_retries_wait_the_maximum_instead_of_overflowing() -> None:
    many = subscription(retry_delay=1.0, retry_backoff=10.0, max_retry_delay=60.0, jitter=False)
    assert retry_delay(many, 5000) == 60.0
