"""`evq prune`: delete finished events after their retention period, by hand."""

from __future__ import annotations

import time

import click

from evq.cli.events import iso
from evq.cli.options import DURATION, url_option
from evq.cli.output import render
from evq.storage import open_queue, rules


@click.command()
@click.option(
    "--older-than",
    type=DURATION,
    default="7d",
    show_default=True,
    envvar="EVQ_RETENTION",
    show_envvar=True,
    help="Delete finished events published longer ago than this: 30d, 12h; at most 36500d.",
)
@click.option("--dry-run", is_flag=True, help="Only say how many events would be deleted.")
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"events": N, "before": ..., "dry_run": ...}.'
)
@url_option
def prune(older_than: float, dry_run: bool, as_json: bool, url: str) -> None:
    """Delete finished events published longer ago than --older-than.

    An event is finished when every delivery of it is done. Events with a pending, scheduled,
    running, retrying or dead delivery are never deleted (deal with dead letters with
    `evq dlq`). An event goes with its deliveries, their history and its idempotency key (the
    key can then be published again). `evq worker` does this on its own every few minutes with
    EVQ_RETENTION (default 7d); this command is for doing it now or with another period.

    \b
      evq prune --older-than 30d --dry-run
    """
    cutoff = time.time() - older_than
    queue = open_queue(url, create=False)
    count = rules.prune(queue, cutoff, dry_run=dry_run)
    if as_json:
        document = {"events": count, "before": iso(cutoff), "dry_run": dry_run}
        render([], [], output_format="json", document=document)
    else:
        verb = "Would delete" if dry_run else "Deleted"
        events = f"{count} finished event{'' if count == 1 else 's'}"
        click.echo(f"{verb} {events} published before {iso(cutoff)}.")
