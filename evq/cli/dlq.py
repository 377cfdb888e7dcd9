"""`evq dlq`: list, inspect, redrive and purge dead letters.

A dead letter is a delivery whose retries ran out, or that could not run at all (its receiver is
no longer registered, its stored payload is not valid JSON). It is kept, with its event, its
receiver, its attempts, its last error and traceback, until it is redriven or purged.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from evq.cli.options import DURATION, url_option
from evq.cli.output import Column, output_options, render
from evq.errors import InvalidInput, NotFound
from evq.storage.contract import DeadLetter, Queue, Role

COLUMNS = [
    Column("id", "ID", justify="right"),
    Column("name", "Event"),
    Column("event_id", "Event ID"),
    Column("receiver", "Receiver"),
    Column("attempts", "Attempts", justify="right"),
    Column("dead_at", "Dead since", human=lambda v: _age(v)),
    Column("error", "Last error", human=lambda v: (v or "").splitlines()[0][:80] if v else ""),
]


@click.group()
def dlq() -> None:
    """Dead letters: deliveries that ran out of retries or could not run at all.

    \b
      evq dlq list
      evq dlq show 42
      evq dlq redrive --receiver shop.subscriptions:send_welcome_email
      evq dlq purge --older-than 30d
    """


@dlq.command("list")
@click.option("--receiver", metavar="MODULE:QUALNAME", help="Only this receiver's dead letters.")
@click.option("--name", "pattern", metavar="PATTERN", help="Only events matching this pattern.")
@click.option("--limit", type=click.IntRange(min=1, max=1_000_000), default=100, show_default=True)
@output_options
@url_option
def list_dead(
    receiver: str | None, pattern: str | None, limit: int, output_format: str | None, url: str
) -> None:
    """List dead letters, newest first."""
    letters = _select(url, receiver=receiver, pattern=pattern, limit=limit)
    records = [_record(letter, with_details=False) for letter in letters]
    render(records, COLUMNS, output_format=output_format)


@dlq.command("show")
@click.argument("delivery_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@url_option
def show_dead(delivery_id: str, as_json: bool, url: str) -> None:
    """Show one dead letter: its event, payload, headers, receiver, attempts, error and
    traceback."""
    letters = _select(url, ids=[delivery_id])
    if not letters:
        raise NotFound(f"no dead letter with id {delivery_id} (see `evq dlq list`)")
    record = _record(letters[0], with_details=True)
    if as_json:
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
        return
    for key in ("id", "receiver", "attempts", "dead_at", "event_id", "name", "published_at"):
        click.echo(f"{key + ':':<14}{record[key]}")
    click.echo(f"{'payload:':<14}{json.dumps(record['payload'], ensure_ascii=False)}")
    for name, value in record["headers"].items():
        click.echo(f"{'header:':<14}{name}: {value}")
    click.echo(f"{'error:':<14}{record['error']}")
    if record["traceback"]:
        click.echo("traceback:")
        click.echo(record["traceback"].rstrip())


@dlq.command("redrive")
@click.argument("delivery_ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "everything", is_flag=True, help="Redrive every dead letter.")
@click.option("--receiver", metavar="MODULE:QUALNAME", help="Redrive this receiver's.")
@click.option("--name", "pattern", metavar="PATTERN", help="Redrive those of matching events.")
@click.option("--dry-run", is_flag=True, help="Only say how many would be redriven.")
@url_option
def redrive(
    delivery_ids: tuple[str, ...],
    everything: bool,
    receiver: str | None,
    pattern: str | None,
    dry_run: bool,
    url: str,
) -> None:
    """Put dead letters back in the queue, with a fresh attempt count.

    Choose them by ID, or with --all, --receiver or --name (these two can be combined).
    """
    ids = _choose(url, delivery_ids, everything, receiver, pattern, older_than=None)
    if dry_run:
        click.echo(f"would redrive {len(ids)} dead letter{_s(len(ids))}")
        return
    count = _queue(url).redrive(ids)
    click.echo(f"redrove {count} dead letter{_s(count)}")


@dlq.command("purge")
@click.argument("delivery_ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "everything", is_flag=True, help="Purge every dead letter.")
@click.option(
    "--older-than",
    type=DURATION,
    metavar="DURATION",
    help="Purge those dead for longer: 30d (at most 36500d).",
)
@click.option("--receiver", metavar="MODULE:QUALNAME", help="Purge this receiver's.")
@click.option("--dry-run", is_flag=True, help="Only say how many would be purged.")
@url_option
def purge(
    delivery_ids: tuple[str, ...],
    everything: bool,
    older_than: float | None,
    receiver: str | None,
    dry_run: bool,
    url: str,
) -> None:
    """Delete dead letters for good. Choose them by ID, or with --all, --older-than or
    --receiver."""
    ids = _choose(url, delivery_ids, everything, receiver, None, older_than=older_than)
    if dry_run:
        click.echo(f"would purge {len(ids)} dead letter{_s(len(ids))}")
        return
    count = _queue(url).purge(ids)
    click.echo(f"purged {count} dead letter{_s(count)}")


# Private


def _queue(url: str, *, role: Role = "publish") -> Queue:
    from evq.storage import open_queue

    return open_queue(url, role=role, create=False)


def _select(
    url: str,
    *,
    ids: list[str] | None = None,
    receiver: str | None = None,
    pattern: str | None = None,
    older_than: float | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    from evq.names import matches, validate_pattern

    if pattern is not None:
        validate_pattern(pattern)
    letters = _queue(url, role="inspect").dead_letters(
        ids=ids or (),
        receiver=receiver,
        older_than=older_than,
        limit=None if pattern is not None else limit,
    )
    if pattern is not None:
        letters = [letter for letter in letters if matches(pattern, letter.name)][:limit]
    return letters


def _choose(
    url: str,
    delivery_ids: tuple[str, ...],
    everything: bool,
    receiver: str | None,
    pattern: str | None,
    *,
    older_than: float | None,
) -> list[str]:
    filters = receiver is not None or pattern is not None or older_than is not None
    if sum([bool(delivery_ids), everything, filters]) != 1:
        raise click.UsageError("choose dead letters by ID, or with --all, or with filters")
    if everything:
        return [letter.id for letter in _select(url)]
    if delivery_ids:
        found = {letter.id for letter in _select(url, ids=list(delivery_ids))}
        missing = [i for i in delivery_ids if i not in found]
        if missing:
            raise InvalidInput(f"not dead letters: {', '.join(missing)}; nothing was changed")
        return list(delivery_ids)
    cutoff = None if older_than is None else time.time() - older_than
    return [
        letter.id for letter in _select(url, receiver=receiver, pattern=pattern, older_than=cutoff)
    ]


def _record(letter: DeadLetter, *, with_details: bool) -> dict[str, Any]:
    from evq.cli.events import iso
    from evq.headers import decode_headers
    from evq.payload import payload_to_show

    record = {
        "id": letter.id,
        "event_id": letter.event_id,
        "name": letter.name,
        "receiver": letter.receiver,
        "attempts": letter.attempts,
        "dead_at": iso(letter.dead_at),
        "published_at": iso(letter.published_at),
        "error": letter.error,
    }
    if with_details:
        # A payload that is not a JSON object evq could store is shown as it is stored.
        record["payload"] = payload_to_show(letter.payload)
        record["headers"] = decode_headers(letter.headers)
        record["traceback"] = letter.traceback
    return record


def _age(iso: str) -> str:
    from evq.cli.events import ago

    return ago(iso)


def _s(count: int) -> str:
    return "" if count == 1 else "s"
