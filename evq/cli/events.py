"""`evq events` and `evq show`: the event log, and one event with every delivery's history.

In JSON, an event is a CloudEvent 1.0 in the JSON format, so that it can be fed to
CloudEvents tools: `specversion` ("1.0"), `id`, `type` (the event name), `source`
(`evq://` followed by the queue file's absolute path), `time` (when it was published, RFC
3339), `datacontenttype` ("application/json") and `data` (the payload). evq's own attributes
are CloudEvents extensions, so their names are lowercase letters and digits starting with
`evq` and their values are scalars; an attribute without a value is left out:

- `evqstatus`: the event's status (the most urgent state among its deliveries);
- `evqkey`: its idempotency key (only when it has one);
- the event's headers (`evq publish --header`), each an extension attribute of its own
  (`traceparent`, ...): header names follow the CloudEvents rules, and never start with `evq`;
- `evqdueat`, `evqdispatchedat`: when it is due and when it was dispatched (RFC 3339, only
  until it is dispatched and once it is dispatched respectively);
- `evqdeliveries`: its number of deliveries, and one count of deliveries per state:
  `evqpending`, `evqscheduled`, `evqrunning`, `evqretrying`, `evqdone`, `evqdead` (always
  present, 0 when none).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from evq.cli.options import TIME, url_option
from evq.cli.output import Column, is_terminal, output_options, render
from evq.errors import NotFound
from evq.headers import decode_headers
from evq.storage import open_queue
from evq.storage.contract import (
    DELIVERY_STATES,
    DeliveryRecord,
    DeliveryState,
    EventRecord,
    EventSelection,
)

# The extension attribute holding the number of deliveries in each state.
STATE_ATTRIBUTES = {state: f"evq{state}" for state in DELIVERY_STATES}

# On a terminal: the delivery counts summed up in one column ("1 done, 1 dead").
EVENT_COLUMNS = [
    Column("id", "ID"),
    Column("type", "Event"),
    Column("time", "Published", human=lambda value: ago(value)),
    Column("evqstatus", "Status"),
    Column("summary", "Deliveries"),
]
# Piped: one field per count, for cut and awk.
EVENT_TSV_COLUMNS = [
    Column("id", "ID"),
    Column("type", "Event"),
    Column("time", "Published"),
    Column("evqstatus", "Status"),
    Column("evqdeliveries", "Deliveries"),
    *(Column(attribute, state) for state, attribute in STATE_ATTRIBUTES.items()),
]
DELIVERY_COLUMNS = [
    Column("id", "Delivery", justify="right"),
    Column("receiver", "Receiver"),
    Column("state", "State"),
    Column("attempts", "Attempts", justify="right"),
    Column("replay", "Replay", human=lambda value: "replay" if value else ""),
    Column("finished_at", "Finished", human=lambda value: ago(value)),
    Column("last_error", "Last error", human=lambda value: _first_line(value)),
]
ATTEMPT_COLUMNS = [
    Column("delivery", "Delivery", justify="right"),
    Column("attempt", "Attempt", justify="right"),
    Column("outcome", "Outcome"),
    Column("started_at", "Started", human=lambda value: ago(value)),
    Column("duration_seconds", "Took", human=lambda value: _seconds(value), justify="right"),
    Column("worker", "Worker"),
    Column("error", "Error", human=lambda value: _first_line(value)),
]


@click.command()
@click.option("--name", metavar="PATTERN", help="Only events whose name matches: order.*, **.")
@click.option("--since", type=TIME, help="Only events published since: 2h, 2024-05-01T12:00Z.")
@click.option("--until", type=TIME, help="Only events published before this time.")
@click.option(
    "--status",
    type=click.Choice(DELIVERY_STATES),
    help="Only events with at least one delivery in this state (an event not dispatched yet"
    " is pending, or scheduled while its delay runs).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=1_000_000),
    default=50,
    show_default=True,
    help="Show at most this many events.",
)
@output_options
@url_option
def events(
    name: str | None,
    since: float | None,
    until: float | None,
    status: DeliveryState | None,
    limit: int,
    output_format: str | None,
    url: str,
) -> None:
    """List published events, newest first, with the state of their deliveries.

    An event's status is the most urgent state among its deliveries: dead, running, retrying,
    pending, scheduled, then done. Piped, each event is one tab-separated line: id, name,
    published time (ISO 8601), status, number of deliveries, then the number of pending,
    scheduled, running, retrying, done and dead deliveries. --json (a list) and --jsonl (one
    per line) print CloudEvents 1.0 (see `evq show --help`).

    \b
      evq events --since 1h --name 'order.*'
      evq events --status dead --jsonl | jq -r .id
    """
    selection = _selection(name, since, until)
    queue = open_queue(url, role="inspect", create=False)
    records = [
        cloud_event(event, source=queue.source)
        for event in queue.events(selection, status=status, limit=limit)
    ]
    if output_format is None and is_terminal(sys.stdout):
        rows = [
            {**record, "summary": counts_summary(delivery_counts(record))} for record in records
        ]
        render(rows, EVENT_COLUMNS, output_format=None)
    else:
        render(records, EVENT_TSV_COLUMNS, output_format=output_format)


@click.command()
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@url_option
def show(event_id: str, as_json: bool, url: str) -> None:
    """Show the event EVENT_ID, its payload, and every delivery with its attempts.

    --json prints {"event": ..., "deliveries": [...]}. `event` is the CloudEvent 1.0 that
    `evq events --json` prints: specversion, id, type, source, time, datacontenttype, data,
    the event's headers (one extension attribute each), and the extensions evqstatus, evqkey
    (if any), evqdueat (until dispatched),
    evqdispatchedat (once dispatched), evqdeliveries (how many) and the count per state
    evqpending, evqscheduled, evqrunning, evqretrying, evqdone, evqdead. `deliveries` has each
    delivery's id, receiver, state, attempts, failures, replay, created_at, due_at,
    started_at, finished_at, worker, last_error, traceback and `history` (attempt, outcome,
    worker, started_at, finished_at, duration_seconds, error). Times are ISO 8601 in UTC.

    Piped, it prints tab-separated lines whose first field says what they are: `event` (id,
    name, time, status), `header` (name, value), `data` (the payload), `delivery` (id,
    receiver, state, attempts, replay, finished time, last error) and `attempt` (delivery,
    attempt, outcome, started time, seconds, worker, error). An unknown id exits with code 2.
    """
    queue = open_queue(url, role="inspect", create=False)
    event = queue.event(event_id)
    if event is None:
        raise NotFound(f"no event with id {event_id!r} in {queue.location}")
    record = cloud_event(event, source=queue.source)
    deliveries = [_delivery(d) for d in event.deliveries]
    headers = decode_headers(event.headers)
    if as_json:
        document = {"event": record, "deliveries": deliveries}
        render([], [], output_format="json", document=document)
    elif is_terminal(sys.stdout):
        _print_event(record, headers, deliveries)
    else:
        _write_event_lines(record, headers, deliveries)


# Shared with the other inspection commands


def cloud_event(event: EventRecord, *, source: str) -> dict[str, Any]:
    """Return a stored event (from `Queue.events()`) as a CloudEvent 1.0 (JSON format).

    Extension attributes without a value (no key, not due, not dispatched) are left out, as
    CloudEvents wants; the delivery counts are always there. Each header is an extension
    attribute.
    """
    record: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.id,
        "type": event.name,
        "source": source,
        "time": iso(event.published_at),
        "datacontenttype": "application/json",
        "data": _payload(event.payload),
        **(decode_headers(event.headers) if event.headers else {}),
        "evqstatus": event.status,
        "evqkey": event.key,
        "evqdueat": iso(event.due_at),
        "evqdispatchedat": iso(event.dispatched_at),
        "evqdeliveries": sum(event.counts.values()),
    }
    for state, attribute in STATE_ATTRIBUTES.items():
        record[attribute] = event.counts.get(state, 0)
    return {name: value for name, value in record.items() if value is not None}


def iso(timestamp: float | None) -> str | None:
    """Return a Unix timestamp as ISO 8601 in UTC, the form of times in machine output.

    A stored time that no date can hold (written by hand, or a delay an older evq accepted)
    is returned as the number it is, so that reading the queue never fails on it.
    """
    if timestamp is None:
        return None
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat()
    except (OverflowError, OSError, ValueError, TypeError):
        return str(timestamp)


def ago(iso_time: str) -> str:
    """Say how long ago an ISO 8601 time was, for people: "3 min ago"."""
    from evq.durations import format_age

    try:
        then = datetime.fromisoformat(iso_time)
    except ValueError:  # A time `iso()` could not convert.
        return iso_time
    return format_age(then, now=datetime.now(UTC))


def delivery_counts(record: dict[str, Any]) -> dict[str, int]:
    """Return the delivery counts of a CloudEvent from `cloud_event()`, by state."""
    return {state: record[attribute] for state, attribute in STATE_ATTRIBUTES.items()}


def counts_summary(counts: dict[str, int]) -> str:
    """Return delivery counts as "2 done, 1 dead" (zero counts left out)."""
    return ", ".join(f"{count} {state}" for state, count in counts.items() if count) or "none"


def _selection(name: str | None, since: float | None, until: float | None) -> EventSelection:
    if name is not None:
        from evq.names import validate_pattern

        validate_pattern(name)
    return EventSelection(name=name, since=since, until=until)


# Private


def _payload(text: str | bytes) -> Any:
    from evq.payload import payload_to_show

    # Not a JSON object evq would store (written by hand, or nested deeper than evq allows
    # now): show it as it is stored.
    return payload_to_show(text)


def _delivery(delivery: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "receiver": delivery.receiver,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "failures": delivery.failures,
        "replay": delivery.replay,
        "created_at": iso(delivery.created_at),
        "due_at": iso(delivery.due_at),
        "started_at": iso(delivery.started_at),
        "finished_at": iso(delivery.finished_at),
        "worker": delivery.worker,
        "last_error": delivery.last_error,
        "traceback": delivery.traceback,
        "history": [
            {
                "attempt": attempt.attempt,
                "outcome": attempt.outcome,
                "worker": attempt.worker,
                "started_at": iso(attempt.started_at),
                "finished_at": iso(attempt.finished_at),
                "duration_seconds": (
                    None
                    if attempt.started_at is None
                    else round(attempt.finished_at - attempt.started_at, 6)
                ),
                "error": attempt.error,
            }
            for attempt in delivery.history
        ],
    }


def _attempts(deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"delivery": delivery["id"], **attempt}
        for delivery in deliveries
        for attempt in delivery["history"]
    ]


def _print_event(
    record: dict[str, Any], headers: dict[str, str], deliveries: list[dict[str, Any]]
) -> None:
    lines = [
        ("Event", f"{record['id']}  {record['type']}"),
        ("Published", f"{record['time']} ({ago(record['time'])})"),
        ("Status", f"{record['evqstatus']}: {counts_summary(delivery_counts(record))}"),
    ]
    if "evqkey" in record:
        lines.append(("Key", record["evqkey"]))
    lines.append(("Source", record["source"]))
    for label, value in lines:
        click.echo(f"{label + ':':<11}{value}")
    if headers:
        click.echo("\nHeaders:")
        for name, value in headers.items():
            click.echo(f"  {name}: {value}")
    click.echo("\nPayload:")
    click.echo(json.dumps(record["data"], indent=2, ensure_ascii=False))
    click.echo("\nDeliveries:")
    render(deliveries, DELIVERY_COLUMNS, output_format=None)
    attempts = _attempts(deliveries)
    if attempts:
        click.echo("\nAttempts:")
        render(attempts, ATTEMPT_COLUMNS, output_format=None)
    for delivery in deliveries:
        if delivery["traceback"]:
            click.echo(f"\nLast traceback of delivery {delivery['id']} ({delivery['receiver']}):")
            click.echo(delivery["traceback"].rstrip())


def _write_event_lines(
    record: dict[str, Any], headers: dict[str, str], deliveries: list[dict[str, Any]]
) -> None:
    kind = Column("kind", "")
    render(
        [{"kind": "event", **record}],
        [kind, *(Column(key, "") for key in ("id", "type", "time", "evqstatus"))],
        output_format=None,
    )
    render(
        [{"kind": "header", "name": name, "value": value} for name, value in headers.items()],
        [kind, Column("name", ""), Column("value", "")],
        output_format=None,
    )
    render(
        [{"kind": "data", "data": record["data"]}], [kind, Column("data", "")], output_format=None
    )
    render(
        [{"kind": "delivery", **delivery} for delivery in deliveries],
        [kind, *DELIVERY_COLUMNS],
        output_format=None,
    )
    render(
        [{"kind": "attempt", **attempt} for attempt in _attempts(deliveries)],
        [kind, *ATTEMPT_COLUMNS],
        output_format=None,
    )


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:100] if lines else ""


def _seconds(value: float) -> str:
    from evq.durations import format_seconds

    return format_seconds(value)
