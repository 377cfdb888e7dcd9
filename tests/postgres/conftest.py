"""`pg`: a schema of its own on the test server for each test, made the queue of this process
and of every `evq` subprocess the test starts (through EVQ_URL), dropped afterwards."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres_server import drop_schema, fresh_schema, schema_of, server_url

import evq.config
import evq.publisher
from evq.storage import open_queue


@dataclasses.dataclass
class Schema:
    """A fresh schema: its URL (search path set), its server, and a place for files."""

    url: str
    server: str
    tmp_path: Path

    @property
    def name(self) -> str:
        return schema_of(self.url)

    @property
    def log(self) -> Path:
        """The recorder apps' log of calls."""
        return self.tmp_path / "calls.log"

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on a connection of its own, in the schema; return its rows."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def states(self) -> dict[str, int]:
        """Count the deliveries per stored state."""
        return dict(self.rows("SELECT state, count(*) FROM evq_delivery GROUP BY state"))


@pytest.fixture
def empty_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Schema]:
    """A fresh schema without evq's tables, as the queue of this test."""
    server = server_url()
    url = fresh_schema(server)
    monkeypatch.setenv("EVQ_URL", url)
    monkeypatch.setenv("EVQ_TEST_LOG", str(tmp_path / "calls.log"))
    evq.config.reset()
    evq.publisher._queues.clear()
    try:
        yield Schema(url=url, server=server, tmp_path=tmp_path)
    finally:
        for handle in evq.publisher._queues.values():
            handle.close()
        evq.publisher._queues.clear()
        evq.config.reset()
        drop_schema(server, url)


@pytest.fixture
def pg(empty_schema: Schema) -> Schema:
    """A fresh schema with evq's tables (as `evq migrate` makes them), as the queue."""
    queue = open_queue(empty_schema.url)
    queue.check()
    queue.close()
    return empty_schema
