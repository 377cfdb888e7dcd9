"""Event names and subscription patterns.

A name is dot-separated segments of letters, digits, `_` and `-` (`user.created`), at most 200
characters. A pattern is a name whose segments may also be `*` (exactly one segment) or `**` (one
or more segments): `user.*` matches `user.created` but not `user.profile.updated`; `**` matches
every event.
"""

from __future__ import annotations

import functools
import re

from evq.errors import InvalidEventName, InvalidPattern

MAX_NAME_LENGTH = 200

_SEGMENT = r"[A-Za-z0-9_-]+"
_NAME_RE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")


def validate_name(name: object, /) -> str:
    """Return `name` if it is a valid event name, else raise `InvalidEventName`."""
    if not isinstance(name, str):
        raise InvalidEventName(f"event name must be a string, not {type(name).__name__}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidEventName(
            f"event name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if not _NAME_RE.fullmatch(name):
        raise InvalidEventName(
            f"invalid event name {name!r}: use dot-separated segments of letters, digits,"
            " '_' and '-', like 'user.created'"
        )
    return name


def validate_pattern(pattern: object, /) -> str:
    """Return `pattern` if it is a valid subscription pattern, else raise `InvalidPattern`."""
    if not isinstance(pattern, str):
        raise InvalidPattern(f"pattern must be a string, not {type(pattern).__name__}")
    segments = pattern.split(".")
    if len(pattern) > MAX_NAME_LENGTH or not all(
        s in ("*", "**") or re.fullmatch(_SEGMENT, s) for s in segments
    ):
        raise InvalidPattern(
            f"invalid pattern {pattern!r}: use an event name whose segments may also be"
            " '*' (one segment) or '**' (one or more segments), like 'user.*'"
        )
    return pattern


def matches(pattern: str, name: str, /) -> bool:
    """Tell whether the event `name` matches the subscription `pattern`."""
    return _compile(pattern).fullmatch(name) is not None


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    for segment in pattern.split("."):
        if segment == "**":
            parts.append(rf"{_SEGMENT}(?:\.{_SEGMENT})*")
        elif segment == "*":
            parts.append(_SEGMENT)
        else:
            parts.append(re.escape(segment))
    return re.compile(r"\.".join(parts))
