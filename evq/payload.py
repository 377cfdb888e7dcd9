"""Payloads: the checks a payload must pass at publish time, and its JSON text."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from typing import Any

from evq.config import DEFAULT_MAX_PAYLOAD_BYTES
from evq.errors import InvalidPayload, PayloadTooLarge

# How deep objects and arrays may nest in a payload, the payload itself counting as one.
# Deeper JSON is refused at publish: decoding it in a worker, whose stack is deeper than the
# publisher's, or printing it with indentation, would exhaust Python's recursion limit.
MAX_PAYLOAD_DEPTH = 100


def encode_payload(payload: object, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Return `payload` as JSON text, or raise `InvalidPayload` if it would not round-trip.

    Checked here, at publish time, so that a bad payload is the publisher's error and never a
    worker's: only a dict with string keys, and inside it only str, int, finite float, bool,
    None, list and dict, comes back from JSON exactly as it went in.
    """
    # One payload, as `publish` gives it: the checks of `encode_payloads`, without a batch.
    if type(payload) is dict:
        try:
            text = _encode_one(payload)
            if _decoder.decode(text) == payload and _fits(text, max_bytes):
                return text
        except (TypeError, ValueError, RecursionError):
            pass
    try:  # Finds what is wrong, or the rare payload that fails only the quick check.
        return encode_payloads([payload], max_bytes=max_bytes)[0]
    except InvalidPayload as exc:
        exc.position = None  # There is only one.
        raise


def encode_payloads(
    payloads: list[object], *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> list[str]:
    """Return each payload as JSON text, checked as `encode_payload` checks one.

    The first payload that fails raises `InvalidPayload` with its index as `position`.
    The round-trip check decodes the whole batch at once: per payload, that costs a fraction
    of a separate decode.
    """
    texts: list[str] = []
    try:
        if all(type(payload) is dict for payload in payloads):
            texts = _encode_all(payloads)
            # json quietly turns tuples into lists and int keys into strings; comparing the
            # decoded copy catches both at C speed. `_first_error` says what failed.
            exact = _decoder.decode(f"[{','.join(texts)}]") == payloads
        else:
            exact = False
    except (TypeError, ValueError, RecursionError):
        exact = False
    if not exact or not _fit(texts, max_bytes):
        error = _first_error(payloads, max_bytes)
        if error is not None:
            raise error
        # Each passes alone: one nested just short of the recursion limit fails only inside
        # the batch's list.
        texts = _encode_all(payloads)
    return texts


def encode_decoded_payloads(
    payloads: list[object], *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> list[str]:
    """Return as JSON text payloads that `json` has just decoded from text, checked as
    `encode_payload` checks one.

    Decoded JSON holds only dicts with string keys, lists, str, int, float, bool and None:
    it round-trips by construction, but for NaN and infinities (which the encoder refuses) and
    lone surrogates (which the size check finds). So the decode-and-compare of
    `encode_payloads` is left out, a third of its time. Anything else is not safe here.
    """
    try:
        if all(type(payload) is dict for payload in payloads):
            texts = _encode_all(payloads)
            if _fit(texts, max_bytes):
                return texts
    except (TypeError, ValueError, RecursionError):
        pass
    return encode_payloads(payloads, max_bytes=max_bytes)  # Raises for the first bad one.


def decode_payload(text: str | bytes) -> dict[str, Any]:
    """Return the payload stored as `text`; raise `InvalidPayload` if it is not a JSON object."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidPayload(f"stored payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidPayload("stored payload is nested too deeply to decode") from None
    if type(value) is not dict:
        raise InvalidPayload(f"stored payload is {_json_kind(value)}, not a JSON object")
    return value


def nested_too_deeply(text: str, max_depth: int = MAX_PAYLOAD_DEPTH) -> bool:
    """Whether the JSON `text` nests objects and arrays more than `max_depth` deep (the
    outermost counting as one), found without recursion, whatever the depth.

    Free for most payloads: text too short to hold that many brackets cannot be too deep.
    """
    if len(text) < 2 * (max_depth + 1) or text.count("{") + text.count("[") <= max_depth:
        return False
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    # Each pass removes the innermost level: empty objects and arrays.
    for _ in range(max_depth):
        brackets = _INNERMOST.sub("", brackets)
        if not brackets:
            return False
    return True


def payload_to_show(text: str | bytes) -> Any:
    """Return a stored payload for a person or a program to read: the JSON object, or, when it
    is not a JSON object nested at most `MAX_PAYLOAD_DEPTH` deep (stored by an older evq or by
    hand), the text as it is stored, which printing it can never fail on."""
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    if nested_too_deeply(raw):
        return raw
    try:
        return decode_payload(raw)
    except InvalidPayload:
        return raw


# Private

_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\{\}|\[\]")
_SCALARS = (str, int, bool, type(None))
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_decoder = json.JSONDecoder()


def _c_encoders() -> tuple[Callable[[object], str], Callable[[list[object]], list[str]]] | None:
    """`_encoder.encode` for one payload and for many, without its Python set-up on every
    call, where CPython has it.

    `JSONEncoder.iterencode` builds this same C encoder on every call: building it once, and
    mapping it over the payloads, saves about 0.7 us a payload. With no circular-reference
    table a payload that contains itself raises RecursionError instead, which
    `encode_payloads` reports as such.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        c_encode = make(
            None,
            _encoder.default,
            json.encoder.encode_basestring,
            None,
            ":",
            ",",
            False,
            False,
            False,
        )

        # The C encoder returns each text in chunks.
        def encode_one(payload: object) -> str:
            return "".join(c_encode(payload, 0))

        def encode_all(payloads: list[object]) -> list[str]:
            return list(map("".join, map(c_encode, payloads, itertools.repeat(0))))

        probe: list[object] = [{"a": [1, 2.5, "\u00e9", None, True, {"b": ""}]}, {}]
        expected = [_encoder.encode(payload) for payload in probe]
        if encode_all(probe) != expected or list(map(encode_one, probe)) != expected:
            return None
    except (TypeError, ValueError):  # A CPython whose C encoder takes other arguments.
        return None
    return encode_one, encode_all


def _encode_each(payloads: list[object]) -> list[str]:
    return [_encoder.encode(payload) for payload in payloads]


_encode_one: Callable[[object], str]
_encode_all: Callable[[list[object]], list[str]]
_encode_one, _encode_all = _c_encoders() or (_encoder.encode, _encode_each)
# The shortest JSON text nested more than MAX_PAYLOAD_DEPTH deep: that many brackets, closed.
_SHORTEST_TOO_DEEP = 2 * (MAX_PAYLOAD_DEPTH + 1)


def _fit(texts: list[str], max_bytes: int) -> bool:
    """Whether every text is valid Unicode of at most `max_bytes` bytes in UTF-8, nested at
    most `MAX_PAYLOAD_DEPTH` deep."""
    try:
        "".join(texts).encode()
    except UnicodeEncodeError:
        return False
    longest = max(map(len, texts), default=0)
    if longest >= _SHORTEST_TOO_DEEP and any(map(nested_too_deeply, texts)):
        return False
    # UTF-8 takes at most 4 bytes per character: most batches need no per-text count.
    if longest * 4 <= max_bytes:
        return True
    return all(len(text.encode()) <= max_bytes for text in texts)


def _fits(text: str, max_bytes: int) -> bool:
    """`_fit` for one text."""
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        return False
    return size <= max_bytes and not nested_too_deeply(text)


def _first_error(payloads: list[object], max_bytes: int) -> InvalidPayload | None:
    """Return the error of the first payload that fails the checks alone, if one does."""
    for index, payload in enumerate(payloads):
        error = _error(payload, max_bytes)
        if error is not None:
            error.position = index
            return error
    return None


def _error(payload: object, max_bytes: int) -> InvalidPayload | None:
    if type(payload) is not dict:
        return InvalidPayload(f"payload must be a JSON object (a dict), not {_json_kind(payload)}")
    try:
        text = _encoder.encode(payload)
        exact = _decoder.decode(text) == payload
    except (TypeError, ValueError, RecursionError):
        exact = False
    if not exact:
        try:
            _check_value(payload, "payload")
        except InvalidPayload as exc:
            return exc
        except RecursionError:
            return InvalidPayload("payload is nested too deeply, or contains itself")
        return InvalidPayload("payload does not round-trip through JSON exactly")
    if nested_too_deeply(text):
        return InvalidPayload(
            f"payload nests objects and arrays more than {MAX_PAYLOAD_DEPTH} deep;"
            f" the limit is {MAX_PAYLOAD_DEPTH}"
        )
    try:
        size = len(text.encode())
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        return InvalidPayload(
            f"payload holds text that is not valid Unicode ({exc.reason}: {bad!a})"
        )
    if size > max_bytes:
        return PayloadTooLarge(
            f"payload is {size:,} bytes of JSON; the limit is {max_bytes:,} (EVQ_MAX_PAYLOAD)"
        )
    return None


def _check_value(value: object, path: str) -> None:
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise InvalidPayload(f"{path} is {value}, which JSON cannot represent")
        return
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise InvalidPayload(
                    f"{path} has the key {key!r} ({type(key).__name__}); JSON keys are strings"
                )
            _check_value(item, f"{path}[{key!r}]")
        return
    if kind is list:
        for index, item in enumerate(value):  # type: ignore[arg-type]
            _check_value(item, f"{path}[{index}]")
        return
    raise InvalidPayload(
        f"{path} is a {kind.__name__}, which does not round-trip through JSON;"
        " convert it to a string, number, bool, None, list or dict"
    )


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"
