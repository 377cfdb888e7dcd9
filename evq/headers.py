"""Event headers: string metadata carried with an event (trace context, a correlation id, a
schema version), checked at publish time and stored as JSON text.

Header names follow the CloudEvents rules for extension attribute names, so that an event
shows as a valid CloudEvent with its headers as extension attributes (`evq show --json`):
lower-case ASCII letters and digits only, at most 20 characters (the spec's recommended
limit, enforced here so that every header fits every CloudEvents binding), and never the name
of a CloudEvents context attribute (`id`, `type`, `source`, ...) nor start with `evq` (evq's
own extension attributes). Values are strings of the
CloudEvents `String` type: no control characters, surrogates or noncharacters. Together the
headers take at most `MAX_HEADERS_BYTES` of JSON: they are metadata, not a second payload.

Only the standard library is imported: publishing must start fast.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from evq.errors import InvalidHeaders

MAX_NAME_LENGTH = 20
#: The most the JSON text of an event's headers may take (UTF-8 bytes), like the usual limit
#: of an HTTP server on a request's headers.
MAX_HEADERS_BYTES = 8192
#: The CloudEvents context attributes (v1.0.2), which a header may not shadow, and `data`.
RESERVED_NAMES = frozenset(
    {
        "id",
        "source",
        "specversion",
        "type",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
        "data",
    }
)

_NAME = re.compile(r"[a-z0-9]{1,20}")
_NAMES = re.compile(r"[a-z0-9]{1,20}(?:\0[a-z0-9]{1,20})*")
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# CloudEvents String: no C0/C1 controls, surrogates or noncharacters.
_BAD_CHARACTER = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
    "\U0001fffe\U0001ffff\U0002fffe\U0002ffff\U0003fffe\U0003ffff\U0004fffe\U0004ffff"
    "\U0005fffe\U0005ffff\U0006fffe\U0006ffff\U0007fffe\U0007ffff\U0008fffe\U0008ffff"
    "\U0009fffe\U0009ffff\U000afffe\U000affff\U000bfffe\U000bffff\U000cfffe\U000cffff"
    "\U000dfffe\U000dffff\U000efffe\U000effff\U000ffffe\U000fffff\U0010fffe\U0010ffff]"
)


def encode_headers(headers: object) -> str | None:
    """Return `headers` (a mapping of names to string values) as JSON text, None if there
    are none; raise `InvalidHeaders` if a name or value breaks the rules above."""
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise InvalidHeaders(
            f"headers must be a mapping of names to strings, not {type(headers).__name__}"
        )
    if not headers:
        return None
    if not _plain(headers):
        for name, value in headers.items():
            check_name(name)
            if not isinstance(value, str):
                raise InvalidHeaders(
                    f"header {name!r} must be a string, not {type(value).__name__}"
                )
            _check_value(name, value)
    text: str = _encode(headers)
    if len(text) > MAX_HEADERS_BYTES // 4 and len(text.encode()) > MAX_HEADERS_BYTES:
        raise InvalidHeaders(
            f"headers take {len(text.encode()):,} bytes of JSON, over the limit of"
            f" {MAX_HEADERS_BYTES:,}"
        )
    return text


def _plain(headers: Mapping[Any, Any]) -> bool:
    """Whether `headers` are all good: checked at once, the common case."""
    if not all(type(name) is str and type(value) is str for name, value in headers.items()):
        return False
    names = "\0".join(headers)
    return (
        _NAMES.fullmatch(names) is not None
        and names.count("\0") == len(headers) - 1  # no name holds the separator itself
        and RESERVED_NAMES.isdisjoint(headers)
        and not any(name.startswith("evq") for name in headers)
        and _BAD_CHARACTER.search("".join(headers.values())) is None
    )


def _check_value(name: str, value: str) -> None:
    bad = _BAD_CHARACTER.search(value)
    if bad:
        raise InvalidHeaders(
            f"header {name!r} holds a character a CloudEvents string may not ({bad[0]!a})"
        )


def check_name(name: object) -> str:
    """Return `name` if it is a valid header name; raise `InvalidHeaders` otherwise."""
    if not isinstance(name, str):
        raise InvalidHeaders(f"a header name must be a string, not {type(name).__name__}")
    if not _NAME.fullmatch(name):
        raise InvalidHeaders(
            f"bad header name {name[:40]!r}: use 1 to {MAX_NAME_LENGTH} lower-case letters"
            " a-z and digits 0-9 (CloudEvents attribute names)"
        )
    if name in RESERVED_NAMES:
        raise InvalidHeaders(
            f"bad header name {name!r}: it is a CloudEvents context attribute; choose another"
        )
    if name.startswith("evq"):
        raise InvalidHeaders(
            f"bad header name {name!r}: names starting with evq are evq's own attributes"
        )
    return name


def decode_headers(text: str | None) -> dict[str, str]:
    """Return stored headers as a dict; a stored text that is not a JSON object of strings
    (a damaged row) gives what can be read of it."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
