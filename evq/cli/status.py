"""`evq status`: what the queue holds and does now, for a person, a script or a health check."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from evq.cli.events import ago, iso
from evq.cli.options import DURATION, Duration, url_option
from evq.cli.output import Column, is_terminal, output_options, render, use_color
from evq.storage import Queue, open_queue
from evq.storage.rules import RATE_WINDOW_SECONDS, WORKER_SEEN_WITHIN_SECONDS

EXIT_UNHEALTHY = 1

_COUNTS = (
    ("events", "published"),
    ("events", "awaiting_dispatch"),
    ("events", "delayed"),
    ("deliveries", "pending"),
    ("deliveries", "scheduled"),
    ("deliveries", "running"),
    ("deliveries", "retrying"),
    ("deliveries", "dead"),
)
_WORKER_COLUMNS = [
    Column("id", "Worker"),
    Column("hostname", "Host"),
    Column("pid", "PID", justify="right"),
    Column("started_at", "Started", human=lambda value: ago(value)),
    Column("seen_at", "Seen", human=lambda value: ago(value)),
    Column("info", "Receivers", human=lambda info: ", ".join(info.get("receivers", []))),
]


@click.command()
@click.option("--watch", is_flag=True, help="Refresh until interrupted (Ctrl-C), every --interval.")
@click.option(
    "--interval",
    type=Duration(minimum=0.1, maximum=86400.0),
    default="2s",
    show_default=True,
    help="How often --watch refreshes, from 0.1s to 1d.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 if there are dead letters or a delivery has waited longer than --max-age.",
)
@click.option(
    "--max-age",
    type=DURATION,
    default="5m",
    show_default=True,
    help="With --check: the longest a due delivery may wait for a worker (at most 36500d).",
)
@click.option(
    "--format",
    "exposition",
    type=click.Choice(["prometheus"]),
    envvar="EVQ_STATUS_FORMAT",
    help="Print the queue's gauges once in the Prometheus text format, for a cron job or"
    " node_exporter's textfile collector (needs the prometheus extra).",
)
@output_options
@url_option
def status(
    watch: bool,
    interval: float,
    check: bool,
    max_age: float,
    exposition: str | None,
    output_format: str | None,
    url: str,
) -> None:
    """Show events published, deliveries waiting, running and dead, the oldest wait, the
    delivery rate over the last minute, and the workers seen in the last 30 seconds.

    Piped, each number is one `name<TAB>value` line (published, awaiting_dispatch, delayed,
    pending, scheduled, running, retrying, dead, oldest_pending_age_seconds,
    deliveries_per_second), then one `worker<TAB>id<TAB>host<TAB>pid<TAB>started<TAB>seen`
    line per worker. --json prints one document (see the README); with --watch, --json prints
    one compact document per line and piped output one block per refresh, separated by an
    empty line.

    A delivery is pending when it is due, scheduled when it waits for its time (a delayed
    event), retrying after a failed attempt, dead when it ran out of retries. Events awaiting
    dispatch are those no worker has fanned out to their receivers yet; delayed ones among them
    have a delay that has not ended. The oldest wait is how long the delivery (or event not
    fanned out yet) that has waited longest has been waiting for a worker.

    \b
    --check is for health checks; it prints one line and exits with:
      0  no dead letters, and nothing has waited longer than --max-age
      1  dead letters, or a delivery (or an event no worker has fanned out) has waited longer
         than --max-age (the reason is on stderr)
      2  bad usage, or no queue at --url
    """
    if watch and check:
        raise click.UsageError("--watch and --check cannot be used together")
    if exposition is not None:
        if watch or check or output_format is not None:
            raise click.UsageError(
                "--format prometheus cannot be used with --watch, --check, --json or --jsonl"
            )
        _print_prometheus(url)
        return
    queue = open_queue(url, role="inspect", create=False)
    _warn(queue.status().warnings)
    if check:
        _check(queue, max_age, output_format)
    elif watch:
        _watch(queue, interval, output_format)
    else:
        _show(status_document(queue), output_format)


def _warn(warnings: tuple[str, ...]) -> None:
    """Say on stderr, one line each, how the storage's settings may lose events."""
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)


def status_document(queue: Queue) -> dict[str, Any]:
    """Return the status of `queue` with the field names `evq status --json` documents."""
    snapshot = queue.status()
    age = None if snapshot.oldest_due_at is None else snapshot.time - snapshot.oldest_due_at
    finished = snapshot.delivered_last_minute + snapshot.failed_last_minute
    return {
        "queue": queue.location,
        "time": iso(snapshot.time),
        "events": {
            "published": snapshot.published,
            "awaiting_dispatch": snapshot.awaiting_dispatch,
            "delayed": snapshot.delayed,
        },
        "deliveries": {
            "pending": snapshot.pending,
            "scheduled": snapshot.scheduled,
            "running": snapshot.running,
            "retrying": snapshot.retrying,
            "dead": snapshot.dead,
        },
        "oldest_pending_since": iso(snapshot.oldest_due_at),
        "oldest_pending_age_seconds": None if age is None else round(age, 3),
        "deliveries_per_second": round(finished / RATE_WINDOW_SECONDS, 3),
        "delivered_last_minute": snapshot.delivered_last_minute,
        "failed_last_minute": snapshot.failed_last_minute,
        "workers": [
            {
                "id": worker.id,
                "hostname": worker.hostname,
                "pid": worker.pid,
                "started_at": iso(worker.started_at),
                "seen_at": iso(worker.seen_at),
                "info": _info(worker.info),
            }
            for worker in snapshot.workers
        ],
        "warnings": list(snapshot.warnings),
    }


def health(document: dict[str, Any], max_age: float) -> str | None:
    """Return why the queue is unhealthy, or None if it is healthy."""
    from evq.durations import format_seconds

    dead = document["deliveries"]["dead"]
    if dead:
        return f"{dead} dead letter{'' if dead == 1 else 's'} (see `evq dlq list`)"
    age = document["oldest_pending_age_seconds"]
    if age is not None and age > max_age:
        return (
            f"the oldest pending delivery has waited {format_seconds(age)},"
            f" longer than --max-age {format_seconds(max_age)} (is a worker running?)"
        )
    return None


# Private


def _print_prometheus(url: str) -> None:
    from evq.metrics import exposition, queue_metrics  # without the extra: its error, first

    queue = open_queue(url, role="inspect", create=False)
    try:
        snapshot = queue.status()
    finally:
        queue.close()
    _warn(snapshot.warnings)
    sys.stdout.write(exposition(queue_metrics(snapshot)))


def _check(queue: Queue, max_age: float, output_format: str | None) -> None:
    document = status_document(queue)
    if output_format is not None:
        render([document], [], output_format=output_format, document=document)
    reason = health(document, max_age)
    if reason is not None:
        click.echo(f"unhealthy: {reason}", err=True)
        sys.exit(EXIT_UNHEALTHY)
    if output_format is None:
        click.echo("ok: no dead letters, nothing waiting longer than --max-age")


def _show(document: dict[str, Any], output_format: str | None) -> None:
    out = sys.stdout
    if output_format is not None:
        render([document], [], output_format=output_format, document=document)
    elif is_terminal(out):
        _console(out).print(_renderable(document))
    else:
        _write_lines(document)


def _watch(queue: Queue, interval: float, output_format: str | None) -> None:
    out = sys.stdout
    try:
        if output_format is None and is_terminal(out):
            from rich.live import Live

            with Live(console=_console(out), auto_refresh=False) as live:
                while True:
                    live.update(_renderable(status_document(queue)), refresh=True)
                    time.sleep(interval)
        first = True
        while True:
            document = status_document(queue)
            if output_format is not None:
                render([document], [], output_format="jsonl")
            else:
                if not first:
                    out.write("\n")
                _write_lines(document)
            out.flush()
            first = False
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


def _write_lines(document: dict[str, Any]) -> None:
    records: list[dict[str, Any]] = [
        {"name": key, "value": document[group][key]} for group, key in _COUNTS
    ]
    for key in ("oldest_pending_age_seconds", "deliveries_per_second"):
        records.append({"name": key, "value": document[key]})
    render(records, [Column("name", ""), Column("value", "")], output_format=None)
    render(
        [{"kind": "worker", **worker} for worker in document["workers"]],
        [Column("kind", ""), *_WORKER_COLUMNS[:5]],
        output_format=None,
    )


def _renderable(document: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from evq.durations import format_seconds

    events = document["events"]
    deliveries = document["deliveries"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Queue", Text(document["queue"]))
    grid.add_row(
        "Events",
        f"{events['published']:,} published · {events['awaiting_dispatch']:,} awaiting dispatch"
        f" · {events['delayed']:,} delayed",
    )
    line = Text(
        f"{deliveries['pending']:,} pending · {deliveries['scheduled']:,} scheduled"
        f" · {deliveries['running']:,} running · {deliveries['retrying']:,} retrying · "
    )
    line.append(f"{deliveries['dead']:,} dead", style="bold red" if deliveries["dead"] else "")
    grid.add_row("Deliveries", line)
    age = document["oldest_pending_age_seconds"]
    grid.add_row("Oldest wait", "nothing waiting" if age is None else format_seconds(age))
    grid.add_row(
        "Throughput",
        f"{document['deliveries_per_second']:g} deliveries/s over the last minute"
        f" ({document['failed_last_minute']} failed)",
    )
    workers = document["workers"]
    grid.add_row(
        "Workers",
        f"{len(workers)} seen in the last {int(WORKER_SEEN_WITHIN_SECONDS)} s"
        + ("" if workers else " (start one with `evq worker`)"),
    )
    parts: list[Any] = [grid]
    if workers:
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in _WORKER_COLUMNS:
            table.add_column(column.header, justify=column.justify)
        for worker in workers:
            cells = [(worker[column.key], column.human) for column in _WORKER_COLUMNS]
            table.add_row(*(Text(human(value) if human else str(value)) for value, human in cells))
        parts.extend([Text(""), table])
    return Group(*parts)


def _console(out: Any) -> Any:
    from rich.console import Console

    color = use_color(out)
    return Console(
        file=out,
        no_color=not color,
        color_system="auto" if color else None,
        highlight=False,
        soft_wrap=False,
    )


def _info(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {}
