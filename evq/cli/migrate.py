"""`evq migrate`: create the queue's tables, or bring them up to date."""

from __future__ import annotations

import click

from evq.cli.options import url_option
from evq.storage import open_queue


@click.command()
@url_option
def migrate(url: str) -> None:
    """Create the queue's tables, or bring those of an older evq up to date.

    On PostgreSQL, run it once before publishing inside your own transactions (evq never
    creates tables there); `evq worker` runs it on start too. Several at once are safe: they
    wait for each other. An existing queue keeps every event and delivery.

    \b
      EVQ_URL=postgresql://app@db/shop evq migrate
    """
    queue = open_queue(url, role="work")
    try:
        queue.check()
        click.echo(f"Queue ready: {queue.location}")
    finally:
        queue.close()
