"""`evq dashboard`'s web server: the standard library's WSGI server, one thread per request."""

from __future__ import annotations

import ipaddress
import socket
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from evq.dashboard.app import Dashboard


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # Ctrl-C stops the server without waiting for open pages


class _IPv6ThreadingServer(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # every page refreshes itself: an access log would be mostly noise


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make(app: Dashboard, host: str, port: int) -> WSGIServer:
    """Return a server of `app` listening on `host`:`port` (port 0: a free one)."""
    server_class = _IPv6ThreadingServer if ":" in host else _ThreadingServer
    return make_server(
        host.strip("[]"), port, app, server_class=server_class, handler_class=_QuietHandler
    )
