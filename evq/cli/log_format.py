"""`evq worker --log-format json`: one JSON object per line, for Loki, Elasticsearch or
CloudWatch.

A small `logging.Formatter` rather than a library (python-json-logger, structlog): the worker
logs through the standard library already, the fields are few and fixed, and a formatter of
twenty lines keeps the runtime dependencies to click, huey and rich.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any


class JSONFormatter(logging.Formatter):
    """Format each record as one line of JSON: `time` (UTC, ISO 8601), `level`, `logger`,
    `message`, `pid`, the delivery's fields when the record is about one (`event_id`,
    `event_name`, `receiver`, `attempt`, `outcome`, `duration_seconds`, `error`, ...), and
    `exception` with the traceback when one was logged. A traceback stays inside its field:
    every line of the output is one whole JSON document."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = record.getMessage()
        fields = getattr(record, "delivery", None)
        if isinstance(fields, dict):
            # "done     order.paid ...": the padding lines up columns for people only.
            head, _, rest = message.partition(" ")
            message = f"{head} {rest.lstrip(' ')}"
        entry: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
            "pid": record.process,
        }
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        # ensure_ascii: a message with a lone surrogate (decoded from bad bytes) still encodes.
        return json.dumps(entry, ensure_ascii=True, default=str)
