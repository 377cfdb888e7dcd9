"""`evq publish`: store an event for every receiver subscribed to its name."""

from __future__ import annotations

import json
import sys
from typing import Any, BinaryIO

import click

from evq.cli.options import Duration, apply_settings, url_option
from evq.config import MAX_DELAY_SECONDS
from evq.errors import InvalidHeaders, InvalidInput, InvalidPayload, PayloadTooLarge


@click.command()
@click.argument("name", required=False)
@click.option(
    "--payload",
    "-p",
    metavar="JSON|@FILE|-",
    show_envvar=True,
    help="The payload, a JSON object: inline, @FILE to read a file, or - to read stdin."
    "  [default: {}]",
)
@click.option(
    "--delay",
    type=Duration(maximum=MAX_DELAY_SECONDS),
    show_envvar=True,
    help="Deliver no sooner than this from now: 30s, 5m, 2h, 1d; at most 3650d (ten years).",
)
@click.option(
    "--key",
    show_envvar=True,
    help="Idempotency key: an event already published with this key is not published again;"
    " its id is printed.",
)
@click.option(
    "--header",
    "-H",
    "headers",
    metavar="NAME=VALUE",
    multiple=True,
    envvar="EVQ_PUBLISH_HEADER",
    show_envvar=True,
    help="A header to carry with the event (repeatable; EVQ_PUBLISH_HEADER takes several,"
    " space-separated): string metadata such as traceparent"
    " or a correlation id. NAME is 1-20 lower-case letters and digits (CloudEvents attribute"
    " names); all headers together take at most 8 KiB.",
)
@click.option(
    "--jsonl",
    "jsonl_file",
    metavar="FILE|-",
    show_envvar=True,
    help='Publish many events, one {"name": ..., "payload": {...}} per line, from FILE or -'
    " (stdin).",
)
@click.option(
    "--json", "as_json", is_flag=True, show_envvar=True, help="Print a JSON object, not the id."
)
@url_option
def publish(
    name: str | None,
    payload: str | None,
    delay: float | None,
    key: str | None,
    headers: tuple[str, ...],
    jsonl_file: str | None,
    as_json: bool,
    url: str,
) -> None:
    """Publish the event NAME and print its id.

    The event is committed to the queue before this returns; `evq worker` then delivers it to
    every receiver subscribed to NAME. Bad input exits with code 2 and stores nothing. With
    --jsonl, a line may add "key", "delay" (in seconds, a number, at most ten years) and
    "headers" (an object of strings) to its name and payload. It is all or nothing: every line
    is checked, then all are stored in one transaction, and a failure (exit code 1) or a kill
    meanwhile stores none, so the same input can be given again. Lines with a "key" make even a
    second run of an input that did go through safe: those events are not stored twice. A line
    may be at most EVQ_MAX_PAYLOAD plus 64 KiB long.

    \b
      evq publish user.created --payload '{"user_id": 42}'
      evq publish report.due --delay 1h --payload @report.json
      echo '{"order": 7}' | evq publish order.paid --payload - --key order-7-paid
      evq publish order.paid --header correlationid=req-81 --payload '{"order": 7}'
    """
    if jsonl_file is not None:
        if name is not None or payload is not None or key is not None or headers:
            raise click.UsageError(
                "--jsonl reads names and payloads from its input; "
                "give no NAME, --payload, --key or --header with it"
            )
        from evq.cli.bulk import publish_jsonl

        apply_settings(url)
        try:
            publish_jsonl(jsonl_file, delay=delay, as_json=as_json)
        except UnicodeDecodeError as exc:
            # Lines are all read, and checked, before any is stored.
            bad = exc.object[exc.start : exc.end]
            raise InvalidInput(
                f"--jsonl {jsonl_file}: not valid UTF-8 text ({exc.reason}: {bad!r});"
                " nothing was published"
            ) from None
        return
    if name is None:
        raise click.UsageError("missing event NAME (or use --jsonl FILE)")
    settings = apply_settings(url)
    data = _read_payload(payload, settings.max_payload_bytes)
    from evq.publisher import prepare, store

    event = prepare(name, payload=data, delay=delay, key=key, headers=_headers(headers))
    event_id = store([event])[0]
    if as_json:
        from evq.event import timestamp_to_datetime

        published_at = event.published_at
        click.echo(
            json.dumps(
                {
                    "id": event_id,
                    "name": name,
                    "published_at": timestamp_to_datetime(published_at).isoformat(),
                    "stored": event_id == event.id,
                }
            )
        )
    else:
        click.echo(event_id)


def _headers(options: tuple[str, ...]) -> dict[str, str] | None:
    """The headers given as NAME=VALUE options (None for none); a name given twice is
    refused, never silently overwritten."""
    if not options:
        return None
    headers: dict[str, str] = {}
    for option in options:
        name, equals, value = option.partition("=")
        if not equals:
            raise InvalidHeaders(f"--header {option!r}: expected NAME=VALUE")
        if name in headers:
            raise InvalidHeaders(f"--header {name}: given twice")
        headers[name] = value
    return headers


def _read_payload(option: str | None, max_bytes: int) -> Any:
    if option is None:
        return {}
    if option == "-":
        if sys.stdin is None:
            raise InvalidPayload("--payload -: stdin is closed; expected a JSON object")
        where = "stdin"
        text = _decoded(_read_at_most(sys.stdin.buffer, max_bytes), where, max_bytes)
        if not text.strip():
            raise InvalidPayload("--payload -: stdin is empty; expected a JSON object")
    elif option.startswith("@"):
        path = option[1:]
        where = path
        try:
            with open(path, "rb") as file:
                data = _read_at_most(file, max_bytes)
        except FileNotFoundError:
            raise InvalidInput(f"--payload @{path}: no such file") from None
        except OSError as exc:
            raise InvalidInput(f"--payload @{path}: cannot read it: {exc.strerror}") from None
        text = _decoded(data, where, max_bytes)
    else:
        text = option
        where = "--payload"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidPayload(f"{where} cannot be read: it is nested too deeply") from None
    except ValueError as exc:  # A number too long to convert, for one.
        raise InvalidPayload(f"{where} cannot be read: {exc}") from None


def _read_at_most(file: BinaryIO, max_bytes: int) -> bytes:
    """Read `file` to its end, but never more than `max_bytes` + 1 bytes: enough to tell that
    it is too long (`--payload @/dev/zero` must not read until memory runs out)."""
    chunks: list[bytes] = []
    size = 0
    while size <= max_bytes:
        chunk = file.read(min(max_bytes + 1 - size, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _decoded(data: bytes, where: str, max_bytes: int) -> str:
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"{where} holds more than {max_bytes:,} bytes; the limit is {max_bytes:,}"
            " (EVQ_MAX_PAYLOAD)"
        )
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise InvalidPayload(f"{where} is not valid UTF-8 text ({exc.reason}: {bad!r})") from None
