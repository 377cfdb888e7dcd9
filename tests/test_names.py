"""Event names and subscription patterns."""

from __future__ import annotations

import pytest

from evq.errors import InvalidEventName, InvalidPattern
from evq.names import matches, validate_name, validate_pattern


@pytest.mark.parametrize("name", ["user.created", "a", "order_2.item-added.v1", "x" * 200])
def test_valid_names_are_accepted(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "user..created", ".user", "user.", "user created", "user.*", "ü.x", "x" * 201, "a/b"],
)
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidEventName):
        validate_name(name)


def test_a_name_must_be_a_string() -> None:
    with pytest.raises(InvalidEventName, match="must be a string"):
        validate_name(42)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("user.created", "user.created", True),
        ("user.created", "user.deleted", False),
        ("user.*", "user.created", True),
        ("user.*", "user.profile.updated", False),
        ("user.*", "user", False),
        ("user.**", "user.profile.updated", True),
        ("user.**", "user", False),
        ("**", "anything.at.all", True),
        ("**", "x", True),
        ("*.created", "order.created", True),
        ("user.**.deleted", "user.a.b.deleted", True),
        ("user.**.deleted", "user.deleted", False),
        ("user.created", "user_created", False),
    ],
)
def test_patterns_match_names_segment_by_segment(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


@pytest.mark.parametrize("pattern", ["user.***", "user.*x", "", "user..*", "a b"])
def test_invalid_patterns_are_rejected(pattern: str) -> None:
    with pytest.raises(InvalidPattern):
        validate_pattern(pattern)
