"""Subscribing receivers, finding subscription modules, and `evq list-subscribers`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import assert_nothing_stored, run_evq, stored_events

import evq
from evq import subscriptions
from evq.cli import cli
from evq.errors import InvalidPattern, InvalidReceiver


def welcome(event: evq.Event, /) -> None:
    """A module-level receiver."""


async def welcome_async(event: evq.Event, /) -> None:
    """An async receiver."""


def test_subscribe_registers_the_receiver_by_module_and_qualname() -> None:
    subscription = evq.subscribe("user.created", receiver=welcome)
    assert subscription.name == "test_subscriptions:welcome"
    assert subscriptions.subscriptions() == [subscription]
    assert subscription.receiver is welcome  # a strong reference


def test_the_decorator_returns_the_function_unchanged() -> None:
    decorated = evq.subscriber("user.*", retries=2, timeout=5)(welcome_async)
    assert decorated is welcome_async
    (subscription,) = subscriptions.subscriptions()
    assert subscription.retries == 2
    assert subscription.timeout == 5


def test_subscribing_twice_registers_once() -> None:
    evq.subscribe("user.created", receiver=welcome)
    evq.subscribe("user.created", receiver=welcome)
    assert len(subscriptions.subscriptions()) == 1
    evq.subscribe("user.*", receiver=welcome)
    assert len(subscriptions.subscriptions()) == 2


def test_a_lambda_is_rejected_at_subscribe() -> None:
    with pytest.raises(InvalidReceiver, match="lambda"):
        evq.subscribe("a.b", receiver=lambda event: None)
    assert subscriptions.subscriptions() == []


def test_a_nested_function_is_rejected_at_subscribe() -> None:
    def inner(event: evq.Event, /) -> None: ...

    with pytest.raises(InvalidReceiver, match="inside a function"):
        evq.subscribe("a.b", receiver=inner)


def test_a_bound_method_is_rejected_at_subscribe() -> None:
    class Handler:
        def handle(self, event: evq.Event, /) -> None: ...

    with pytest.raises(InvalidReceiver):
        evq.subscribe("a.b", receiver=Handler().handle)


def test_a_bad_pattern_is_rejected_at_subscribe() -> None:
    with pytest.raises(InvalidPattern):
        evq.subscribe("user.*x", receiver=welcome)


def test_subscriptions_matching_an_event_name() -> None:
    evq.subscribe("user.*", receiver=welcome)
    evq.subscribe("order.created", receiver=welcome_async)
    assert [s.name for s in subscriptions.subscriptions_for("user.created")] == [
        "test_subscriptions:welcome"
    ]


def test_app_modules_load_and_say_where_they_came_from() -> None:
    loaded = subscriptions.load(["tests.apps.recorder"], entry_points=False)
    assert [m.module for m in loaded] == ["tests.apps.recorder"]
    assert {s.source for s in subscriptions.subscriptions()} == {"--app"}
    assert {s.pattern for s in subscriptions.subscriptions()} == {"order.*", "order.**", "**"}


def test_evq_app_is_comma_separated() -> None:
    assert subscriptions.split_apps(["a.b, c", "d"]) == ["a.b", "c", "d"]


def test_list_subscribers_shows_pattern_receiver_options_and_source() -> None:
    result = CliRunner().invoke(
        cli, ["list-subscribers", "--no-entry-points", "--app", "tests.apps.recorder", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    assert {row["receiver"] for row in rows} == {
        "tests.apps.recorder:bill",
        "tests.apps.recorder:ship",
        "tests.apps.recorder:audit",
    }
    for row in rows:
        assert set(row) == {"pattern", "receiver", "options", "source"}
        assert row["source"] == "--app"
        assert row["options"]["retries"] == 5


def test_list_subscribers_filters_by_pattern_or_name() -> None:
    result = run_evq("list-subscribers", "order.created", "--app", "tests.apps.recorder")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == ["**", "order.*", "order.**"]
    result = run_evq("list-subscribers", "order.a.b", "--app", "tests.apps.recorder")
    assert sorted(line.split("\t")[0] for line in result.stdout.splitlines()) == ["**", "order.**"]


def test_an_unknown_app_module_is_bad_input(queue_url: str) -> None:
    for command in (["list-subscribers"], ["worker", "--burst"]):
        result = run_evq(*command, "--app", "tests.apps.no_such_module")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines == [
            "Error: cannot import --app module 'tests.apps.no_such_module': no such module"
        ]
    assert_nothing_stored(queue_url)


def test_a_failing_subscriptions_module_is_reported_with_its_traceback() -> None:
    result = run_evq("list-subscribers", "--app", "tests.apps.broken")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "RuntimeError: this subscriptions module is broken" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: cannot import")


def test_entry_points_are_found_in_installed_packages(tmp_path: Path) -> None:
    site = tmp_path / "site"
    package = site / "shop"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "subscriptions.py").write_text(
        textwrap.dedent("""
        import evq

        @evq.subscriber("user.created")
        def send_welcome_email(event, /):
            pass
    """)
    )
    dist = site / "shop-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shop\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[evq.subscriptions]\nshop = shop.subscriptions\n")
    result = run_evq("list-subscribers", "--json", PYTHONPATH=str(site))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {
        "pattern": "user.created",
        "receiver": "shop.subscriptions:send_welcome_email",
        "source": "entry point shop",
    }.items() <= {k: v for k, v in rows[0].items() if k != "options"}.items()


def test_a_receiver_subscribed_twice_must_keep_the_same_options() -> None:
    evq.subscribe("order.*", receiver=welcome, retries=0)
    evq.subscribe("payment.*", receiver=welcome, retries=0)
    with pytest.raises(evq.InvalidInput, match="other delivery options"):
        evq.subscribe("refund.*", receiver=welcome, retries=10, timeout=5)
    assert [s.pattern for s in subscriptions.subscriptions()] == ["order.*", "payment.*"]


def test_a_worker_without_subscriptions_refuses_to_start(queue_url: str) -> None:
    evq.publish("order.created", payload={})
    result = run_evq("worker", "--burst", "--no-entry-points")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: no subscriptions loaded")
    (event,) = stored_events(queue_url, deliveries=False)
    assert event.dispatched_at is None
