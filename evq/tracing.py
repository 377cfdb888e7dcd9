"""OpenTelemetry tracing: a PRODUCER span around each publish, whose context travels with the
event in its `traceparent` (and `tracestate`) headers, and a CONSUMER span around each
delivery attempt, parented by that context: a receiver's spans join the publisher's trace.

Spans carry the messaging semantic-convention attributes: `messaging.system` ("evq"),
`messaging.operation.type` ("send" or "process"), `messaging.operation.name` ("publish" or
"process"), `messaging.destination.name` (the event name), `messaging.message.id` (the event
id), `messaging.batch.message_count` (a `publish_many`), and for a delivery the receiver as
`messaging.destination.subscription.name` and the attempt number as `evq.attempt`. An attempt
that raises records the exception and an error status.

This module imports `opentelemetry` (the `evq[otel]` extra) and is imported only when tracing
is on (`evq.config.tracing_enabled`): spans go to the application's tracer provider.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from evq.headers import MAX_HEADERS_BYTES
from evq.storage.contract import Lease, NewEvent

SYSTEM = "evq"
_tracer = trace.get_tracer("evq")


def traced_publish(
    events: Sequence[NewEvent], store: Callable[[list[NewEvent]], list[str]]
) -> list[str]:
    """Store `events` with `store` inside a PRODUCER span, each carrying the span's context
    in its headers; return the ids `store` returns."""
    name = events[0].name if len({e.name for e in events}) == 1 else "(many)"
    attributes: dict[str, str | int] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": name,
    }
    if len(events) == 1:
        attributes["messaging.message.id"] = events[0].id
    else:
        attributes["messaging.batch.message_count"] = len(events)
    with _tracer.start_as_current_span(
        f"publish {name}", kind=SpanKind.PRODUCER, attributes=attributes
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return store(_with_context(events, carrier) if carrier else list(events))


@contextlib.contextmanager
def consuming(lease: Lease, headers: Mapping[str, str]) -> Iterator[None]:
    """Run one delivery attempt inside a CONSUMER span, parented by the publisher's context
    (from the event's headers); an exception escaping it is recorded on the span."""
    parent = propagate.extract(dict(headers)) if headers else None
    with _tracer.start_as_current_span(
        f"process {lease.name}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": lease.name,
            "messaging.message.id": lease.event_id,
            "messaging.destination.subscription.name": lease.receiver,
            "evq.attempt": lease.attempt - lease.attempt_base,
            "evq.delivery.id": lease.delivery_id,
            "evq.replay": lease.replay,
        },
    ):
        yield


def _with_context(events: Sequence[NewEvent], carrier: dict[str, str]) -> list[NewEvent]:
    """The events with the trace context added to their headers. Headers a publisher gave
    itself win (a `traceparent` it propagates from elsewhere, say); an event whose headers
    would grow past the limit keeps them as they are: tracing never fails a publish."""
    plain = json.dumps(carrier, ensure_ascii=False, separators=(",", ":"))
    traced = []
    for event in events:
        if event.headers is None:
            traced.append(event._replace(headers=plain))
            continue
        merged = json.dumps(
            {**carrier, **json.loads(event.headers)}, ensure_ascii=False, separators=(",", ":")
        )
        if len(merged.encode()) <= MAX_HEADERS_BYTES:
            event = event._replace(headers=merged)
        traced.append(event)
    return traced
