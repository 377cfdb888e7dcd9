"""The event envelope, its ids, and the payload checks made at publish time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import itertools
import json
import re
import time

import pytest

from evq.errors import InvalidPayload, PayloadTooLarge
from evq.event import Event
from evq.ids import event_id_floor, new_event_id, new_event_ids
from evq.payload import decode_payload, encode_decoded_payloads, encode_payload, encode_payloads

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_value(ulid: str) -> int:
    value = 0
    for char in ulid:
        value = value * 32 + CROCKFORD.index(char)
    return value


def test_event_ids_are_unique_and_sort_by_creation() -> None:
    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)


def test_an_id_is_its_millisecond_then_a_counter_shared_with_ids_taken_together() -> None:
    before = time.time_ns() // 1_000_000
    first = new_event_id()
    batch = new_event_ids(2)
    second = new_event_id()
    after = time.time_ns() // 1_000_000
    values = [ulid_value(i) for i in (first, *batch, second)]
    assert all(before <= value >> 80 <= after for value in values)
    if len({value >> 80 for value in values}) == 1:  # one millisecond: the random part counts
        assert [b - a for a, b in itertools.pairwise(values)] == [1, 1, 1]
    assert first < batch[0] < batch[1] < second


@pytest.mark.parametrize(
    ("ms", "counter"),
    [(0, 0), (1, 1), ((1 << 48) - 1, (1 << 80) - 1), (1_733_000_000_000, 123_456_789_012_345)],
)
def test_one_id_is_made_as_a_batch_of_one_would_be(
    monkeypatch: pytest.MonkeyPatch, ms: int, counter: int
) -> None:
    from evq import ids

    one, batch = ids._UlidGenerator(), ids._UlidGenerator()
    for generator in (one, batch):
        monkeypatch.setattr(generator, "_reserve", lambda count: (ms, counter))
    made = one.take_one()
    assert made == batch.take(1)[0]
    assert ulid_value(made) == (ms << 80) | counter


def test_ids_made_by_many_threads_at_once_are_unique_and_well_formed() -> None:
    import threading

    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        for _ in range(5000):
            out.append(new_event_id())

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for out in made for i in out]
    assert len(set(ids)) == len(ids) == 20_000
    # A thread's ids sort in the order it made them, though the others took ids in between.
    assert all(out == sorted(out) for out in made)
    assert all(re.fullmatch(f"[{CROCKFORD}]{{26}}", i) for i in ids)


def test_ids_taken_together_count_up_from_one_random_start() -> None:
    before = new_event_id()
    # Over 2,048 ids cross at least one run of 1,024 that shares its first 24 characters.
    ids = new_event_ids(3000)
    after = new_event_id()
    values = [ulid_value(i) for i in ids]
    assert all(len(i) == 26 for i in ids)
    assert [b - a for a, b in itertools.pairwise(values)] == [1] * 2999
    assert before < ids[0] and ids[-1] < after
    assert new_event_ids(0) == []
    for bad in (-1, 2.0):
        with pytest.raises(ValueError, match="count must be an int of 0 or more"):
            new_event_ids(bad)  # type: ignore[arg-type]
    assert new_event_id() > after  # a refused count took nothing


def test_event_id_floor_is_the_smallest_id_of_its_millisecond() -> None:
    before = time.time()
    made = new_event_id()
    after = time.time()

    assert event_id_floor(before - 0.001) < made < event_id_floor(after + 0.001)
    assert event_id_floor(before) == event_id_floor(before)[:10] + "0" * 16
    assert event_id_floor(1.0009) == event_id_floor(1.0) < event_id_floor(1.002)
    assert event_id_floor(-5) == "0" * 26
    assert event_id_floor(1e300) == "7" + "Z" * 9 + "0" * 16


def test_event_is_frozen_and_keyword_only() -> None:
    event = Event(id="x", name="a.b", payload={}, published_at=dt.datetime.now(dt.UTC))
    assert event.attempt == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.name = "c"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Event("x", "a.b", {}, dt.datetime.now(dt.UTC))  # type: ignore[misc]


def test_a_json_object_round_trips() -> None:
    payload = {
        "user_id": 42,
        "tags": ["a", "b"],
        "ok": True,
        "none": None,
        "f": 1.5,
        "nested": {"x": [1, {"y": "z"}]},
        "unicode": "héllo",
    }
    assert decode_payload(encode_payload(payload)) == payload


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "not a list"),
        ("text", "not a string"),
        (42, "not a number"),
        (None, "not null"),
        ({"when": dt.datetime(2026, 1, 1)}, "datetime"),
        ({"tags": {"a", "b"}}, "set"),
        ({"x": float("nan")}, "nan"),
        ({"x": float("inf")}, "inf"),
        ({1: "a"}, "key 1"),
        ({"t": (1, 2)}, "tuple"),
        ({"d": decimal.Decimal("1.5")}, "Decimal"),
        ({"o": object()}, "object"),
    ],
)
def test_what_would_not_round_trip_is_rejected_at_publish(payload: object, message: str) -> None:
    with pytest.raises(InvalidPayload, match=re.escape(message)):
        encode_payload(payload)


def test_payload_size_limit_is_enforced() -> None:
    payload = {"blob": "x" * 200}
    assert encode_payload(payload, max_bytes=1000)
    with pytest.raises(PayloadTooLarge, match="limit is 100"):
        encode_payload(payload, max_bytes=100)


def test_default_limit_is_one_mebibyte() -> None:
    encode_payload({"blob": "x" * (1024 * 1024 - 20)})
    with pytest.raises(PayloadTooLarge):
        encode_payload({"blob": "x" * (1024 * 1024)})


def test_stored_garbage_is_reported_not_guessed() -> None:
    for garbage in (b"\x80\x04\x95", "[1, 2]", '{"a": ', b"\xff\xfe"):
        with pytest.raises(InvalidPayload):
            decode_payload(garbage)
    assert json.loads(encode_payload({"a": 1})) == {"a": 1}


def test_text_that_is_not_valid_unicode_is_rejected_at_publish() -> None:
    with pytest.raises(InvalidPayload, match="not valid Unicode"):
        encode_payload({"name": "bad \udcff surrogate"})


def test_payloads_checked_together_name_the_first_bad_one_by_position() -> None:
    good = {"a": [1, 2.5, "é", None, True, {"b": ""}]}
    assert encode_payloads([good, {}]) == [
        json.dumps(payload, ensure_ascii=False, separators=(",", ":")) for payload in (good, {})
    ]
    for bad, message in (({"t": (1,)}, "tuple"), ([1], "not a list"), ({"x": "y" * 99}, "limit")):
        with pytest.raises(InvalidPayload, match=re.escape(message)) as caught:
            encode_payloads([good, good, bad, {"t": (2,)}], max_bytes=50)
        assert caught.value.position == 2
    with pytest.raises(InvalidPayload, match="not valid Unicode") as caught:
        encode_payloads([good, {"s": "\udcff"}])
    assert caught.value.position == 1
    with pytest.raises(InvalidPayload) as caught:
        encode_payload({"t": (1,)})
    assert caught.value.position is None  # one payload has no position among others


@pytest.mark.parametrize(
    "text",
    [
        '"quote\\" back\\\\slash"',
        '"tab\\t nl\\n \\u0001 \\u2028 \\ud83d\\ude00"',
        "1e+300",
        "-0.0",
        "12345678901234567890123",
    ],
)
def test_payload_text_is_what_json_dumps_makes(text: str) -> None:
    payload = {"value": json.loads(text), "list": [json.loads(text)], "": {}}
    expected = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert encode_payload(payload) == expected
    assert encode_payloads([payload, payload]) == [expected, expected]


def test_a_payload_that_contains_itself_or_nests_too_deeply_is_bad_input() -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(100_000):
        inner["a"] = inner = {}
    for payload in (loop, deep):
        with pytest.raises(InvalidPayload, match="nested too deeply, or contains itself"):
            encode_payload(payload)


def test_decoded_payloads_are_checked_for_what_json_text_can_still_hold() -> None:
    lines = [
        '{"a": [1, 2.5, "\\u00e9"]}',
        '{"n": NaN}',
        '{"s": "\\udcff"}',
        '{"x": "' + "y" * 99 + '"}',
    ]
    decoded = [json.loads(line) for line in lines]
    assert encode_decoded_payloads(decoded[:1]) == encode_payloads(decoded[:1])
    for index, message in ((1, "is nan"), (2, "not valid Unicode"), (3, "the limit is 50")):
        with pytest.raises(InvalidPayload, match=re.escape(message)) as caught:
            encode_decoded_payloads([decoded[0], decoded[index], decoded[1]], max_bytes=50)
        assert caught.value.position == 1
    with pytest.raises(InvalidPayload, match="not a list") as caught:
        encode_decoded_payloads([{}, [1]])
    assert caught.value.position == 1
