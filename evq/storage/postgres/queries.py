"""The fixed SQL of the PostgreSQL backend, read from `queries.sql` by name (as Procrastinate
keeps its `queries.sql`); only dynamic filters are assembled in Python."""

from __future__ import annotations

import os
import re

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(filename: str) -> dict[str, str]:
    """Return the statements of a `.sql` file beside this module, by their `-- name:`."""
    with open(os.path.join(os.path.dirname(__file__), filename), encoding="utf-8") as file:
        text = file.read()
    parts = _NAME.split(text)
    return {name: _statement(body) for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _statement(body: str) -> str:
    lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(lines).strip().rstrip(";")


QUERIES = load("queries.sql")
