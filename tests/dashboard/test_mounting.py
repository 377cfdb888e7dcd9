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


def _asgi_get(
    app: Any, path: str, *, method: str = "GET", body: bytes = b"", **headers: str
) -> tuple[int, dict[str, str], str]:
    """One request through an ASGI application, as Starlette's `Mount("/evq", ...)` hands it
    over (the prefix in `root_path`, the full path in `path`)."""
    import asyncio

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "/evq",
        "query_string": b"",
        "headers": [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    got = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], got, text.decode()


def test_through_a2wsgi_the_dashboard_mounts_in_an_asgi_application(sqlite_shop: Shop) -> None:
    from a2wsgi import WSGIMiddleware

    app = WSGIMiddleware(create_app(sqlite_shop.url))
    status, headers, body = _asgi_get(app, "/evq/dead-letters", host="localhost")
    assert status == 200 and "tests.apps.shop:send_invoice" in body
    assert 'href="/evq/events/' in body
    cookie = headers["set-cookie"].split(";", 1)[0]
    token = re.search(r'name="csrf" value="([^"]+)"', body)
    assert token is not None
    form = f"ids={sqlite_shop.dead_letter}&confirm=yes&csrf={token.group(1)}".encode()
    status, headers, _ = _asgi_get(
        app,
        "/evq/dead-letters/purge",
        method="POST",
        body=form,
        cookie=cookie,
        content_type="application/x-www-form-urlencoded",
        content_length=str(len(form)),
    )
    assert status == 303
    assert headers["location"] == "/evq/dead-letters?done=purge&count=1&asked=1"
    assert sqlite_shop.queue().dead_letters() == []
