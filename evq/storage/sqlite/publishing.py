"""Publishing on SQLite: insert events, inside a transaction the caller holds (evq's own, or an
application's for the outbox). Kept apart from `delivering` so that `evq publish` imports only
what a publish runs."""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Sequence

from evq.storage.publishing import NewEvent


def _insert(columns: Sequence[str]) -> str:
    return f"INSERT INTO evq_event ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


# The columns in `NewEvent`'s order, so that an event binds as the plain tuple it is.
_INSERT_EVENT = _insert(NewEvent._fields)
# Most events have no key and no headers: bound as NULL, those two would cost a third of an
# insert's time (sqlite3 looks up an adapter for every None), so such events leave them out.
_PLAIN_FIELDS = NewEvent._fields[: NewEvent._fields.index("key")]
_INSERT_PLAIN_EVENT = _insert(_PLAIN_FIELDS)
_PLAIN_OF = operator.itemgetter(*range(len(_PLAIN_FIELDS)))
_ID_OF = operator.itemgetter(NewEvent._fields.index("id"))
_KEY_OF = operator.itemgetter(NewEvent._fields.index("key"))
_HEADERS_OF = operator.itemgetter(NewEvent._fields.index("headers"))


def insert_events(conn: sqlite3.Connection, events: Sequence[NewEvent]) -> list[str]:
    """Insert `events` through `conn` inside its current transaction; return their ids.

    An event whose idempotency key is already stored is not inserted: its place in the result
    holds the id of the event stored first with that key.
    """
    if not any(map(_KEY_OF, events)):  # No key: nothing can be a duplicate.
        if any(map(_HEADERS_OF, events)):
            # sqlite3 binds a plain tuple faster than a tuple subclass, even counting the copy.
            conn.executemany(_INSERT_EVENT, map(tuple, events))
        else:
            conn.executemany(_INSERT_PLAIN_EVENT, map(_PLAIN_OF, events))
        return list(map(_ID_OF, events))
    ids = []
    for event in events:
        cursor = conn.execute(
            # The conflict target names the partial index on keys (NULL keys are not in it).
            _INSERT_EVENT + " ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING",
            tuple(event),
        )
        if cursor.rowcount == 1:
            ids.append(event.id)
        else:
            row = conn.execute("SELECT id FROM evq_event WHERE key = ?", (event.key,)).fetchone()
            ids.append(row[0])
    return ids
