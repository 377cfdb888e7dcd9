"""Who may see the dashboard and change the queue: the token, the session cookie, CSRF.

Without a token the dashboard trusts whoever reaches it, so `evq dashboard` binds 127.0.0.1
and answers only requests addressed to localhost (a page on another site that rebinds its DNS
name to 127.0.0.1 is refused). With a token every request must carry it: as a bearer header
(scripts) or as the session cookie the login form sets (HttpOnly, SameSite=Strict). Every
state change is a POST carrying the CSRF token of a cookie of its own (double submit); a bearer
request needs none, since a browser never adds that header by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from evq.dashboard.http import HttpError, Request

SESSION_COOKIE = "evq_dashboard_session"
CSRF_COOKIE = "evq_dashboard_csrf"
CSRF_FIELD = "csrf"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class Guard:
    """Checks each request against the token, the Host and the CSRF token."""

    def __init__(self, *, token: str | None, local_only: bool) -> None:
        self.token = token
        self.local_only = local_only
        # The cookie holds a digest of the token, not the token itself.
        self._session = (
            None
            if token is None
            else hmac.new(token.encode(), b"evq dashboard session", hashlib.sha256).hexdigest()
        )

    def check_host(self, request: Request) -> None:
        """Refuse a request addressed to another name than localhost, when `local_only`."""
        if not self.local_only:
            return
        host = (request.header("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in LOCAL_HOSTS:
            raise HttpError(
                403,
                "this dashboard answers only requests to localhost; set EVQ_DASHBOARD_TOKEN"
                " to serve it under another name",
            )

    def signed_in(self, request: Request) -> bool:
        """Whether the request carries the token (bearer header or session cookie)."""
        if self.token is None or self._session is None:
            return True
        return self.bearer(request) or hmac.compare_digest(
            request.cookies.get(SESSION_COOKIE, "").encode(), self._session.encode()
        )

    def bearer(self, request: Request) -> bool:
        """Whether the request carries the token in an `Authorization: Bearer` header."""
        if self.token is None:
            return False
        scheme, _, value = (request.header("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        )

    def accepts_token(self, given: str) -> bool:
        """Whether `given` (from the login form) is the token."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def session_cookie(self, request: Request, *, clear: bool = False) -> str:
        """Return the Set-Cookie value that signs in (or, with `clear`, out)."""
        value = "" if clear or self._session is None else self._session
        age = "; Max-Age=0" if clear else ""
        return _cookie(SESSION_COOKIE, value, request) + age

    def csrf_token(self, request: Request) -> tuple[str, str | None]:
        """Return the CSRF token for this request's forms, and the Set-Cookie value that
        stores it when the browser does not have one yet."""
        token = request.cookies.get(CSRF_COOKIE, "")
        if len(token) >= 32:
            return token, None
        # One new token per request, however many forms the page has.
        request.new_csrf = request.new_csrf or secrets.token_urlsafe(32)
        return request.new_csrf, _cookie(CSRF_COOKIE, request.new_csrf, request)

    def check_csrf(self, request: Request) -> None:
        """Refuse a POST whose form does not carry the CSRF cookie's token (bearer requests
        need none)."""
        if self.bearer(request):
            return
        cookie = request.cookies.get(CSRF_COOKIE, "")
        field = request.field(CSRF_FIELD) or ""
        if len(cookie) < 32 or not hmac.compare_digest(cookie.encode(), field.encode()):
            raise HttpError(
                403,
                "the form's CSRF token is missing or wrong (reload the page and try again)",
            )


def _cookie(name: str, value: str, request: Request) -> str:
    secure = "; Secure" if request.secure else ""
    return f"{name}={value}; Path={request.prefix or '/'}; HttpOnly; SameSite=Strict{secure}"
