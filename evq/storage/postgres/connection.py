"""The PostgreSQL connection: the URL, one connection per process, errors in one line.

A process (a publisher, or one worker process) keeps one connection for its work, shared by
its threads behind a lock and opened on first use; a forked child opens its own, and a
connection the server dropped is replaced at the next use. Every message evq writes names the
server as `host:port/database`, never with its password.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.conninfo
import psycopg.errors

from evq.errors import EvqError, InvalidStorageURL, QueueNotFound, StorageError

# `evq publish` with the server down fails within this many seconds, never hangs.
CONNECT_TIMEOUT_SECONDS = 10
APPLICATION_NAME = "evq"

# Connections made by this process. A forked child must never close (nor free) what it
# inherited: libpq would say goodbye on the parent's socket. The child keeps them here, unused.
_opened: list[psycopg.Connection[Any]] = []
_inherited: list[psycopg.Connection[Any]] = []
_fork_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _fork_lock
    _fork_lock = threading.Lock()
    _inherited.extend(_opened)
    _opened.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Server:
    """Where a PostgreSQL URL points, and how to show it without its password."""

    def __init__(self, url: str) -> None:
        scheme, sep, rest = url.partition("://")
        if sep:  # libpq knows the schemes in lower case only
            url = f"{scheme.lower()}{sep}{rest}"
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise InvalidStorageURL(
                f"invalid PostgreSQL URL: {redact(str(exc), _password_in(url))}"
            ) from None
        self.url = url
        self.password = str(params.get("password") or "")
        env = os.environ
        host = str(params.get("host") or env.get("PGHOST") or "localhost")
        port = str(params.get("port") or env.get("PGPORT") or "5432")
        user = str(params.get("user") or env.get("PGUSER") or _login())
        self.database = str(params.get("dbname") or env.get("PGDATABASE") or user)
        self.host = host
        self.port = port
        shown_host = f"[{host}]" if ":" in host else host
        #: `host:port/database`, for people.
        self.location = f"{shown_host}:{port}/{self.database}"

    def redact(self, text: str) -> str:
        """`text` with this server's password (and any URL's) masked."""
        return redact(text, self.password)


def _login() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError):
        return "postgres"


def _password_in(url: str) -> str:
    match = re.search(r"://[^:/@]*:([^@/]*)@", url)
    return match.group(1) if match else ""


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]*@")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str, password: str) -> str:
    """Mask `password`, and any password written in a URL or `password=` keyword, in `text`."""
    if password:
        text = text.replace(password, "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _KEYWORD_PASSWORD.sub(r"\1***", text)


def connect(server: Server) -> psycopg.Connection[Any]:
    """Open a connection in autocommit mode (evq opens its own transactions), or raise the
    evq error that says in one line why it cannot be had."""
    try:
        conn = psycopg.connect(
            server.url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=APPLICATION_NAME,
        )
    except psycopg.Error as exc:
        raise connect_error(server, exc) from None
    _opened.append(conn)
    return conn


def connect_error(server: Server, exc: psycopg.Error) -> EvqError:
    """The error for a connection that could not be made: bad input (exit code 2) when the
    URL names something that does not exist or may not be used, a storage error (exit code 1)
    when the server cannot be reached now."""
    raw = server.redact(str(exc))
    message = " ".join(raw.split())
    where = f"cannot connect to PostgreSQL at {server.location}"
    lowered = message.lower()
    if "does not exist" in lowered and "database" in lowered:
        return QueueNotFound(f"{where}: database {server.database!r} does not exist")
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return InvalidStorageURL(f"{where}: password authentication failed")
    if "could not translate host name" in lowered or "failed to resolve host" in lowered:
        return InvalidStorageURL(f"{where}: unknown host {server.host!r}")
    if "invalid" in lowered and ("uri" in lowered or "connection option" in lowered):
        return InvalidStorageURL(f"invalid PostgreSQL URL: {message}")
    if "role" in lowered and "does not exist" in lowered:
        return InvalidStorageURL(f"{where}: {message}")
    return StorageError(f"{where}: {_last_reason(raw)}")


def _last_reason(message: str) -> str:
    # libpq lists every address it tried ("connection to server at ... failed: REASON", then
    # a hint on the next line); the last reason is what a person needs.
    reasons = [line.rsplit("failed: ", 1)[1] for line in message.splitlines() if "failed: " in line]
    return reasons[-1].strip() if reasons else " ".join(message.split())


def is_connection_lost(exc: BaseException) -> bool:
    """Whether `exc` means the connection is gone (the server restarted, a network cut)."""
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


class Connection:
    """One process's connection to the server, shared by its threads behind a lock."""

    def __init__(self, server: Server, *, on_connect: Any = None) -> None:
        self.server = server
        self._on_connect = on_connect
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = os.getpid()

    @property
    def lock(self) -> threading.RLock:
        """This process's lock; a forked child makes its own and forgets the parent's
        connection (kept unused: see `_inherited`)."""
        if self._pid != os.getpid():
            with _fork_lock:
                if self._pid != os.getpid():
                    self._lock = threading.RLock()
                    self._conn = None
                    self._pid = os.getpid()
        return self._lock

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and (self._conn.closed or _dropped(self._conn)):
            _close(self._conn)
            self._conn = None
        if self._conn is None:
            conn = connect(self.server)
            if self._on_connect is not None:
                try:
                    self._on_connect(conn)
                except psycopg.errors.InvalidSchemaName as exc:
                    _close(conn)
                    reason = exc.diag.message_primary
                    raise InvalidStorageURL(
                        f"cannot use the queue at {self.server.location}: {reason}"
                        " (the search path names no schema that exists: create it first)"
                    ) from None
                except psycopg.Error as exc:
                    _close(conn)
                    raise self.error("open", exc) from None
                except BaseException:
                    _close(conn)
                    raise
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def transaction(self, doing: str = "write to") -> Iterator[psycopg.Connection[Any]]:
        """One transaction, committed at the end of the block (rolled back on an error)."""
        with self.lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    yield conn
            except psycopg.Error as exc:
                raise self.error(doing, exc) from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection, for statements that commit one by one (autocommit)."""
        with self.lock:
            conn = self._connection()
            try:
                yield conn
            except psycopg.Error as exc:
                raise self.error("read", exc) from exc

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[psycopg.Connection[Any]]:
        """A read-only transaction whose statements all see one snapshot."""
        with self.transaction("read") as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield conn

    def error(self, doing: str, exc: psycopg.Error) -> StorageError:
        """The error to raise when a statement failed; a lost connection is dropped, so that
        the next use opens a new one."""
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            _close(self._conn)
            self._conn = None
        message = " ".join(self.server.redact(str(exc)).split())
        return StorageError(f"cannot {doing} the queue at {self.server.location}: {message}")

    def close(self) -> None:
        """Close this process's connection (a later use opens a new one)."""
        with self.lock:
            if self._conn is not None:
                _close(self._conn)
            self._conn = None


def _dropped(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server (or the network) ended this idle connection since its last use: its
    socket is readable while no statement runs. Checked before each use, so that a connection
    cut while idle is replaced quietly, instead of failing a statement and being logged as an
    outage of its own after the queue already works again."""
    pgconn = conn.pgconn
    try:
        readable, _, _ = select.select([pgconn.socket], [], [], 0)
        if not readable:
            return False
        pgconn.consume_input()  # a notice or a notification keeps the connection usable
    except (psycopg.Error, OSError, ValueError):
        return True
    return pgconn.status != psycopg.pq.ConnStatus.OK


def close_all() -> None:
    """Close every connection this process opened; each handle opens a new one at its next
    use. For frameworks whose test runner drops the database evq was connected to (handles
    the `evq` commands opened in-process are never closed otherwise)."""
    for conn in list(_opened):
        _close(conn)


def _close(conn: psycopg.Connection[Any]) -> None:
    if conn in _opened:
        _opened.remove(conn)
    with contextlib.suppress(psycopg.Error, OSError):
        conn.close()
