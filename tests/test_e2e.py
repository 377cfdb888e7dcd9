"""End to end: `evq publish` and `evq worker --burst` as real processes on a real file."""

from __future__ import annotations

from pathlib import Path

from conftest import calls, run_evq


def test_every_event_reaches_every_matching_receiver_exactly_once(queue_path: Path) -> None:
    ids = {}
    for name in ("order.created", "order.paid", "order.item.added", "user.created"):
        result = run_evq("publish", name, "--payload", '{"n": 1}')
        assert result.returncode == 0, result.stderr
        ids[name] = result.stdout.strip()

    result = run_evq("worker", "--burst", "--app", "tests.apps.recorder")
    assert result.returncode == 0, result.stderr

    expected = {
        (ids["order.created"], "bill"),
        (ids["order.created"], "ship"),
        (ids["order.created"], "audit"),
        (ids["order.paid"], "bill"),
        (ids["order.paid"], "ship"),
        (ids["order.paid"], "audit"),
        (ids["order.item.added"], "ship"),
        (ids["order.item.added"], "audit"),
        (ids["user.created"], "audit"),
    }
    counted = calls(queue_path.parent / "calls.log")
    assert set(counted) == expected
    assert set(counted.values()) == {1}
