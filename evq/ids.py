"""Event ids: ULIDs, 26 characters that sort by creation time, then randomly."""

from __future__ import annotations

import math
import os
import threading
import time


def new_event_id() -> str:
    """Return a new ULID: 26 characters that sort by creation time, then randomly."""
    return _ids.take_one()


def new_event_ids(count: int) -> list[str]:
    """Return `count` new ULIDs at once, in order: cheaper than as many `new_event_id()`."""
    if type(count) is not int or count < 0:
        raise ValueError(f"count must be an int of 0 or more, not {count!r}")
    return _ids.take(count)


def event_id_floor(timestamp: float) -> str:
    """Return the smallest event id of the millisecond of the Unix time `timestamp`.

    An id begins with the millisecond it was made in, so ids made at or after `timestamp`
    sort at or after this one: a time range is a range of ids, which the id index finds.
    Times before 1970 or after the year 10889 give the first or last millisecond ids can hold.
    """
    ms = min(max(math.floor(timestamp * 1000), 0), (1 << 48) - 1)
    value = ms << 80
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


# Private

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [_CROCKFORD[i >> 5] + _CROCKFORD[i & 31] for i in range(1024)]
_SHIFTS = tuple(range(120, -1, -10))
_MS_SHIFTS = tuple(range(40, -1, -10))  # the millisecond's 48 bits, as 5 pairs
_RANDOM_SHIFTS = tuple(range(70, -1, -10))  # the random part's 80 bits, as 8 pairs
_RANDOM_MASK = (1 << 80) - 1


class _UlidGenerator:
    """Monotonic ULIDs: within one millisecond the random part counts up, so ids stay sorted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0
        # The first 10 characters of the ids of the last millisecond an id was taken in.
        self._stem: tuple[int, str] = (-1, "")

    def take_one(self) -> str:
        """One id: what `take(1)` returns, in half its time (every `evq.publish` makes one)."""
        ms, random = self._reserve(1)
        random &= _RANDOM_MASK
        # The millisecond fills the first 10 characters, the random part the last 16. The
        # pair is read and replaced as one: another thread may be replacing it meanwhile.
        stem_ms, stem = self._stem
        if stem_ms != ms:
            stem = "".join([_PAIRS[(ms >> shift) & 1023] for shift in _MS_SHIFTS])
            self._stem = (ms, stem)
        return stem + "".join([_PAIRS[(random >> shift) & 1023] for shift in _RANDOM_SHIFTS])

    def take(self, count: int) -> list[str]:
        ms, first = self._reserve(count)
        # Two Crockford characters per 10 bits, from a table: a ULID is 13 such pairs. Ids
        # taken together differ mostly in their last 10 bits: the 24 characters before those
        # are made once per run of up to 1024 ids that share them.
        ids: list[str] = []
        random, last = first, first + count - 1
        while random <= last:
            value = (ms << 80) | (random & _RANDOM_MASK)
            stem = "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS[:12]])
            low = value & 1023
            run = min(1024 - low, last - random + 1)
            ids.extend([stem + pair for pair in _PAIRS[low : low + run]])
            random += run
        return ids

    def _reserve(self, count: int) -> tuple[int, int]:
        """The millisecond and the first random part of `count` new ids, in order after every
        id reserved before."""
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                first = self._last_random + 1
            else:
                self._last_ms = ms
                first = int.from_bytes(os.urandom(10), "big") >> 1
            self._last_random = first + count - 1
        return ms, first

    def forget(self) -> None:
        # A forked child must not continue its parent's sequence: both would make the same ids.
        self._lock = threading.Lock()
        self._last_ms = -1


_ids = _UlidGenerator()
os.register_at_fork(after_in_child=_ids.forget)
