"""evq.config: the settings read from `EVQ_*` variables and set with `evq.configure()`, their
defaults, units and limits as the README's configuration table gives them. (How durably a
SQLite queue is written, `EVQ_SYNC` and `?sync=`: `tests/sqlite/test_durability.py`.)"""

from __future__ import annotations

import pytest

import evq
from evq import config
from evq.config import Settings, parse_size, settings_from_env
from evq.errors import InvalidInput


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EVQ_URL", "EVQ_MAX_PAYLOAD", "EVQ_RETENTION"):
        monkeypatch.delenv(name, raising=False)
    config.reset()


def test_the_defaults_are_the_readmes() -> None:
    assert settings_from_env({}) == Settings(
        url="evq.db", max_payload_bytes=1024 * 1024, retention_seconds=7 * 86400.0
    )
    # An empty variable is an unset one.
    assert settings_from_env({"EVQ_URL": "", "EVQ_MAX_PAYLOAD": "", "EVQ_RETENTION": ""}) == (
        settings_from_env({})
    )


def test_each_variable_sets_its_setting_and_leaves_the_others() -> None:
    assert settings_from_env({"EVQ_URL": "sqlite:///q.db?sync=normal"}) == Settings(
        url="sqlite:///q.db?sync=normal"
    )
    assert settings_from_env({"EVQ_MAX_PAYLOAD": "512KiB"}) == Settings(max_payload_bytes=524288)
    assert settings_from_env({"EVQ_RETENTION": "3d"}) == Settings(retention_seconds=259200.0)
    assert settings_from_env({"EVQ_RETENTION": "36500d"}).retention_seconds == 36500 * 86400.0


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("1", 1),
        ("512KiB", 512 * 1024),
        ("512kib", 512 * 1024),
        ("2KB", 2000),
        ("1MiB", 1024**2),
        ("2MB", 2_000_000),
        ("1GiB", 1024**3),
        ("1GB", 1000**3),
        ("100b", 100),
        (" 3 MiB ", 3 * 1024**2),
    ],
)
def test_sizes_are_bytes_or_decimal_and_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "0KiB", "-1", "1.5MiB", "1TB", "MiB", "1 MiB 2", "1e6"])
def test_a_size_that_is_not_a_positive_whole_number_of_a_known_unit_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match=f"invalid size {text!r}: use a number of bytes"):
        parse_size(text)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EVQ_MAX_PAYLOAD": "257MiB"}, "EVQ_MAX_PAYLOAD must be from 1 byte to 268,435,456"),
        ({"EVQ_MAX_PAYLOAD": "lots"}, "invalid size 'lots'"),
        ({"EVQ_RETENTION": "36501d"}, "EVQ_RETENTION must be from 0 s to 36500 days, got 31536864"),
        ({"EVQ_RETENTION": "soon"}, "soon"),
    ],
)
def test_a_variable_out_of_range_or_unreadable_is_bad_input_naming_it(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
        settings_from_env(env)


def test_the_limits_are_inclusive() -> None:
    top = config.MAX_PAYLOAD_LIMIT_BYTES
    assert settings_from_env({"EVQ_MAX_PAYLOAD": f"{top}"}).max_payload_bytes == top
    assert config.check_payload_limit("x", 1) == 1
    with pytest.raises(InvalidInput):
        config.check_payload_limit("x", top + 1)
    with pytest.raises(InvalidInput):
        config.check_payload_limit("x", 0)
    assert config.check_seconds("x", 0) == 0.0
    assert config.check_seconds("x", config.MAX_DURATION_SECONDS) == config.MAX_DURATION_SECONDS
    assert config.check_seconds("x", 5, minimum=5, maximum=5) == 5.0
    for bad in (-0.001, config.MAX_DURATION_SECONDS + 1, float("nan"), float("inf"), True, "5"):
        with pytest.raises(InvalidInput, match="x must be from 0 s to 36500 days, got"):
            config.check_seconds("x", bad)  # type: ignore[arg-type]
    for bad_size in (True, 1.0, "1"):
        with pytest.raises(InvalidInput, match="x must be from 1 byte"):
            config.check_payload_limit("x", bad_size)  # type: ignore[arg-type]


def test_current_reads_the_environment_once_and_reset_reads_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVQ_URL", "first.db")
    assert config.current().url == "first.db"
    monkeypatch.setenv("EVQ_URL", "second.db")
    assert config.current().url == "first.db"  # read once, at first use
    config.reset()
    assert config.current().url == "second.db"


def test_configure_changes_only_what_it_names_and_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVQ_URL", "env.db")
    monkeypatch.setenv("EVQ_MAX_PAYLOAD", "2KiB")

    result = evq.configure(url="sqlite:///app.db?sync=normal")

    assert result == Settings(url="sqlite:///app.db?sync=normal", max_payload_bytes=2048)
    assert config.current() == result
    assert evq.configure(retention_seconds=60) == result._replace(retention_seconds=60.0)
    assert evq.configure() == config.current()  # naming nothing changes nothing
    assert evq.configure(max_payload_bytes=10).max_payload_bytes == 10
    assert config.current().url == "sqlite:///app.db?sync=normal"
    config.reset()
    assert config.current() == Settings(url="env.db", max_payload_bytes=2048)


@pytest.mark.parametrize(
    "bad",
    [
        {"url": "other.db", "max_payload_bytes": 0},
        {"url": "other.db", "retention_seconds": -1},
        {"max_payload_bytes": 257 * 1024 * 1024},
        {"retention_seconds": 36501 * 86400.0},
    ],
)
def test_a_bad_configure_raises_and_changes_nothing(bad: dict[str, object]) -> None:
    before = evq.configure(url="kept.db", max_payload_bytes=4096, retention_seconds=10)

    with pytest.raises(InvalidInput, match="must be from"):
        evq.configure(**bad)  # type: ignore[arg-type]

    assert config.current() == before
