"""Idempotency keys are exact through every way to publish (`evq.publish`, `evq.publish_many`,
`evq publish --key`, `evq publish --jsonl`): keys differing in case, Unicode normalisation
form or surrounding space are different keys. (Each backend's own promise: the contract suite,
`tests/contract/test_publishing.py`.)"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_evq
from workers import rows

import evq

# Pairwise different keys: case, NFC and NFD forms of é, a trailing and a leading space.
KEYS = ["Order-42", "order-42", "ORDER-42", "caf\u00e9", "cafe\u0301", "order-42 ", " order-42"]


def stored_keys(queue_path: Path) -> list[str]:
    return sorted(key for (key,) in rows(queue_path, "SELECT key FROM evq_event"))


def test_publish_and_publish_many_compare_keys_exactly(queue_path: Path) -> None:
    ids = [evq.publish("order.paid", payload={"n": n}, key=key) for n, key in enumerate(KEYS)]
    assert len(set(ids)) == len(KEYS)

    again = evq.publish_many([{"name": "order.paid", "payload": {}, "key": key} for key in KEYS])

    assert again == ids  # each key found its own event, and only its own
    assert stored_keys(queue_path) == sorted(KEYS)


def test_the_cli_compares_keys_exactly(queue_path: Path) -> None:
    first = run_evq("publish", "order.paid", "--key", "Order-42")
    second = run_evq("publish", "order.paid", "--key", "order-42")
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    assert first.stdout.strip() != second.stdout.strip()

    lines = "".join(
        json.dumps({"name": "order.paid", "payload": {}, "key": key}) + "\n" for key in KEYS
    )
    bulk = run_evq("publish", "--jsonl", "-", input=lines)

    assert bulk.returncode == 0, bulk.stderr
    ids = bulk.stdout.split()
    assert ids[:2] == [first.stdout.strip(), second.stdout.strip()]
    assert len(set(ids)) == len(KEYS)
    assert stored_keys(queue_path) == sorted(KEYS)
