"""Dead letters on Redis alone: a step the server refuses or a key of the wrong type fails in
one line naming the step, and a dead letter whose hashes were damaged or lost is still listed,
with what is left of it and nothing made up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from contract.steps import finish, publish, take
from redis_server import redis_url_fixture, scripts_refused  # noqa: F401

from evq.errors import StorageError
from evq.storage import open_queue
from evq.storage.contract import DeadLetter, Queue
from evq.storage.redis.connection import parse_url


def client_of(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.split("?", 1)[0], decode_responses=True)


def one_dead_letter(queue: Queue) -> DeadLetter:
    at = time.time() - 600
    publish(queue, "order.paid", at=at, payload={"order": 9})
    finish(queue, take(queue, now=at), "dead", at=at + 1)
    (letter,) = queue.dead_letters()
    return letter


@pytest.fixture
def no_scripts(tmp_path: Path) -> Iterator[tuple[Queue, str, str]]:
    """A queue holding one dead letter, on a server that refuses scripts (`scripts_refused`);
    the URL's location, and the letter's id."""
    with scripts_refused(tmp_path, lambda owner: one_dead_letter(owner).id) as refused:
        yield refused


def test_a_redrive_or_purge_the_server_refuses_fails_in_one_line_naming_it(
    no_scripts: tuple[Queue, str, str],
) -> None:
    queue, where, letter_id = no_scripts
    for doing, step in [
        ("redrive dead letters", queue.redrive),
        ("purge dead letters", queue.purge),
    ]:
        with pytest.raises(StorageError) as caught:
            step([letter_id])
        assert str(caught.value) == (
            f"Redis at {where} failed to {doing}:"
            " this user has no permissions to run the 'evalsha' command"
        )
    # Reading is allowed: the letter is still there.
    assert [letter.id for letter in queue.dead_letters()] == [letter_id]


@pytest.mark.parametrize("damaged", ["dead", "delivery"])
def test_a_list_that_meets_a_key_of_the_wrong_type_fails_in_one_line_naming_the_read(
    redis_url: str, damaged: str
) -> None:
    queue = open_queue(redis_url)
    letter = one_dead_letter(queue)
    key = parse_url(redis_url).base + ("dead" if damaged == "dead" else "d:" + letter.id)
    client = client_of(redis_url)
    client.delete(key)
    client.set(key, "not a sorted set nor a hash")
    client.close()

    with pytest.raises(StorageError) as caught:
        queue.dead_letters(ids=[] if damaged == "dead" else [letter.id])

    message = str(caught.value)
    where = parse_url(redis_url).location
    assert message.startswith(f"Redis at {where} failed to read dead letters: ")
    assert message.endswith("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert "\n" not in message
    queue.close()


def test_a_dead_letter_whose_event_was_lost_is_listed_without_it(redis_url: str) -> None:
    # The event's hash evicted (or deleted by hand): the letter stays, its event's fields empty.
    queue = open_queue(redis_url)
    letter = one_dead_letter(queue)
    client = client_of(redis_url)
    client.delete(parse_url(redis_url).base + "e:" + letter.event_id)
    client.close()

    (listed,) = queue.dead_letters()
    assert listed == letter._replace(name="", payload="", published_at=0.0, headers=None)
    queue.close()


def test_a_dead_letter_left_with_only_its_state_is_listed_with_empty_fields(
    redis_url: str,
) -> None:
    # Every field but the state deleted by hand: listed, with nothing made up, and the rest of
    # the list still readable.
    queue = open_queue(redis_url)
    letter = one_dead_letter(queue)
    key = parse_url(redis_url).base + "d:" + letter.id
    client = client_of(redis_url)
    client.delete(key)
    client.hset(key, "state", "dead")
    client.close()

    assert queue.dead_letters() == [
        DeadLetter(
            id=letter.id,
            receiver="",
            attempts=0,
            failures=0,
            dead_at=0.0,
            error=None,
            traceback=None,
            created_at=0.0,
            event_id="",
            name="",
            payload="",
            published_at=0.0,
            headers=None,
        )
    ]
    queue.close()
