"""The publish path's two fast paths through CPython's json module, and their fallbacks.

`evq.payload` maps the C encoder that `JSONEncoder.iterencode` builds over a batch, and
`evq publish --jsonl` reads lines with the C scanner that `JSONDecoder.raw_decode` calls. Neither
is a documented name, so each is probed at import and falls back to the public API. These tests
prove, on the Python running them (CI runs this file on every supported version), that the fast
path is there and gives exactly what the public API gives, and that the fallbacks work.
"""

from __future__ import annotations

import json
import platform
import random
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

import evq
from evq import payload
from evq.cli import bulk, cli
from evq.errors import InvalidPayload

CPYTHON = platform.python_implementation() == "CPython"


def _value(rng: random.Random, depth: int) -> object:
    kinds = ["str", "int", "float", "bool", "none"] + (["list", "dict"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(
            rng.choice('aé\u20ac\U0001f600"\\\n\t/<>\x00') for _ in range(rng.randint(0, 8))
        )
    if kind == "int":
        return rng.choice([0, -1, 2**63, -(2**70), rng.randint(-1000, 1000)])
    if kind == "float":
        return rng.choice([0.0, -0.5, 1e300, 1.5e-300, rng.uniform(-1e6, 1e6)])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return _payload(rng, depth + 1)


def _payload(rng: random.Random, depth: int = 0) -> dict[str, object]:
    return {f"k{i}\u00e9": _value(rng, depth) for i in range(rng.randint(0, 5))}


PAYLOADS = [_payload(random.Random(seed)) for seed in range(500)]


@pytest.mark.skipif(not CPYTHON, reason="the fast paths are CPython's")
def test_the_c_encoder_is_found_on_this_python() -> None:
    assert payload._encode_all is not payload._encode_each
    assert payload._encode_one != payload._encoder.encode


@pytest.mark.skipif(not CPYTHON, reason="the fast paths are CPython's")
def test_the_c_scanner_is_found_on_this_python() -> None:
    assert bulk._scan != json.JSONDecoder().raw_decode
    assert getattr(bulk._scan, "__name__", "") != "raw_decode"


def test_the_fast_encoder_writes_exactly_what_the_public_encoder_writes() -> None:
    assert payload._encode_all(PAYLOADS) == payload._encode_each(PAYLOADS)
    assert list(map(payload._encode_one, PAYLOADS)) == payload._encode_each(PAYLOADS)
    assert payload._encode_each(PAYLOADS) == [
        json.dumps(p, ensure_ascii=False, separators=(",", ":")) for p in PAYLOADS
    ]


def test_the_fast_scanner_reads_exactly_what_raw_decode_reads() -> None:
    decoder = json.JSONDecoder()
    lines = [json.dumps({"name": "a.b", "payload": p}) for p in PAYLOADS]
    lines += ['{"a": 1} trailing', '{"a": 1}\n', "[1, 2]", '"text"', "12"]
    for line in lines:
        assert bulk._scan(line, 0) == decoder.raw_decode(line, 0), line


@pytest.mark.parametrize("line", ["", "{", '{"a": }', "nope", "  {}"])
def test_the_fast_scanner_and_raw_decode_both_refuse_what_is_not_json(line: str) -> None:
    with pytest.raises((StopIteration, ValueError)):
        bulk._scan(line, 0)
    with pytest.raises(ValueError):
        json.JSONDecoder().raw_decode(line, 0)


def _stored_payloads(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT payload FROM evq_event ORDER BY seq")]


def test_publish_many_works_on_the_public_encoder(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(payload, "_encode_all", payload._encode_each)
    evq.publish_many([{"name": "a.b", "payload": p} for p in PAYLOADS[:50]])
    assert _stored_payloads(queue_path) == payload._encode_each(PAYLOADS[:50])
    with pytest.raises(InvalidPayload):
        evq.publish_many([{"name": "a.b", "payload": {"t": (1, 2)}}])


def test_publish_works_on_the_public_encoder(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(payload, "_encode_one", payload._encoder.encode)
    for p in PAYLOADS[:50]:
        evq.publish("a.b", payload=p)
    assert _stored_payloads(queue_path) == payload._encode_each(PAYLOADS[:50])
    with pytest.raises(InvalidPayload):
        evq.publish("a.b", payload={"t": (1, 2)})


def test_publish_jsonl_works_on_the_public_scanner(
    queue_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "_scan", json.JSONDecoder().raw_decode)
    lines = "".join(json.dumps({"name": "a.b", "payload": p}) + "\n" for p in PAYLOADS[:50])
    result = CliRunner().invoke(cli, ["publish", "--jsonl", "-"], input=lines + "{oops\n")
    assert result.exit_code == 2
    assert "line 51: not valid JSON" in result.output
    assert not queue_path.exists() or _stored_payloads(queue_path) == []
    result = CliRunner().invoke(cli, ["publish", "--jsonl", "-"], input=lines)
    assert result.exit_code == 0, result.output
    assert _stored_payloads(queue_path) == payload._encode_each(PAYLOADS[:50])
