"""Receivers for the dashboard tests: `bill` records every order; `send_invoice` fails (no
retries: a dead letter at once) until the file named by EVQ_TEST_FIXED_FILE exists."""

from __future__ import annotations

import os
from pathlib import Path

import evq
from tests.apps.log import record


@evq.subscriber("order.*")
def bill(event: evq.Event, /) -> None:
    record(event, "bill")


@evq.subscriber("invoice.*", retries=0)
def send_invoice(event: evq.Event, /) -> None:
    if not Path(os.environ["EVQ_TEST_FIXED_FILE"]).exists():
        raise ConnectionError("the mail server refused the connection")
    record(event, "send_invoice")


@evq.subscriber("note.*")
def keep_note(event: evq.Event, /) -> None:
    record(event, "keep_note")
