"""The dashboard as a WSGI application: routes, the queue, and what each request may do."""

from __future__ import annotations

import html
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

from evq.dashboard import pages
from evq.dashboard.http import HttpError, Request, Response, redirect
from evq.dashboard.security import Guard
from evq.errors import EvqError, InvalidInput, QueueNotFound, StorageError
from evq.storage.contract import (
    DELIVERY_STATES,
    DeadLetter,
    DeliveryState,
    EventSelection,
    MinuteCount,
    Queue,
    QueueStatus,
)

logger = logging.getLogger("evq.dashboard")

#: How often an open page refreshes itself, in milliseconds. Each refresh of the overview
#: reads the status once (shared by every page open within a second) and the per-minute
#: statistics at most every `_CHART_SECONDS`.
LIVE_MS = {"overview": 2000, "list": 5000}
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_IDS = 5000
_STATUS_SECONDS = 1.0
_CHART_SECONDS = 10.0
_EVENT_ID = re.compile(r"[0-9A-Za-z]{1,64}")
_STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}

#: No inline script or style, nothing from another origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def create_app(
    url: str, *, token: str | None = None, read_only: bool = False, local_only: bool = False
) -> Dashboard:
    """Return the dashboard of the queue at `url` as a WSGI application.

    With `token`, every request must carry it (the login form's cookie or a bearer header);
    without, the application trusts whoever reaches it: mount it behind your own login.
    `read_only` hides and refuses redrive and purge. `local_only` answers only requests
    addressed to localhost (what `evq dashboard` uses without a token).
    """
    return Dashboard(url, token=token, read_only=read_only, local_only=local_only)


class Dashboard:
    """The dashboard's WSGI application (see `create_app`)."""

    def __init__(self, url: str, *, token: str | None, read_only: bool, local_only: bool) -> None:
        self.url = url
        self.read_only = read_only
        self.guard = Guard(token=token, local_only=local_only)
        self._lock = threading.Lock()
        self._queues: dict[str, Queue] = {}
        self._status: tuple[float, QueueStatus] | None = None
        self._chart: tuple[float, list[MinuteCount]] | None = None

    def __call__(
        self, environ: Mapping[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        request = Request(environ)
        response = self.respond(request)
        headers = [*response.headers, *_SECURITY_HEADERS]
        start_response(response.status_line(), headers)
        return [] if request.method == "HEAD" else [response.body]

    def respond(self, request: Request) -> Response:
        """Answer one request; a refusal is a page with its status, never a traceback."""
        try:
            self.guard.check_host(request)
            if request.path.startswith("/static/"):
                return _static(request.path.removeprefix("/static/"))
            if request.path == "/login":
                return self._login(request)
            if not self.guard.signed_in(request):
                return self._sign_in_first(request)
            return self._route(request)
        except HttpError as exc:
            return self._problem(request, exc.status, exc.message)
        except QueueNotFound as exc:
            return self._outage(request, str(exc))
        except StorageError as exc:
            self._forget_queues()
            return self._outage(request, str(exc))
        except InvalidInput as exc:
            return self._problem(request, 400, str(exc))
        except EvqError as exc:
            return self._problem(request, 500, str(exc))
        except Exception:
            logger.exception("the dashboard failed to answer %s %s", request.method, request.path)
            return self._problem(request, 500, "the dashboard failed on this request (see its log)")

    # Routing

    def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path.endswith("/") and path != "/":
            return redirect(request.prefix + path.rstrip("/"))
        get = method in ("GET", "HEAD")
        if path == "/" and get:
            return self._overview(request)
        if path == "/events" and get:
            return self._events(request)
        if path.startswith("/events/") and get:
            return self._event(request, path.removeprefix("/events/"))
        if path == "/dead-letters" and get:
            return self._dead_letters(request)
        if path in ("/dead-letters/redrive", "/dead-letters/purge") and method == "POST":
            return self._change(request, path.rsplit("/", 1)[1])
        if path == "/subscriptions" and get:
            return self._subscriptions(request)
        if path == "/logout" and method == "POST":
            self.guard.check_csrf(request)
            cookie = self.guard.session_cookie(request, clear=True)
            return redirect(request.url("/login"), headers=[("Set-Cookie", cookie)])
        known = ("/", "/events", "/dead-letters", "/subscriptions", "/logout")
        if path in known or path.startswith("/events/") or path.startswith("/dead-letters/"):
            raise HttpError(405, f"{method} is not allowed on {path}")
        raise HttpError(404, f"there is no page {path}")

    # Pages

    def _overview(self, request: Request) -> Response:
        status = self._read_status()
        minutes = self._read_chart()
        content = pages.overview(self._page(request), status, minutes, location=self._location())
        return self._render(request, "Overview", "/", content, live=LIVE_MS["overview"])

    def _events(self, request: Request) -> Response:
        filters = pages.EventFilters(
            name=request.arg("name") or "",
            since=request.arg("since") or "",
            until=request.arg("until") or "",
            status=request.arg("status") or "",
        )
        before = request.arg("before")
        if before is not None and not _EVENT_ID.fullmatch(before):
            raise HttpError(400, f"before={before!r} is not an event id")
        limit = _int_arg(request, "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)
        selection = EventSelection(
            name=_pattern(filters.name),
            since=_time(filters.since, "since"),
            until=_time(filters.until, "until"),
            before=before,
        )
        state = _state(filters.status)
        found = self._queue("inspect").events(selection, status=state, limit=limit + 1)
        older = found[limit - 1].id if len(found) > limit else None
        content = pages.event_log(
            self._page(request), found[:limit], filters, older=older, paged=before is not None
        )
        live = 0 if before is not None else LIVE_MS["list"]
        return self._render(request, "Events", "/events", content, live=live)

    def _event(self, request: Request, event_id: str) -> Response:
        from evq.payload import payload_to_show

        event = self._queue("inspect").event(event_id) if _EVENT_ID.fullmatch(event_id) else None
        if event is None:
            raise HttpError(
                404, f"there is no event with id {event_id!r} (it may have been pruned)"
            )
        content = pages.event_page(self._page(request), event, payload_to_show(event.payload))
        return self._render(request, event.name, "/events", content, live=LIVE_MS["list"])

    def _dead_letters(self, request: Request) -> Response:
        receiver = request.arg("receiver") or ""
        name = request.arg("name") or ""
        limit = _int_arg(request, "limit", 100, 1, MAX_PAGE_SIZE)
        letters = self._select_dead(receiver=receiver or None, pattern=_pattern(name), limit=limit)
        content = pages.dead_letters(
            self._page(request),
            letters,
            receiver=receiver,
            name=name,
            message=_result_message(request),
            limit=limit,
        )
        return self._render(request, "Dead letters", "/dead-letters", content, live=LIVE_MS["list"])

    def _change(self, request: Request, action: str) -> Response:
        if self.read_only:
            raise HttpError(403, "this dashboard is read-only: redrive and purge are turned off")
        self.guard.check_csrf(request)
        ids = list(dict.fromkeys(i.strip() for i in request.form().get("ids", []) if i.strip()))
        if not ids:
            raise HttpError(400, "select at least one dead letter")
        if len(ids) > MAX_IDS or any(len(i) > 64 for i in ids):
            raise HttpError(400, f"choose at most {MAX_IDS} dead letters at once, by their ids")
        letters = self._queue("inspect").dead_letters(ids=ids)
        found = {letter.id for letter in letters}
        missing = [i for i in ids if i not in found]
        if missing:
            shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
            raise HttpError(
                409,
                f"not dead letters (any more): {shown}; nothing was changed"
                " (reload the list and choose again)",
            )
        if request.field("confirm") != "yes":
            content = pages.confirm(self._page(request), action, letters)
            title = f"{action.capitalize()} dead letters"
            return self._render(request, title, "/dead-letters", content)
        queue = self._queue("publish")
        count = queue.redrive(ids) if action == "redrive" else queue.purge(ids)
        logger.info("%s %d of %d dead letters from the dashboard", action, count, len(ids))
        return redirect(request.url("/dead-letters", done=action, count=count, asked=len(ids)))

    def _subscriptions(self, request: Request) -> Response:
        status = self._read_status()
        content = pages.subscriptions(self._page(request), status.workers, now=status.time)
        return self._render(
            request, "Subscriptions", "/subscriptions", content, live=LIVE_MS["list"]
        )

    def _login(self, request: Request) -> Response:
        if self.guard.token is None:
            return redirect(request.url("/"))
        next_path = _local_path(
            request.field("next") if request.method == "POST" else request.arg("next")
        )
        if request.method == "POST":
            self.guard.check_csrf(request)
            if self.guard.accepts_token(request.field("token") or ""):
                cookie = self.guard.session_cookie(request)
                return redirect(request.prefix + next_path, headers=[("Set-Cookie", cookie)])
            content = pages.login(self._page(request), next_path=next_path, failed=True)
            return self._render(request, "Sign in", "", content, status=401)
        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, f"{request.method} is not allowed on /login")
        content = pages.login(self._page(request), next_path=next_path, failed=False)
        return self._render(request, "Sign in", "", content)

    def _sign_in_first(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD") and not request.live:
            query = request.environ.get("QUERY_STRING", "")
            next_path = request.path + ("?" + str(query) if query else "")
            content = pages.login(self._page(request), next_path=next_path, failed=False)
            return self._render(request, "Sign in", "", content, status=401)
        return self._problem(request, 401, "sign in first: this dashboard needs its token")

    # Responses

    def _page(self, request: Request) -> pages.Page:
        csrf, _ = self.guard.csrf_token(request)
        return pages.Page(
            # Put in HTML attributes: escaped (a mount's prefix comes from the request's path).
            prefix=html.escape(request.prefix, quote=True),
            csrf=csrf,
            read_only=self.read_only,
            signed_in_with_token=self.guard.token is not None and self.guard.signed_in(request),
            where=self._location(),
        )

    def _render(
        self,
        request: Request,
        title: str,
        active: str,
        content: str,
        *,
        live: int = 0,
        status: int = 200,
    ) -> Response:
        _, set_cookie = self.guard.csrf_token(request)
        headers = [("Set-Cookie", set_cookie)] if set_cookie else []
        if request.live:
            return Response(content, status=status, headers=headers)
        page = self._page(request)
        body = pages.layout(page, title=title, active=active, content=content, live=live)
        return Response(body, status=status, headers=headers)

    def _problem(self, request: Request, status: int, message: str) -> Response:
        return self._render(request, str(status), "", pages.problem(status, message), status=status)

    def _outage(self, request: Request, message: str) -> Response:
        # The page keeps refreshing itself, so that it recovers when the queue does.
        return self._render(
            request,
            "Queue unreachable",
            "",
            pages.unreachable(message),
            live=LIVE_MS["overview"],
            status=503,
        )

    # The queue

    def _queue(self, role: str) -> Queue:
        from evq.storage import open_queue

        with self._lock:
            queue = self._queues.get(role)
            if queue is None:
                queue = open_queue(
                    self.url, role="inspect" if role == "inspect" else "publish", create=False
                )
                self._queues[role] = queue
            return queue

    def _forget_queues(self) -> None:
        with self._lock:
            queues, self._queues = self._queues, {}
        for queue in queues.values():
            try:
                queue.close()
            except Exception:  # closing a broken connection may fail too
                logger.debug("closing the queue failed", exc_info=True)

    def _location(self) -> str:
        with self._lock:
            queue = self._queues.get("inspect")
        return (
            f"{queue.backend} · {queue.location}" if queue is not None else _hide_password(self.url)
        )

    def _read_status(self) -> QueueStatus:
        now = time.monotonic()
        cached = self._status
        if cached is not None and now - cached[0] < _STATUS_SECONDS:
            return cached[1]
        status = self._queue("inspect").status()
        self._status = (now, status)
        return status

    def _read_chart(self) -> list[MinuteCount]:
        now = time.monotonic()
        cached = self._chart
        if cached is not None and now - cached[0] < _CHART_SECONDS:
            return cached[1]
        minutes = self._queue("inspect").finished_per_minute(minutes=59)
        self._chart = (now, minutes)
        return minutes

    def _select_dead(
        self, *, receiver: str | None, pattern: str | None, limit: int
    ) -> list[DeadLetter]:
        from evq.names import matches

        letters = self._queue("inspect").dead_letters(
            receiver=receiver, limit=None if pattern is not None else limit
        )
        if pattern is not None:
            letters = [letter for letter in letters if matches(pattern, letter.name)][:limit]
        return letters


# Private


def _static(name: str) -> Response:
    if name not in _STATIC:
        raise HttpError(404, f"there is no file {name!r}")
    body = resources.files("evq.dashboard").joinpath("static", name).read_bytes()
    return Response(body, content_type=_STATIC[name])


def _int_arg(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.arg(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HttpError(400, f"{name}={text!r} is not a whole number") from None
    if not low <= value <= high:
        raise HttpError(400, f"{name}={value} is out of range: use {low} to {high}")
    return value


def _pattern(text: str) -> str | None:
    if not text:
        return None
    from evq.names import validate_pattern

    return validate_pattern(text)


def _time(text: str, name: str) -> float | None:
    if not text:
        return None
    from datetime import UTC, datetime

    from evq.durations import parse_time

    try:
        return parse_time(text, now=datetime.now(UTC)).timestamp()
    except InvalidInput as exc:
        raise HttpError(400, f"{name}: {exc}") from None


def _state(text: str) -> DeliveryState | None:
    if not text:
        return None
    for state in DELIVERY_STATES:
        if state == text:
            return state
    raise HttpError(400, f"status={text!r} is not a state: use one of {', '.join(DELIVERY_STATES)}")


def _result_message(request: Request) -> str | None:
    action = request.arg("done")
    if action not in ("redrive", "purge"):
        return None
    count = _int_arg(request, "count", 0, 0, 10**9)
    asked = _int_arg(request, "asked", count, 0, 10**9)
    verb = "Redrove" if action == "redrive" else "Purged"
    noun = "dead letter" if count == 1 else "dead letters"
    message = f"{verb} {count} {noun}."
    if asked > count:
        message += (
            f" {asked - count} of the {asked} chosen were no longer dead letters"
            " (redriven or purged meanwhile)."
        )
    return message


def _local_path(text: str | None) -> str:
    # Only a path of this dashboard: never another site (an open redirect), and nothing a
    # header cannot carry as it is: browsers drop tabs and newlines from a URL (so "/\t/x" is
    # "//x"), and a CR or LF would start a header of the sender's choosing.
    if (
        not text
        or not text.startswith("/")
        or text.startswith("//")
        or "\\" in text
        or not text.isascii()
        or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in text)
    ):
        return "/"
    return text


def _hide_password(url: str) -> str:
    return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", url)
