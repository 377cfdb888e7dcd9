"""The Redis connection: the URL, the client, the scripts loaded by name, and how the
driver's errors become evq's.

Every key of one queue starts with `{evq:<prefix>}:`: one hash tag, so that on Redis Cluster
all of them live in one slot and every script can touch them together.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from evq.errors import InvalidStorageURL, QueueNotFound, QueueUnusable, StorageError

SCHEMES = ("redis", "rediss", "unix")
#: The oldest server evq is tested with and relies on (scripts that read TIME before writing,
#: effects replication, ZADD/HSET with many fields).
MINIMUM_VERSION = (6, 2)
#: The layout of the keys; stored in `meta` so that a later evq can tell an old queue.
LAYOUT_VERSION = 1
CONNECT_TIMEOUT_SECONDS = 5.0
# A script over a large batch may take a while; a server that stops answering for this long
# is treated as down.
READ_TIMEOUT_SECONDS = 30.0
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_SSL_PARAMS = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile")


class Address(NamedTuple):
    """A parsed Redis URL: how to connect, and the queue's key prefix."""

    scheme: str
    host: str | None
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    prefix: str | None
    ssl: dict[str, str]

    @property
    def location(self) -> str:
        """The URL without its password (or user name), for people and logs."""
        where = self.path if self.scheme == "unix" else f"{self.host}:{self.port}/{self.db}"
        params = [f"db={self.db}"] if self.scheme == "unix" else []
        if self.prefix is not None:
            params.append(f"prefix={self.prefix}")
        query = "?" + "&".join(params) if params else ""
        return f"{self.scheme}://{where}{query}"

    @property
    def base(self) -> str:
        """The start of every key of this queue: one hash tag."""
        return "{evq}:" if self.prefix is None else "{evq:" + self.prefix + "}:"


def parse_url(url: str) -> Address:
    """Parse `redis://[user:password@]host[:port][/db][?prefix=P]`, `rediss://...` (TLS) or
    `unix://[user:password@]/path/to/socket[?db=N&prefix=P]`; raise `InvalidStorageURL`
    (without the password) for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
        username, password = parts.username, parts.password
    except ValueError:
        raise InvalidStorageURL(f"invalid Redis URL {_redacted(url)!r}: {_USAGE}") from None
    scheme = parts.scheme.lower()
    shown = _redacted(url)
    if scheme not in SCHEMES or parts.fragment:
        raise InvalidStorageURL(f"invalid Redis URL {shown!r}: {_USAGE}")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    allowed = {"prefix"} | ({"db"} if scheme == "unix" else set())
    allowed |= set(_SSL_PARAMS) if scheme == "rediss" else set()
    unknown = set(params) - allowed
    if unknown:
        raise InvalidStorageURL(
            f"unknown Redis URL parameter(s) {', '.join(sorted(unknown))} in {shown!r}:"
            f" evq knows {', '.join(sorted(allowed))}"
        )
    prefix = params.get("prefix")
    if prefix is not None and not _PREFIX.fullmatch(prefix):
        raise InvalidStorageURL(
            f"invalid key prefix {prefix!r} in {shown!r}: use 1 to 100 letters, digits, _ . -"
        )
    if scheme == "unix":
        host, path, db_text = None, unquote(parts.path), params.get("db", "0")
        if not path:
            raise InvalidStorageURL(f"invalid Redis URL {shown!r}: unix:// needs a socket path")
    else:
        host, path, db_text = parts.hostname, None, parts.path.strip("/") or "0"
        if not host:
            raise InvalidStorageURL(f"invalid Redis URL {shown!r}: no host")
    if not db_text.isascii() or not db_text.isdigit() or len(db_text) > 5:
        raise InvalidStorageURL(
            f"invalid Redis database {db_text!r} in {shown!r}: use a number, such as /0"
        )
    return Address(
        scheme=scheme,
        host=host,
        port=port or 6379,
        path=path,
        db=int(db_text),
        username=unquote(username) if username else None,
        password=unquote(password) if password is not None else None,
        prefix=prefix,
        ssl={name: params[name] for name in _SSL_PARAMS if name in params},
    )


_USAGE = "use redis://[:password@]host[:port][/db][?prefix=P], rediss://... or unix:///path"


def _redacted(url: str) -> str:
    """`url` with whatever stands before an `@` in its authority replaced (a password)."""
    return re.sub(r"(://)[^/@]*@", r"\1***@", url)


class Connection:
    """One process's client of a Redis queue: a pool of connections shared by threads
    (redis-py makes a forked child open its own), and the scripts, loaded by name."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.base = address.base
        kwargs: dict[str, Any] = {
            "db": address.db,
            "username": address.username,
            "password": address.password,
            "socket_timeout": READ_TIMEOUT_SECONDS,
            "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "decode_responses": True,
            # A damaged value shows replaced, never stops a read of the whole log.
            "encoding_errors": "replace",
            # A connection that broke (a server restarted) is tried again on a new one, a
            # little later; a timeout is not, since the command may have run.
            "retry": Retry(
                ExponentialBackoff(cap=0.5, base=0.05),
                2,
                supported_errors=(redis.ConnectionError,),
            ),
            "client_name": "evq",
        }
        if address.scheme == "unix":
            kwargs["unix_socket_path"] = address.path
        else:
            kwargs.update(host=address.host, port=address.port)
        if address.scheme == "rediss":
            kwargs["ssl"] = True
            kwargs.update(address.ssl)
        self.client = redis.Redis(**kwargs)
        self._execute: Callable[..., Any] = self.client.execute_command

    def close(self) -> None:
        """Close the pool's connections (a later use opens new ones)."""
        self.client.close()

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn the driver's errors into evq's, each one line that names the server (never
        its password)."""
        where = self.address.location
        try:
            yield
        except redis.AuthenticationError as exc:
            if self.address.password is None:
                raise InvalidStorageURL(
                    f"Redis at {where} needs a password: put it in the URL,"
                    " redis://:PASSWORD@host:port/db"
                ) from None
            raise InvalidStorageURL(
                f"Redis at {where} refused the password or user name: {_one_line(str(exc))}"
            ) from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            message = str(exc)
            if "DB index is out of range" in message or "invalid DB index" in message:
                raise InvalidStorageURL(
                    f"Redis at {where} has no database {self.address.db}: {message}"
                ) from None
            if "Authentication required" in message or "NOAUTH" in message:
                raise InvalidStorageURL(
                    f"Redis at {where} needs a password: put it in the URL,"
                    " redis://:PASSWORD@host:port/db"
                ) from None
            raise StorageError(f"cannot reach Redis at {where}: {_one_line(message)}") from None
        except redis.ResponseError as exc:
            message = _one_line(str(exc))
            if "NOAUTH" in message or "WRONGPASS" in message:
                raise InvalidStorageURL(
                    f"Redis at {where} refused the password or user name: {message}"
                ) from None
            if "DB index is out of range" in message:
                raise InvalidStorageURL(
                    f"Redis at {where} has no database {self.address.db}: {message}"
                ) from None
            if "unknown command" in message:
                raise QueueUnusable(
                    f"Redis at {where} does not know a command evq needs ({message}):"
                    f" evq needs Redis {'.'.join(map(str, MINIMUM_VERSION))} or newer"
                ) from None
            if "OOM" in message:
                raise StorageError(f"Redis at {where} is out of memory: {message}") from None
            if "READONLY" in message or "MISCONF" in message or "LOADING" in message:
                raise StorageError(f"Redis at {where} cannot write now: {message}") from None
            raise StorageError(f"Redis at {where} failed to {doing}: {message}") from None
        except redis.RedisError as exc:
            raise StorageError(
                f"Redis at {where} failed to {doing}: {_one_line(str(exc))}"
            ) from None

    def run(self, script: str, args: list[Any], *, doing: str) -> Any:
        """Run the script `script` (`<script>.lua`, by its SHA1, loaded again when the server
        forgot it) with `args`."""
        sha = _script_sha(script)
        try:
            # EVALSHA straight, not redis-py's Script wrapper (a sixth of a publish's time on
            # the client), and `errors()` entered only on the way out of a failure.
            return self._execute("EVALSHA", sha, 1, self.base, *args)
        except redis.exceptions.NoScriptError:
            with self.errors(doing):
                self.client.script_load(_script_text(script))
                return self._execute("EVALSHA", sha, 1, self.base, *args)
        except redis.RedisError as exc:
            with self.errors(doing):
                raise exc

    def append(self, stream: str, fields: list[str], *, doing: str) -> Any:
        """XADD `fields` (name, value, ...) to the queue's stream `stream`: one command, no
        script."""
        try:
            return self._execute("XADD", self.base + stream, "*", *fields)
        except redis.RedisError as exc:
            with self.errors(doing):
                raise exc

    def call(self, doing: str, operation: Callable[[Any], Any]) -> Any:
        """Run `operation` on the client, with evq's errors."""
        with self.errors(doing):
            return operation(self.client)

    def ensure_queue(self, *, create: bool) -> None:
        """Check that the server is new enough and holds a queue of this evq's layout here
        (creating its marker if `create`), or raise."""
        with self.errors("open the queue"):
            version = str(self.client.info("server").get("redis_version", "0"))
        if _version_tuple(version) < MINIMUM_VERSION:
            # Before anything is written: nothing of a queue is left on a server too old.
            raise QueueUnusable(
                f"Redis at {self.address.location} is version {version}: evq needs Redis"
                f" {'.'.join(map(str, MINIMUM_VERSION))} or newer"
            )
        with self.errors("open the queue"):
            stored = self.client.hget(self.base + "meta", "version")
            layout = None if stored is None else str(stored)
            if layout is None and create:
                self.client.hsetnx(self.base + "meta", "version", str(LAYOUT_VERSION))
                layout = str(LAYOUT_VERSION)
        if layout is None:
            raise QueueNotFound(
                f"no queue at {self.address.location} (publish an event or start a worker to"
                " create it, or point --url / EVQ_URL at an existing one)"
            )
        if not layout.isdigit() or int(layout) > LAYOUT_VERSION:
            raise StorageError(
                f"the queue at {self.address.location} was written by a newer evq (layout"
                f" {layout}); upgrade evq to use it"
            )


@functools.cache
def _script_text(name: str) -> str:
    """The script `<name>.lua`, after the definitions of `lib.lua` it uses (directly or
    through another definition), in lib.lua's order. Only those: Redis runs a script's whole
    text on every call, and defining all of lib.lua's functions took a sixth of a publish's
    time on the server."""
    script = (resources.files(__package__) / f"{name}.lua").read_text()
    definitions = _lib_definitions()
    wanted = _words(script)
    used: set[str] = set()
    while fresh := (wanted & definitions.keys()) - used:
        used |= fresh
        for word in fresh:
            wanted |= _words(definitions[word])
    return "".join(text for word, text in definitions.items() if word in used) + script


# A top-level definition of lib.lua, `local function name(` or `local NAME =`, with the
# comment lines right above it.
_DEFINITION = re.compile(r"^(?:--[^\n]*\n)*local (?:function )?([A-Za-z_]\w*)", re.MULTILINE)


@functools.cache
def _lib_definitions() -> dict[str, str]:
    """lib.lua's top-level definitions by name, in order, each with its comment and the text
    up to the next."""
    text = (resources.files(__package__) / "lib.lua").read_text()
    found = list(_DEFINITION.finditer(text))
    ends = [match.start() for match in found[1:]] + [len(text)]
    return {match[1]: text[match.start() : end] for match, end in zip(found, ends, strict=True)}


def _words(lua: str) -> set[str]:
    """The names a piece of Lua mentions, outside its comments."""
    return set(re.findall(r"[A-Za-z_]\w*", re.sub(r"--[^\n]*", "", lua)))


@functools.cache
def _script_sha(name: str) -> str:
    return hashlib.sha1(_script_text(name).encode()).hexdigest()


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in text.split(".")[:2])


def _one_line(text: str) -> str:
    return " ".join(text.split())


def durability_warnings(connection: Connection) -> list[str]:
    """One line for each way the server's settings may lose events: no persistence at all,
    or evicting keys when memory runs out. Settings that cannot be read (a managed Redis that
    refuses CONFIG) give no warning: only INFO is then asked."""
    where = connection.address.location
    with connection.errors("read the server's settings"):
        try:
            config = connection.client.config_get("appendonly")
            config.update(connection.client.config_get("save"))
            config.update(connection.client.config_get("maxmemory-policy"))
        except redis.ResponseError:
            info = connection.client.info("persistence")
            info.update(connection.client.info("memory"))
            config = {
                "appendonly": "yes" if info.get("aof_enabled") else "unknown",
                "save": "unknown",
                "maxmemory-policy": str(info.get("maxmemory_policy", "noeviction")),
            }
    warnings = []
    if config.get("appendonly") == "no" and not str(config.get("save", "")).strip():
        warnings.append(
            f"Redis at {where} keeps nothing on disk (appendonly no, no save): a restart of"
            " the server loses every event; set appendonly yes (see docs/redis.md)"
        )
    policy = str(config.get("maxmemory-policy", "noeviction"))
    if policy != "noeviction":
        warnings.append(
            f"Redis at {where} evicts keys when its memory is full (maxmemory-policy {policy}):"
            " an evicted key is a lost event; set maxmemory-policy noeviction"
        )
    return warnings
