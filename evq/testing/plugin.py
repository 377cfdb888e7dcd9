"""The pytest plugin of `evq.testing`: the `evq_queue` fixture and the `evq` marker.

Registered through the `pytest11` entry point, so it is active wherever evq is installed;
`pytest -p no:evq` turns it off. Only pytest imports this module: importing evq never imports
pytest.

    @pytest.mark.evq(subscriptions=[shop.emails.send_welcome], backend="sqlite")
    def test_welcome(evq_queue): ...

The marker is optional: `subscriptions` chooses the ones `deliver()` delivers to (by default,
every one registered, installed packages' included), `backend="sqlite"` puts the queue in a
temporary SQLite file instead of memory (for code that needs a real file, such as the
transactional outbox).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from evq.testing import TestQueue

_BACKENDS = ("memory", "sqlite")
_MARKER = (
    "evq(subscriptions=None, backend='memory'): the subscriptions evq_queue.deliver() delivers"
    " to (default: every registered one), and where the test's queue lives: 'memory' or"
    " 'sqlite' (a temporary file)"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER)


@pytest.fixture
def evq_queue(request: pytest.FixtureRequest) -> Iterator[TestQueue]:
    """A queue of this test's own that `evq.publish` publishes to during the test: see what
    was published (`published()`, `assert_published()`) and run the deliveries (`deliver()`)."""
    from evq.testing import use_queue

    marker = request.node.get_closest_marker("evq")
    options = dict(marker.kwargs) if marker is not None else {}
    backend = options.pop("backend", "memory")
    subscriptions = options.pop("subscriptions", None)
    if options or (marker is not None and marker.args):
        raise pytest.UsageError(
            f"@pytest.mark.evq takes only subscriptions= and backend=, got {marker}"
        )
    if backend not in _BACKENDS:
        raise pytest.UsageError(
            f"@pytest.mark.evq(backend={backend!r}): use one of {', '.join(_BACKENDS)}"
        )
    url = None
    if backend == "sqlite":
        tmp_path = request.getfixturevalue("tmp_path")
        url = f"sqlite:///{tmp_path / 'evq-test.db'}"
    with use_queue(url, subscriptions=subscriptions) as queue:
        yield queue
