"""Parse and format durations and points in time (`30s`, `1h30m`, `--since 2h`, "3 min ago").

Only the standard library is imported here: the command line imports this module on every
start-up, so it must stay cheap.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from evq.errors import InvalidDuration

__all__ = ["format_age", "format_seconds", "parse_duration", "parse_time"]

_UNIT_SECONDS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}

# Longer spellings are accepted so that what `format_seconds` prints ("3 min", "4 days") can be
# pasted back into an option.
_UNIT_ALIASES: dict[str, str] = {
    "ms": "ms",
    "msec": "ms",
    "msecs": "ms",
    "s": "s",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "m": "m",
    "min": "m",
    "mins": "m",
    "minute": "m",
    "minutes": "m",
    "h": "h",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "d": "d",
    "day": "d",
    "days": "d",
    "w": "w",
    "wk": "w",
    "wks": "w",
    "week": "w",
    "weeks": "w",
}

# No sign and no exponent: a duration is typed by a person, and "1e3" or "+5" are more likely
# typos than intent. re.ASCII keeps \d from matching other scripts' digits.
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# Longest alias first, so that "ms" is not read as "m" followed by garbage.
_UNIT = "|".join(sorted(_UNIT_ALIASES, key=len, reverse=True))
_PLAIN_RE = re.compile(_NUMBER, re.ASCII)
_PART_RE = re.compile(rf"\s*({_NUMBER})\s*({_UNIT})(?![a-z])\s*", re.ASCII | re.IGNORECASE)
_WHOLE_RE = re.compile(rf"(?:{_PART_RE.pattern})+", re.ASCII | re.IGNORECASE)

# (unit, its length in seconds, how many of it make the next unit), for format_seconds.
_FORMAT_STEPS: tuple[tuple[str, float, float], ...] = (
    ("ms", 0.001, 1000),
    ("s", 1, 60),
    ("min", 60, 60),
    ("h", 3600, 24),
    ("days", 86400, math.inf),
)

_DURATION_EXAMPLES = "use a number of seconds or a number with a unit, like 30s, 5m, 2h, 7d"
_TIME_EXAMPLES = (
    "use an ISO 8601 date or time like 2024-05-01 or 2024-05-01T12:00:00Z, 'now', "
    "or how long ago like 30m, 2h, 7d"
)


def parse_duration(text: str) -> float:
    """Return the number of seconds in `text`: "30", "1.5", "500ms", "5m", "2h", "1h30m", "7d"."""
    stripped = text.strip()
    if stripped.startswith("-"):
        raise InvalidDuration(
            f"invalid duration {_quote(text)}: a duration cannot be negative; {_DURATION_EXAMPLES}"
        )
    if _PLAIN_RE.fullmatch(stripped):
        seconds = float(stripped)
    elif _WHOLE_RE.fullmatch(stripped):
        seconds = sum(
            float(number) * _UNIT_SECONDS[_UNIT_ALIASES[unit.lower()]]
            for number, unit in _PART_RE.findall(stripped)
        )
    else:
        raise InvalidDuration(f"invalid duration {_quote(text)}: {_DURATION_EXAMPLES}")
    # A long enough run of digits overflows to inf, which no caller can schedule.
    if not math.isfinite(seconds):
        raise InvalidDuration(
            f"invalid duration {_quote(text)}: it is too large; {_DURATION_EXAMPLES}"
        )
    return seconds


def parse_time(text: str, *, now: datetime) -> datetime:
    """Return the UTC time meant by `text`: ISO 8601, "now", or a duration ago ("2h" = now - 2h).

    Naive datetimes (in `text` or `now`) are taken as UTC. The result is always timezone-aware.
    """
    stripped = text.strip()
    utc_now = _as_utc(now)
    if stripped.lower() == "now":
        return utc_now
    parsed = _parse_iso(stripped)
    if parsed is not None:
        return parsed
    try:
        seconds = parse_duration(stripped)
    except InvalidDuration:
        raise InvalidDuration(f"invalid time {_quote(text)}: {_TIME_EXAMPLES}") from None
    try:
        return utc_now - timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidDuration(
            f"invalid time {_quote(text)}: that is further back than datetime can represent; "
            f"{_TIME_EXAMPLES}"
        ) from None


def format_age(then: datetime, *, now: datetime) -> str:
    """Say how long ago `then` was: "just now", "12 s ago", "3 min ago", "2 days ago", "in 5 h"."""
    seconds = (_as_utc(now) - _as_utc(then)).total_seconds()
    if abs(seconds) < 2:
        return "just now"
    span = _age_span(abs(seconds))
    return f"in {span}" if seconds < 0 else f"{span} ago"


def format_seconds(seconds: float) -> str:
    """Format a duration compactly: "0.8 ms", "12 ms", "1.2 s", "3 min", "2 h", "4 days".

    Raises `ValueError` for inf and nan, which are not durations.
    """
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    if seconds < 0:
        return "-" + format_seconds(-seconds)
    if seconds == 0:
        return "0 s"
    for unit, size, limit in _FORMAT_STEPS:
        # Compare after rounding, so that 59.97 s becomes "1 min" and not "60 s".
        shown = _round_for_display(seconds / size)
        if shown < limit:
            return _with_unit(shown, unit)
    raise AssertionError("unreachable: the last step has no limit")


def _with_unit(shown: float, unit: str) -> str:
    """Join a rounded number and its unit: "1.2 s", "3 min", "1 day", "<0.1 ms"."""
    if shown == 0:
        return "<0.1 ms"
    if unit == "days" and shown == 1:
        unit = "day"
    number = str(int(shown)) if shown.is_integer() else f"{shown:.1f}"
    return f"{number} {unit}"


def _round_for_display(value: float) -> float:
    """Keep one decimal below 10 ("1.2 s"); whole numbers above ("12 s")."""
    return round(value, 1) if value < 10 else float(round(value))


def _age_span(seconds: float) -> str:
    """Name a non-negative span in its largest whole unit, rounding down like a clock does."""
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    days = int(seconds // 86400)
    return "1 day" if days == 1 else f"{days} days"


def _parse_iso(text: str) -> datetime | None:
    """Parse an ISO 8601 date or datetime as UTC, or return None if `text` is not one."""
    # Upper-casing lets "t" and "z" through, which fromisoformat rejects; a trailing Z is
    # rewritten because fromisoformat only learned it in 3.11 and we state it as supported.
    candidate = text.upper()
    if candidate.endswith("Z"):
        candidate = candidate[:-1] + "+00:00"
    try:
        return _as_utc(datetime.fromisoformat(candidate))
    except ValueError:
        return None
    except OverflowError:
        # e.g. 0001-01-01T00:00+01:00, which is before datetime's first moment in UTC.
        raise InvalidDuration(
            f"invalid time {_quote(text)}: it is outside the range datetime can represent"
        ) from None


def _quote(text: str) -> str:
    """Quote user input for an error message, cut short so the message stays one line."""
    limit = 40
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _as_utc(moment: datetime) -> datetime:
    """Return `moment` in UTC, taking a naive datetime as already being UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
