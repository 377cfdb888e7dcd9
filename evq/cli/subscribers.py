"""`evq list-subscribers`: who listens to what."""

from __future__ import annotations

import click

from evq.cli.options import app_option, receiver_option
from evq.cli.output import Column, output_options, render


@click.command("list-subscribers")
@click.argument("pattern", required=False)
@click.option(
    "--entry-points/--no-entry-points",
    default=True,
    show_default=True,
    show_envvar=True,
    help="Load subscriptions of installed packages (the evq.subscriptions entry points).",
)
@receiver_option
@app_option
@output_options
def list_subscribers(
    pattern: str | None,
    entry_points: bool,
    receivers: tuple[str, ...],
    apps: tuple[str, ...],
    output_format: str | None,
) -> None:
    """List subscriptions: pattern, receiver, delivery options and where each came from.

    With PATTERN, only subscriptions whose pattern equals it or matches it as an event name.
    With --receiver (or EVQ_RECEIVER), as `evq worker --receiver` would select them: the
    `Run` column (`run` in JSON, true or false) says whether such a worker runs each
    receiver. A subscriptions module that fails to import is reported with its traceback
    (exit code 1).
    """
    from evq import subscriptions

    subscriptions.load(subscriptions.split_apps(apps), entry_points=entry_points)
    selected = subscriptions.select_receivers(receivers)
    records = [
        {
            "pattern": s.pattern,
            "receiver": s.name,
            "options": s.options(),
            "source": s.source,
            **({} if selected is None else {"run": s.name in selected}),
        }
        for s in sorted(subscriptions.subscriptions(pattern), key=lambda s: (s.pattern, s.name))
    ]
    columns = [
        Column("pattern", "Pattern"),
        Column("receiver", "Receiver"),
        Column("options", "Options", human=_options),
        Column("source", "Source"),
    ]
    if selected is not None:
        columns.insert(2, Column("run", "Run", human=lambda run: "yes" if run else "no"))
    render(records, columns, output_format=output_format)


def _options(options: dict[str, object]) -> str:
    defaults: dict[str, object] = {
        "retries": 5,
        "retry_delay": 1.0,
        "retry_backoff": 2.0,
        "max_retry_delay": 3600.0,
        "jitter": True,
        "timeout": None,
        "dont_retry": [],
    }
    shown = [f"{k}={v}" for k, v in options.items() if defaults.get(k) != v]
    return " ".join(shown) or "defaults"
