"""Options shared by several commands, each also read from an `EVQ_*` variable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from evq import config
from evq.errors import InvalidDuration

F = TypeVar("F", bound=Callable[..., Any])


def url_option(f: F) -> F:
    """`--url`: the queue, `sqlite:///path/to.db`, a plain path, or `postgresql://...`."""
    return click.option(
        "--url",
        envvar="EVQ_URL",
        show_envvar=True,
        default=config.DEFAULT_URL,
        show_default=True,
        metavar="URL",
        help="The queue: sqlite:///path/to.db, a plain path, or postgresql://user@host/db.",
        callback=_outside_this_process,
    )(f)


def _outside_this_process(ctx: click.Context, param: click.Parameter, url: str) -> str:
    # A memory:// queue lives inside one Python process: a command, a process of its own,
    # would publish events no worker ever sees, or work on a queue nothing published to.
    if url.partition("://")[0].lower() == "memory" and "://" in url:
        from evq.errors import InvalidStorageURL

        raise InvalidStorageURL(
            f"{url} is a queue inside one Python process (for tests: see evq.testing);"
            f" `{ctx.command_path}` runs in a process of its own and would never share it:"
            " use a SQLite file or a server URL"
        )
    return url


def app_option(f: F) -> F:
    """`--app MODULE`, repeatable: subscription modules that are not installed packages."""
    return click.option(
        "--app",
        "apps",
        multiple=True,
        envvar="EVQ_APP",
        show_envvar=True,
        metavar="MODULE",
        help="Import this subscriptions module too (repeatable; EVQ_APP is comma-separated).",
    )(f)


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration such as 30s, 5m, 2h, 7d or a number of seconds, from `minimum` to `maximum`
    seconds (by default, up to a hundred years)."""

    name = "duration"

    def __init__(
        self, *, minimum: float = 0.0, maximum: float = config.MAX_DURATION_SECONDS
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from evq.durations import format_seconds, parse_duration  # only when the option is given

        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration(value)
            except InvalidDuration as exc:
                self.fail(str(exc), param, ctx)
        if not self.minimum <= seconds <= self.maximum:
            self.fail(
                f"{value!r} is out of range: use from {format_seconds(self.minimum)}"
                f" to {format_seconds(self.maximum)}",
                param,
                ctx,
            )
        return seconds


DURATION = Duration()


class PointInTime(click.ParamType):  # type: ignore[type-arg]
    """A point in time, as a Unix timestamp: ISO 8601 (UTC unless it says), `now`, or how long
    ago (`2h` means two hours ago)."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from datetime import UTC, datetime

        from evq.durations import parse_time

        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_time(value, now=datetime.now(UTC)).timestamp()
        except InvalidDuration as exc:
            self.fail(str(exc), param, ctx)


TIME = PointInTime()


def apply_settings(url: str) -> config.Settings:
    """Make `url` the queue of this process and return the settings in force."""
    return config.configure(url=url)
