"""Settings read from the environment (`EVQ_*`) or set with `evq.configure()`.

Only the standard library is imported here: publishing must stay fast to start.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Literal, NamedTuple

from evq.errors import InvalidInput

DEFAULT_URL = "evq.db"
# The worker's defaults, shown by `evq worker --help` and read by `evq.worker.WorkerOptions`.
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 30.0
DEFAULT_PREFETCH = 16
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

# Limits, documented in the README and in --help. A lease shorter than a second would expire
# between a worker's heartbeats: one worker would run its own deliveries twice.
MIN_LEASE_SECONDS = 1.0
MAX_LEASE_SECONDS = 86400.0
MAX_DELAY_SECONDS = 3650 * 86400.0  # Ten years of 365 days.
MAX_DURATION_SECONDS = 36500 * 86400.0  # A hundred years: any other duration.
# SQLite refuses strings of a billion bytes; a payload limit that large is a mistake.
MAX_PAYLOAD_LIMIT_BYTES = 256 * 1024 * 1024


class Settings(NamedTuple):
    """Where the queue lives and how it behaves; see the README's configuration table."""

    url: str = DEFAULT_URL
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    retention_seconds: float = DEFAULT_RETENTION_SECONDS
    #: OpenTelemetry tracing (`EVQ_OTEL`): "auto" traces when the application uses
    #: OpenTelemetry (has imported it), "on" always (importing it), "off" never.
    otel: OtelMode = "auto"


OtelMode = Literal["auto", "on", "off"]
_OTEL_MODES: dict[str, OtelMode] = {
    "auto": "auto",
    "1": "on",
    "on": "on",
    "true": "on",
    "0": "off",
    "off": "off",
    "false": "off",
}


def tracing_enabled() -> bool:
    """Whether publishes and deliveries are traced with OpenTelemetry (see `evq.tracing`).

    In "auto" mode, only once OpenTelemetry is loaded and a tracer provider is set (the
    application traces): evq never pays for importing it. Loaded is not enough: redis-py 8
    imports it for metrics of its own, and spans without a provider record nothing but cost
    a fifth of a publish on Redis."""
    mode = current().otel
    if mode == "auto":
        trace = sys.modules.get("opentelemetry.trace")
        return trace is not None and _provider_set(trace)
    return mode == "on"


def _provider_set(trace: Any) -> bool:
    """Whether the application set a tracer provider (or names one in the environment, which
    `get_tracer_provider` then loads); without one, OpenTelemetry answers with its proxy.
    Once one is set it stays: the answer is then kept, and the look-up skipped."""
    global _provider_seen
    if not _provider_seen:
        _provider_seen = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return _provider_seen


_provider_seen = False


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    """Return the settings named by `EVQ_URL`, `EVQ_MAX_PAYLOAD`, `EVQ_RETENTION` and
    `EVQ_OTEL`, with defaults for the ones that are unset. (A backend reads its own settings
    from the URL; the SQLite backend also reads `EVQ_SYNC`.)"""
    env = dict(os.environ) if env is None else env
    settings = Settings()
    if env.get("EVQ_URL"):
        settings = settings._replace(url=env["EVQ_URL"])
    if env.get("EVQ_MAX_PAYLOAD"):
        size = check_payload_limit("EVQ_MAX_PAYLOAD", parse_size(env["EVQ_MAX_PAYLOAD"]))
        settings = settings._replace(max_payload_bytes=size)
    if env.get("EVQ_OTEL"):
        mode = _OTEL_MODES.get(env["EVQ_OTEL"].strip().lower())
        if mode is None:
            raise InvalidInput(f"EVQ_OTEL must be auto, 1 or 0, got {env['EVQ_OTEL']!r}")
        settings = settings._replace(otel=mode)
    if env.get("EVQ_RETENTION"):
        from evq.durations import parse_duration  # not needed by a plain `evq publish`

        retention = check_seconds("EVQ_RETENTION", parse_duration(env["EVQ_RETENTION"]))
        settings = settings._replace(retention_seconds=retention)
    return settings


def check_seconds(
    what: str, seconds: float, *, minimum: float = 0.0, maximum: float = MAX_DURATION_SECONDS
) -> float:
    """Return `seconds` if it is a number from `minimum` to `maximum`, else raise
    `InvalidInput` naming `what` and the range."""
    if type(seconds) not in (int, float) or not minimum <= seconds <= maximum:
        from evq.durations import format_seconds

        raise InvalidInput(
            f"{what} must be from {format_seconds(minimum)} to {format_seconds(maximum)},"
            f" got {seconds!r}"
        )
    return float(seconds)


def check_payload_limit(what: str, size: int) -> int:
    """Return `size` if it is a payload limit from 1 byte to 256 MiB, else raise
    `InvalidInput`."""
    if type(size) is not int or not 1 <= size <= MAX_PAYLOAD_LIMIT_BYTES:
        raise InvalidInput(
            f"{what} must be from 1 byte to {MAX_PAYLOAD_LIMIT_BYTES:,} bytes (256MiB),"
            f" got {size!r}"
        )
    return size


_SIZE_PATTERN = r"(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?"
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """Return a byte count from `1048576`, `512KiB`, `1MiB` or `2MB`."""
    match = re.fullmatch(_SIZE_PATTERN, text.strip(), re.IGNORECASE)
    if not match or int(match.group(1)) <= 0:
        raise InvalidInput(f"invalid size {text!r}: use a number of bytes, or 512KiB, 1MiB")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]


_settings: Settings | None = None


def current() -> Settings:
    """Return the settings in force: those given to `configure()`, else the environment's."""
    global _settings
    if _settings is None:
        _settings = settings_from_env()
    return _settings


def configure(
    *,
    url: str | None = None,
    max_payload_bytes: int | None = None,
    retention_seconds: float | None = None,
    otel: bool | None = None,
) -> Settings:
    """Change the settings of this process; unnamed ones keep their value. Returns the result.

    `url` names the queue and carries the backend's own settings
    (`sqlite:///app.db?sync=normal`). `otel` turns OpenTelemetry tracing on or off, whether
    or not the application has imported OpenTelemetry (`EVQ_OTEL`)."""
    global _settings
    changes: dict[str, object] = {}
    if url is not None:
        changes["url"] = url
    if max_payload_bytes is not None:
        changes["max_payload_bytes"] = check_payload_limit("max_payload_bytes", max_payload_bytes)
    if retention_seconds is not None:
        changes["retention_seconds"] = check_seconds("retention_seconds", retention_seconds)
    if otel is not None:
        changes["otel"] = "on" if otel else "off"
    _settings = current()._replace(**changes)  # type: ignore[arg-type]
    return _settings


def replace_settings(settings: Settings | None) -> Settings | None:
    """Put `settings` in force (None: the environment's, read again on next use) and return
    those `configure()` had put in force before (None if none), to put them back later."""
    global _settings
    previous, _settings = _settings, settings
    return previous


def reset() -> None:
    """Forget `configure()` changes and read the environment again on next use (for tests)."""
    global _settings
    _settings = None
