"""`evq.dashboard.create_app` mounted under a prefix of another WSGI application, as Flask's
DispatcherMiddleware or Django's URL routing do: every link and form stays under the prefix."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from dashboard.conftest import Shop, request
from evq.dashboard import create_app


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def mounted(sqlite_shop: Shop) -> Iterator[str]:
    """The host application on a free port: its own page at /, the dashboard under /ops/evq."""
    dashboard = create_app(sqlite_shop.url)

    def host_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/ops/evq"):
            environ["SCRIPT_NAME"] = "/ops/evq"
            environ["PATH_INFO"] = path.removeprefix("/ops/evq")
            return dashboard(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the host application"]

    server = make_server("127.0.0.1", 0, host_app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_mounted_dashboard_links_only_under_its_prefix(mounted: str, sqlite_shop: Shop) -> None:
    for path in ("/ops/evq", "/ops/evq/events", f"/ops/evq/events/{sqlite_shop.invoice}"):
        status, body, headers = request(mounted + path)
        assert status == 200, body
        targets = re.findall(r'(?:href|src|action|formaction)="([^"#]+)', body)
        assert targets
        assert all(t.startswith("/ops/evq/") or t.startswith("?") for t in targets), targets
    _, _, headers = request(mounted + "/ops/evq/dead-letters")
    assert "Path=/ops/evq;" in headers["Set-Cookie"]
    assert request(mounted + "/")[1] == "the host application"
