"""An application that traces with the OpenTelemetry SDK: every finished span is written as
one JSON line to the file named by EVQ_TEST_SPANS. Importing it sets up the SDK (as an
application does at start), so `evq worker --app tests.apps.traced` traces its deliveries.

Its receiver fails the first attempt of an event whose payload says `{"fail_once": true}`.
`python -m tests.apps.traced NAME [PAYLOAD]` publishes NAME inside a span of its own,
`checkout`, and prints the event id.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import evq


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to a file, one JSON object per line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as file:
            for span in spans:
                context = span.get_span_context()
                assert context is not None
                parent = span.parent
                file.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "kind": span.kind.name,
                            "trace_id": f"{context.trace_id:032x}",
                            "span_id": f"{context.span_id:016x}",
                            "parent_id": None if parent is None else f"{parent.span_id:016x}",
                            "attributes": dict(span.attributes or {}),
                            "status": span.status.status_code.name,
                            "events": [event.name for event in span.events],
                            "pid": os.getpid(),
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["EVQ_TEST_SPANS"])))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("tests.apps.traced")


@evq.subscriber("order.*", retry_delay=0)
def charge(event: evq.Event, /) -> None:
    with tracer.start_as_current_span("charge card"):
        if event.payload.get("fail_once") and event.attempt == 1:
            raise RuntimeError("card declined")


def main(argv: list[str]) -> None:
    name, payload = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    with tracer.start_as_current_span("checkout"):
        print(evq.publish(name, payload=payload))
        evq.publish_many([{"name": name, "payload": payload}, {"name": "other.x", "payload": {}}])


if __name__ == "__main__":
    main(sys.argv[1:])
