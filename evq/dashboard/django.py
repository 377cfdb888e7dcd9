"""The dashboard in a Django project, for staff only, behind Django's own login.

    # urls.py
    from django.urls import include, path
    from evq.dashboard.django import dashboard_urls

    urlpatterns = [path("ops/evq/", include(dashboard_urls("postgresql://db/shop")))]

Every request goes through `staff_member_required` (a signed-in user with `is_staff`; others
are sent to the admin's login page) and is handed to the dashboard's WSGI application, under
the prefix Django routed it from. Django's CSRF middleware is turned off for these views only:
the dashboard checks a CSRF token of its own on every change. Importing this module needs
Django; nothing else in evq imports it.
"""

from __future__ import annotations

import io
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.urls import re_path
from django.views.decorators.csrf import csrf_exempt

from evq.dashboard.app import Dashboard, create_app


def dashboard_urls(url: str, *, read_only: bool = False) -> list[Any]:
    """Return the URL patterns that serve the dashboard of the queue at `url` to staff."""
    view = csrf_exempt(staff_member_required(_view(create_app(url, read_only=read_only))))
    return [re_path(r"^(?P<path>.*)$", view, name="evq-dashboard")]


def _view(app: Dashboard) -> Any:
    def evq_dashboard(request: HttpRequest, path: str = "") -> HttpResponse:
        prefix = request.path[: len(request.path) - len(path)].rstrip("/")
        environ = {
            **request.META,
            "REQUEST_METHOD": request.method or "GET",
            "SCRIPT_NAME": prefix,
            "PATH_INFO": "/" + path,
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.url_scheme": request.scheme or "http",
        }
        started: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            started["status"], started["headers"] = status, headers

        body = b"".join(app(environ, start_response))
        response = HttpResponse(body, status=int(started["status"].split()[0]))
        for name, value in started["headers"]:
            if name.lower() == "set-cookie":
                cookie_name, _, rest = value.partition("=")
                response.cookies[cookie_name] = rest.split(";", 1)[0]
                _cookie_attributes(response.cookies[cookie_name], rest)
            else:
                response.headers[name] = value
        return response

    return evq_dashboard


def _cookie_attributes(morsel: Any, header: str) -> None:
    for part in header.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        key = key.lower()
        if key in ("path", "max-age", "samesite"):
            morsel[key] = value
        elif key in ("httponly", "secure"):
            morsel[key] = True
