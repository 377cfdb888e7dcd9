"""`evq replay`: deliver past events again, for example to backfill a new subscriber."""

from __future__ import annotations

import click

from evq.cli.events import _selection
from evq.cli.options import TIME, url_option
from evq.cli.output import render
from evq.errors import InvalidReceiver
from evq.storage import open_queue, rules


@click.command()
@click.option("--since", type=TIME, help="Only events published since: 2h, 2024-05-01T12:00Z.")
@click.option("--until", type=TIME, help="Only events published before this time.")
@click.option("--name", metavar="PATTERN", help="Only events whose name matches: order.*, **.")
@click.option(
    "--receiver",
    metavar="MODULE:FUNCTION",
    help="Deliver to this receiver only, whether it received the events before or not.",
)
@click.option("--all", "everything", is_flag=True, help="Replay every stored event.")
@click.option("--dry-run", is_flag=True, help="Only say how many deliveries would be created.")
@click.option("--json", "as_json", is_flag=True, help='Print {"deliveries": N, "dry_run": ...}.')
@url_option
def replay(
    since: float | None,
    until: float | None,
    name: str | None,
    receiver: str | None,
    everything: bool,
    dry_run: bool,
    as_json: bool,
    url: str,
) -> None:
    """Deliver past events again, as new deliveries marked as replays.

    Without --receiver, each selected event goes again to every receiver that had a delivery
    of it. With --receiver, it goes to that receiver alone, which need not have received it
    before: that backfills a subscriber added today. The original deliveries and their history
    are kept; a worker that serves the receiver delivers the replays. Events not dispatched yet
    are skipped (they are delivered anyway). Pick events with --since, --until and --name, or
    give --all to replay every stored event.

    \b
      evq replay --since 2024-05-01 --until 2024-05-02 --name 'order.*' --dry-run
      evq replay --since 7d --receiver shop.subscriptions:index_order
    """
    selection = _selection(name, since, until)
    if selection.everything and not everything:
        raise click.UsageError(
            "no events selected: give --since, --until or --name, or --all to replay every"
            " stored event"
        )
    if receiver is not None and ":" not in receiver:
        raise InvalidReceiver(
            f"invalid receiver {receiver!r}: use its module:function name, as"
            " `evq list-subscribers` shows it"
        )
    queue = open_queue(url, create=False)
    if dry_run:
        count = rules.replay(queue, selection, receiver=receiver, dry_run=True)
    else:
        count = rules.replay(queue, selection, receiver=receiver)
    if as_json:
        document = {"deliveries": count, "dry_run": dry_run}
        render([], [], output_format="json", document=document)
    elif dry_run:
        click.echo(f"Would create {count} replay deliver{'y' if count == 1 else 'ies'}.")
    else:
        click.echo(f"Created {count} replay deliver{'y' if count == 1 else 'ies'}.")
