"""A JSON serializer for huey, replacing its default pickle one.

Whoever can write to a pickled queue can run code in the worker. Everything evq hands to huey
goes through this serializer instead: huey `Message`s, naive-UTC datetimes and tuples are
tagged JSON, and anything else is refused when written, never guessed at when read.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from huey.registry import Message
from huey.serializer import Serializer


class JSONSerializer(Serializer):  # type: ignore[misc]
    """huey serializer that writes JSON and never unpickles anything."""

    def _serialize(self, data: Any) -> bytes:
        return json.dumps(_tag(data), separators=(",", ":"), allow_nan=False).encode()

    def _deserialize(self, data: bytes) -> Any:
        return json.loads(data, object_hook=_untag)


# Most of what a message holds: returned as they are, after one look at their exact type.
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _tag(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Message):
        return {"__message__": [_tag(item) for item in value]}
    if isinstance(value, tuple):
        return {"__tuple__": [_tag(item) for item in value]}
    if isinstance(value, list):
        return [_tag(item) for item in value]
    if isinstance(value, dict):
        if any(key in value for key in ("__message__", "__tuple__", "__datetime__")):
            raise TypeError("dict keys __message__, __tuple__ and __datetime__ are reserved")
        return {str(key): _tag(item) for key, item in value.items()}
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return {"__datetime__": value.isoformat()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"evq's huey serializer cannot store a {type(value).__name__}")


def _untag(obj: dict[str, Any]) -> Any:
    if "__message__" in obj:
        return Message(*obj["__message__"])
    if "__tuple__" in obj:
        return tuple(obj["__tuple__"])
    if "__datetime__" in obj:
        return dt.datetime.fromisoformat(obj["__datetime__"])
    return obj
