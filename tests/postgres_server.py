"""The PostgreSQL server the tests run against: `EVQ_TEST_POSTGRES_URL` names it.

Each test gets a schema of its own (`fresh_schema`), named in the URL it returns through
libpq's `options=-csearch_path=...`, and dropped afterwards (`drop_schema`). Without the
variable the PostgreSQL tests are skipped, saying how to run them; with it set but the server
unreachable, they fail: a CI run that meant to test PostgreSQL must not pass without it.
"""

from __future__ import annotations

import os
import re
import uuid
from urllib.parse import quote

import pytest

ENV = "EVQ_TEST_POSTGRES_URL"
SKIP_REASON = (
    f"set {ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test) to run the PostgreSQL tests"
)


def server_url() -> str:
    """The server's URL, or skip the test with how to enable it."""
    url = os.environ.get(ENV)
    if not url:
        pytest.skip(SKIP_REASON)
    return url


def with_schema(server: str, schema: str) -> str:
    """`server`'s URL with the search path set to `schema`."""
    separator = "&" if "?" in server else "?"
    return f"{server}{separator}options={quote(f'-csearch_path={schema}', safe='')}"


def fresh_schema(server: str) -> str:
    """Create an empty schema of its own on `server`; return a URL whose search path is it."""
    import psycopg

    schema = f"evq_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return with_schema(server, schema)


def schema_of(url: str) -> str:
    """The schema a `fresh_schema` URL names."""
    match = re.search(r"search_path%3D(evq_test_[0-9a-f]+)", url)
    assert match is not None, url
    return match.group(1)


def drop_schema(server: str, url: str) -> None:
    """Drop the schema a `fresh_schema` URL names, with everything in it."""
    import psycopg

    with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema_of(url)}" CASCADE')
