"""Requests and responses of the dashboard's WSGI application, from the standard library."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode

#: The most a form may send: a few thousand dead letter ids.
MAX_FORM_BYTES = 1 << 20


class HttpError(Exception):
    """A request the dashboard refuses, with the status and the sentence the page shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """One request: method, path below the mount point, query, form and cookies."""

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        #: Where the dashboard is mounted ("" at the root, "/evq" under a prefix).
        self.prefix = _text(environ.get("SCRIPT_NAME", "")).rstrip("/")
        self.path = _text(environ.get("PATH_INFO", "")) or "/"
        self.query = parse_qs(_text(environ.get("QUERY_STRING", "")), keep_blank_values=True)
        self.cookies = _cookies(str(environ.get("HTTP_COOKIE", "")))
        #: A page's own script asking for its main part only (the live update).
        self.live = environ.get("HTTP_X_EVQ_LIVE") == "1"
        #: The CSRF token made for a browser that has none yet (see `security.Guard`).
        self.new_csrf: str | None = None
        self._form: dict[str, list[str]] | None = None

    @property
    def secure(self) -> bool:
        """Whether the request came over HTTPS (so cookies can be Secure)."""
        return self.environ.get("wsgi.url_scheme") == "https"

    def header(self, name: str) -> str | None:
        """Return a request header, or None."""
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        return None if value is None else str(value)

    def arg(self, name: str) -> str | None:
        """Return a query parameter, stripped, or None when absent or empty."""
        values = self.query.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise HttpError(400, f"the query parameter {name!r} is given more than once")
        return values[0].strip() or None

    def form(self) -> dict[str, list[str]]:
        """Return the fields of a POSTed urlencoded form."""
        if self._form is None:
            kind = str(self.environ.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()
            if kind not in ("", "application/x-www-form-urlencoded"):
                raise HttpError(415, "send the form as application/x-www-form-urlencoded")
            try:
                length = int(self.environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                raise HttpError(400, "the request has a malformed Content-Length") from None
            if length > MAX_FORM_BYTES:
                raise HttpError(413, "the form is too large")
            body = self.environ["wsgi.input"].read(length) if length > 0 else b""
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise HttpError(400, "the form is not UTF-8 text") from None
            self._form = parse_qs(text, keep_blank_values=True)
        return self._form

    def field(self, name: str) -> str | None:
        """Return one form field, or None."""
        values = self.form().get(name)
        return values[0] if values else None

    def url(self, path: str, **params: str | int | None) -> str:
        """Return the URL of `path` in this dashboard, with the given query parameters."""
        query = urlencode({k: v for k, v in params.items() if v is not None and v != ""})
        return self.prefix + path + ("?" + query if query else "")


class Response:
    """A response: status, headers and body."""

    def __init__(
        self,
        body: str | bytes = b"",
        *,
        status: int = 200,
        content_type: str = "text/html; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.status = status
        self.headers = [("Content-Type", content_type), *headers]

    def status_line(self) -> str:
        """Return `200 OK` and the like."""
        return f"{self.status} {HTTPStatus(self.status).phrase}"


def redirect(location: str, *, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A 303 See Other to `location` (after a POST, so that reloading does not repeat it)."""
    return Response(status=303, headers=[("Location", location), *headers])


def _text(value: Any) -> str:
    # WSGI hands paths and query strings over as bytes decoded as Latin-1 (PEP 3333).
    return str(value).encode("latin-1", "replace").decode("utf-8", "replace")


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}
