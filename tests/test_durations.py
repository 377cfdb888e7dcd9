"""Specification of evq.durations: parsing `30s` / `--since 2h` and formatting "3 min ago"."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import evq.durations
from evq.durations import format_age, format_seconds, parse_duration, parse_time
from evq.errors import InvalidDuration, InvalidInput

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


# parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("0", 0.0),
        (".5", 0.5),
    ],
)
def test_a_plain_number_is_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
        ("1.5h", 5400.0),
    ],
)
def test_a_number_with_a_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_m_means_minutes_and_ms_means_milliseconds() -> None:
    assert parse_duration("1m") == 60.0
    assert parse_duration("1ms") == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h30m", 5400.0),
        ("1d12h", 129600.0),
        ("1m30s500ms", 90.5),
        ("1h 30m", 5400.0),
    ],
)
def test_units_combine_by_adding_up(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2H", 7200.0),
        ("1H30M", 5400.0),
        ("500MS", 0.5),
        (" 2h ", 7200.0),
        ("\t30s\n", 30.0),
        ("5 m", 300.0),
    ],
)
def test_case_and_surrounding_whitespace_do_not_matter(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3 min", 180.0),
        ("4 days", 345600.0),
        ("1 day", 86400.0),
        ("2 h", 7200.0),
        ("1.2 s", 1.2),
        ("12 ms", 0.012),
        ("1.5 h", 5400.0),
        ("0 s", 0.0),
    ],
)
def test_what_format_seconds_prints_parses_back(text: str, seconds: float) -> None:
    assert format_seconds(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "abc", "5x", "1h30", "h", "1..5s", "5s5", "1e3", "+5s", "inf", "nan", "infinity"],
)
def test_garbage_is_rejected(text: str) -> None:
    with pytest.raises(InvalidDuration):
        parse_duration(text)


@pytest.mark.parametrize("text", ["-5", "-5s", " -1h"])
def test_negative_durations_are_rejected_and_the_message_says_why(text: str) -> None:
    with pytest.raises(InvalidDuration, match="cannot be negative"):
        parse_duration(text)


def test_a_number_too_large_for_a_float_is_rejected() -> None:
    with pytest.raises(InvalidDuration, match="too large"):
        parse_duration("9" * 400)


def test_the_error_message_names_the_bad_text_and_shows_examples() -> None:
    with pytest.raises(InvalidDuration) as caught:
        parse_duration("abc")
    assert str(caught.value) == (
        "invalid duration 'abc': use a number of seconds or a number with a unit, "
        "like 30s, 5m, 2h, 7d"
    )


def test_the_error_message_is_one_line_even_for_long_or_multiline_input() -> None:
    with pytest.raises(InvalidDuration) as caught:
        parse_duration("x\n" * 100)
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 200


def test_invalid_duration_is_an_input_error() -> None:
    # The command line maps InvalidInput to exit code 2.
    with pytest.raises(InvalidInput):
        parse_duration("soon")


# parse_time


def test_now_means_now() -> None:
    assert parse_time("now", now=NOW) == NOW
    assert parse_time(" NOW ", now=NOW) == NOW


@pytest.mark.parametrize(
    ("text", "ago"),
    [("2h", timedelta(hours=2)), ("30", timedelta(seconds=30)), ("1d12h", timedelta(hours=36))],
)
def test_a_duration_means_that_long_ago(text: str, ago: timedelta) -> None:
    assert parse_time(text, now=NOW) == NOW - ago


def test_an_iso_date_is_midnight_utc() -> None:
    assert parse_time("2024-04-30", now=NOW) == datetime(2024, 4, 30, tzinfo=UTC)


def test_a_naive_iso_datetime_is_taken_as_utc() -> None:
    assert parse_time("2024-04-30T08:15:00", now=NOW) == datetime(2024, 4, 30, 8, 15, tzinfo=UTC)
    assert parse_time("2024-04-30 08:15", now=NOW) == datetime(2024, 4, 30, 8, 15, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2024-04-30T08:15:00Z", "2024-04-30t08:15:00z"])
def test_a_trailing_z_means_utc(text: str) -> None:
    assert parse_time(text, now=NOW) == datetime(2024, 4, 30, 8, 15, tzinfo=UTC)


def test_an_offset_is_converted_to_utc() -> None:
    result = parse_time("2024-04-30T10:15:00+02:00", now=NOW)
    assert result == datetime(2024, 4, 30, 8, 15, tzinfo=UTC)
    assert result.utcoffset() == timedelta(0)


def test_the_result_is_always_timezone_aware_utc() -> None:
    for text in ["now", "2h", "2024-04-30", "2024-04-30T10:15:00+02:00"]:
        assert parse_time(text, now=NOW).tzinfo is UTC, text


def test_a_naive_now_is_taken_as_utc() -> None:
    naive_now = datetime(2024, 5, 1, 12, 0, 0)
    assert parse_time("1h", now=naive_now) == datetime(2024, 5, 1, 11, 0, 0, tzinfo=UTC)


def test_an_aware_now_in_another_zone_is_converted() -> None:
    paris_now = NOW.astimezone(timezone(timedelta(hours=2)))
    assert parse_time("now", now=paris_now).tzinfo is UTC
    assert parse_time("now", now=paris_now) == NOW


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01", "-2h", "12:00"])
def test_anything_else_is_rejected_with_a_clear_message(text: str) -> None:
    with pytest.raises(InvalidDuration) as caught:
        parse_time(text, now=NOW)
    message = str(caught.value)
    assert message.startswith(f"invalid time {text!r}: ")
    for example in ("2024-05-01", "'now'", "2h"):
        assert example in message


@pytest.mark.parametrize("text", ["99999999w", "0001-01-01T00:00+01:00"])
def test_a_time_before_year_one_in_utc_is_rejected(text: str) -> None:
    with pytest.raises(InvalidDuration, match="datetime can represent"):
        parse_time(text, now=NOW)


# format_age


@pytest.mark.parametrize(
    ("ago", "text"),
    [
        (timedelta(0), "just now"),
        (timedelta(seconds=1.9), "just now"),
        (timedelta(seconds=12), "12 s ago"),
        (timedelta(seconds=59), "59 s ago"),
        (timedelta(minutes=3, seconds=59), "3 min ago"),
        (timedelta(hours=5, minutes=59), "5 h ago"),
        (timedelta(days=1, hours=3), "1 day ago"),
        (timedelta(days=2), "2 days ago"),
        (timedelta(days=400), "400 days ago"),
    ],
)
def test_age_in_a_persons_terms_rounding_down(ago: timedelta, text: str) -> None:
    assert format_age(NOW - ago, now=NOW) == text


@pytest.mark.parametrize(
    ("ahead", "text"),
    [
        (timedelta(seconds=1), "just now"),
        (timedelta(seconds=30), "in 30 s"),
        (timedelta(minutes=3), "in 3 min"),
        (timedelta(hours=5), "in 5 h"),
        (timedelta(days=2), "in 2 days"),
    ],
)
def test_future_times_say_in(ahead: timedelta, text: str) -> None:
    assert format_age(NOW + ahead, now=NOW) == text


def test_age_accepts_naive_times_as_utc_and_mixed_zones() -> None:
    naive_then = datetime(2024, 5, 1, 11, 57, 0)
    assert format_age(naive_then, now=NOW) == "3 min ago"
    paris_then = (NOW - timedelta(hours=5)).astimezone(timezone(timedelta(hours=2)))
    assert format_age(paris_then, now=NOW) == "5 h ago"


# format_seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.00004, "<0.1 ms"),
        (0.0008, "0.8 ms"),
        (0.012, "12 ms"),
        (0.85, "850 ms"),
        (1.0, "1 s"),
        (1.2, "1.2 s"),
        (12.3, "12 s"),
        (90, "1.5 min"),
        (180, "3 min"),
        (7200, "2 h"),
        (86400, "1 day"),
        (345600, "4 days"),
    ],
)
def test_compact_human_durations(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.9996, "1 s"), (59.97, "1 min"), (3599.9, "1 h"), (86399.0, "1 day")],
)
def test_rounding_up_moves_to_the_next_unit(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_negative_durations_keep_their_sign() -> None:
    assert format_seconds(-1.2) == "-1.2 s"


@pytest.mark.parametrize("seconds", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_seconds_are_not_durations(seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot format"):
        format_seconds(seconds)


# import cost


def test_importing_durations_pulls_in_no_third_party_libraries() -> None:
    # Measured in a fresh interpreter, and only what evq.durations adds beyond the evq package.
    code = (
        "import sys, evq; before = set(sys.modules); import evq.durations; "
        "added = set(sys.modules) - before; "
        "print(' '.join(sorted(m for m in added if m.split('.')[0] in THIRD_PARTY)))"
    ).replace("THIRD_PARTY", repr({"rich", "click", "dateutil", "huey"}))
    root = Path(evq.durations.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip() == ""
