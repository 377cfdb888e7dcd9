"""Bulk publish: `evq publish --jsonl FILE|-` and `evq.publish_many`, on every backend."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import assert_nothing_stored, run_evq, stored_events
from terminal import run_in_terminal


def stored(url: str) -> list[tuple[str, str]]:
    """The id and name of every stored event, oldest first."""
    return [(event.id, event.name) for event in stored_events(url, deliveries=False)]


def lines(count: int, *, bad_at: int | None = None, bad: str = "{oops") -> str:
    rows = []
    for number in range(1, count + 1):
        if number == bad_at:
            rows.append(bad)
        else:
            rows.append(json.dumps({"name": "order.created", "payload": {"n": number}}))
    return "\n".join(rows) + "\n"


def test_every_line_is_published_in_order_and_its_id_printed(
    queue_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(lines(2500))
    result = run_evq("publish", "--jsonl", str(source))
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 2500
    assert [row[0] for row in stored(queue_url)] == ids
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_lines_from_stdin_with_keys_and_json_output(queue_url: str) -> None:
    text = "\n".join(
        json.dumps(item)
        for item in (
            {"name": "a.b", "payload": {"x": 1}, "key": "k1"},
            {"name": "a.c"},
            {"name": "a.b", "payload": {"x": 2}, "key": "k1"},
        )
    )
    result = run_evq("publish", "--jsonl", "-", "--json", input=text + "\n\n")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["published"] == 3
    assert document["ids"][0] == document["ids"][2]  # the key was seen: the first id
    assert len(stored(queue_url)) == 2


def test_a_bad_line_in_the_middle_stores_nothing_and_names_its_line(
    queue_url: str, tmp_path: Path
) -> None:
    for bad, message in (
        ("{oops", "not valid JSON"),
        ('{"name": "bad name", "payload": {}}', "invalid event name"),
        ('{"name": "a.b", "payload": [1]}', "not a list"),
        ('{"payload": {}}', 'missing "name"'),
        ('{"name": "a.b", "colour": "red"}', "unknown field"),
        ("[1, 2]", "expected an object"),
        ('{"name": "a.b", "payload": {"x": ' + "9" * 5000 + "}}", "cannot be read: Exceeds"),
        ('{"name": "a.b", "payload": ' + "[" * 100_000 + "]" * 100_000 + "}", "too deeply"),
    ):
        source = tmp_path / "events.jsonl"
        source.write_text(lines(3000, bad_at=1700, bad=bad))
        result = run_evq("publish", "--jsonl", str(source))
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("Error: line 1700: ")
        assert message in line
        assert line.endswith("nothing was published")
        assert result.stdout == ""
        assert stored(queue_url) == []


def test_blank_lines_crlf_and_a_last_line_without_newline(queue_url: str, tmp_path: Path) -> None:
    rows = [json.dumps({"name": "a.b", "payload": {"n": n}}) for n in range(2200)]
    text = "\r\n".join(rows[:1000]) + "\r\n\n  \n" + "\n".join(rows[1000:])  # no final newline
    source = tmp_path / "events.jsonl"
    source.write_bytes(text.encode())
    result = run_evq("publish", "--jsonl", str(source))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 2200
    payloads = [event.payload for event in stored_events(queue_url, deliveries=False)]
    assert payloads == [json.dumps({"n": n}, separators=(",", ":")) for n in range(2200)]


def test_a_bad_line_after_blank_lines_is_named_by_its_line_number(
    queue_url: str, tmp_path: Path
) -> None:
    good = json.dumps({"name": "a.b"})
    for bad, message in (
        ('{"name": "a.b", "delay": "soon"}', "delay must be a number of seconds, not 'soon'"),
        (
            '{"name": "a.b", "payload": {"x": NaN}}',
            "payload['x'] is nan, which JSON cannot represent",
        ),
        (good + " trailing", "not valid JSON: Extra data at column 17"),
    ):
        # Lines 1-1200 good, 1201-1210 blank, 1211-2510 good, 2511 bad, then a later bad one.
        text = "\n".join([good] * 1200 + [""] * 10 + [good] * 1300 + [bad, "{oops"]) + "\n"
        source = tmp_path / "events.jsonl"
        source.write_text(text)
        result = run_evq("publish", "--jsonl", str(source))
        assert result.returncode == 2, result.stderr
        assert result.stderr == f"Error: line 2511: {message}; nothing was published\n"
        assert result.stdout == ""
        assert stored(queue_url) == []


def test_a_bad_line_megabytes_in_stores_nothing_of_what_came_before(
    queue_url: str, tmp_path: Path
) -> None:
    # Line 90,000 is four 1 MiB chunks in: a backend that stores batches as they are read
    # (PostgreSQL's COPY) has taken the lines before it already, and must roll them back,
    # those stored by other statements too (a batch with a key is an INSERT between COPYs).
    keyed = json.dumps({"name": "order.created", "key": "k1"})
    for bad, message in (("{oops", "not valid JSON"), ('{"name": "a b"}', "invalid event name")):
        source = tmp_path / "events.jsonl"
        text = lines(100_000, bad_at=90_000, bad=bad).split("\n")
        text[2500] = keyed
        source.write_text("\n".join(text))
        result = run_evq("publish", "--jsonl", str(source))
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith("Error: line 90000: ")
        assert message in line
        assert line.endswith("; nothing was published")
        assert result.stdout == ""
        assert stored(queue_url) == []


def test_keys_anywhere_in_a_long_input_are_each_stored_once(queue_url: str) -> None:
    first = run_evq("publish", "a.b", "--key", "k0")
    assert first.returncode == 0, first.stderr
    rows: list[dict[str, object]] = [{"name": "a.b", "payload": {"n": n}} for n in range(9000)]
    # Keys in a few batches of a thousand, between runs without: one key stored before this
    # input, one given twice in it, batches apart.
    for n, key in ((2500, "k1"), (2501, "k0"), (7700, "k1"), (7701, "k2")):
        rows[n]["key"] = key
    text = "\n".join(json.dumps(row) for row in rows) + "\n"

    result = run_evq("publish", "--jsonl", "-", input=text)

    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 9000
    assert ids[2501] == first.stdout.strip()
    assert ids[7700] == ids[2500]
    assert len(set(ids)) == 9000 - 1
    new_ids = [i for n, i in enumerate(ids) if n not in (2501, 7700)]
    assert [row[0] for row in stored(queue_url)] == [first.stdout.strip(), *new_ids]


def test_a_missing_jsonl_file_is_bad_input(queue_url: str, tmp_path: Path) -> None:
    result = run_evq("publish", "--jsonl", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"Error: --jsonl {tmp_path / 'missing.jsonl'}: no such file"
    assert_nothing_stored(queue_url)


def test_jsonl_with_a_name_is_a_usage_error(queue_url: str) -> None:
    result = run_evq("publish", "a.b", "--jsonl", "-", input="")
    assert result.returncode == 2
    assert "--jsonl reads names and payloads from its input" in result.stderr


def test_a_long_input_shows_progress_on_a_terminal(queue_url: str, tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(lines(30_000))
    result = run_in_terminal("publish", "--jsonl", str(source), "--json")
    assert result.returncode == 0, result.stdout
    assert "publishing" in result.stdout  # the bar, drawn on the terminal's stderr
    assert len(stored(queue_url)) == 30_000
