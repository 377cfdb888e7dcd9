"""A TCP proxy the fault tests control, between evq and a server (PostgreSQL, Redis).

It listens on a free port of 127.0.0.1 and forwards every connection to the server, one pair
of threads per connection. `cut()` closes every open connection at once (a network cut, a
server restart: both sides see the socket die); `refuse(seconds)` (or `refusing()`) resets
every new connection as soon as it is accepted, as a server that cannot be reached would;
`replies`, if given, rewrites what the server sends (a server that says something else).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit


class Proxy:
    """Forwards 127.0.0.1:`port` to `target`; start it with `with Proxy(...) as proxy`."""

    def __init__(
        self,
        target_host: str = "127.0.0.1",
        target_port: int = 5432,
        *,
        replies: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self._replies = replies
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.1)  # to notice `close()`
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._refuse_until = 0.0
        self._closed = False
        #: How many connections were forwarded, cut, and refused so far.
        self.accepted = 0
        self.cuts = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._accept_loop, name="proxy", daemon=True)
        self._thread.start()

    def url(self, url: str) -> str:
        """`url` (a postgresql:// URL of the target) pointed at this proxy instead."""
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")
        userinfo = f"{netloc[0]}@" if netloc[1] else ""
        return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{self.port}"))

    # Faults.

    def cut(self) -> int:
        """Close every open connection (both of its sides); return how many there were."""
        with self._lock:
            sockets = list(self._open)
            self._open.clear()
            pairs = len(sockets) // 2
            self.cuts += pairs
        for sock in sockets:
            _reset(sock)
        return pairs

    def refuse(self, seconds: float) -> None:
        """Reset every new connection for the next `seconds` (open ones are left alone)."""
        with self._lock:
            self._refuse_until = time.monotonic() + seconds

    @contextlib.contextmanager
    def refusing(self) -> Iterator[None]:
        """Reset every new connection until the block ends."""
        self.refuse(1e9)
        try:
            yield
        finally:
            self.refuse(0)

    def connections(self) -> int:
        """How many connections are open through the proxy now."""
        with self._lock:
            return len(self._open) // 2

    # Forwarding.

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                if self._closed:
                    return
                continue
            except OSError:
                return  # closed
            client.settimeout(None)
            with self._lock:
                refusing = time.monotonic() < self._refuse_until
                if refusing:
                    self.refused += 1
            if refusing:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._closed:
                    _reset(client)
                    _reset(upstream)
                    return
                self._open.update((client, upstream))
                self.accepted += 1
            for source, sink, rewrite in (
                (client, upstream, None),
                (upstream, client, self._replies),
            ):
                threading.Thread(
                    target=self._pump, args=(source, sink, rewrite), daemon=True
                ).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        rewrite: Callable[[bytes], bytes] | None = None,
    ) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data if rewrite is None else rewrite(data))
        except OSError:
            pass
        # One side ended: end the other, as a real connection would.
        with self._lock:
            self._open.discard(source)
            self._open.discard(sink)
        _reset(source)
        _reset(sink)

    def close(self) -> None:
        """Stop listening and close every connection."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reset(sock: socket.socket) -> None:
    """Close `sock` at once with a TCP reset, unblocking any thread reading it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
