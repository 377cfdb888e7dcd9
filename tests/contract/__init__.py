"""The contract suite: the promises of `evq.storage.contract.Queue`, checked on every backend.

Each test gets a fresh queue of each available backend through the `queue` fixture
(`conftest.py`), and talks to it only through the `Queue` protocol, `evq.storage.rules` and
`evq.publisher.prepare`: no SQL, no driver. A behaviour that only one backend has (SQLite's
schema upgrades, its query plans, the outbox on a `sqlite3` connection) is tested next to that
backend instead (`tests/sqlite/`).
"""
