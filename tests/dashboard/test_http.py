"""The dashboard over plain HTTP: refusals (token, Host, CSRF, read-only), bad input, and
`evq dashboard`'s own bad input, against a real `evq dashboard` process."""

from __future__ import annotations

import re
import socket
from urllib.parse import unquote, urlencode

import pytest
from conftest import run_evq

from dashboard.conftest import TOKEN, Served, Shop, serve


def _csrf(served: Served) -> tuple[str, str]:
    """A CSRF token and the Cookie header that carries it, as a browser would get them."""
    _, body, headers = served.get("/dead-letters")
    token = re.search(r'name="csrf" value="([^"]+)"', body)
    assert token is not None
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    return token.group(1), cookie


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/events?status=lost", 400, "status='lost' is not a state"),
        ("/events?limit=ten", 400, "limit='ten' is not a whole number"),
        ("/events?limit=0", 400, "limit=0 is out of range"),
        ("/events?since=yesterday", 400, "since: invalid time 'yesterday'"),
        ("/events?name=order..created", 400, "invalid pattern"),
        ("/events?before=%3Cscript%3E", 400, "is not an event id"),
        ("/events?status=done&status=dead", 400, "given more than once"),
        ("/events/01ZZZZZZZZZZZZZZZZZZZZZZZZ", 404, "there is no event with id"),
        ("/events/%00%FF", 404, "there is no event with id"),
        ("/dead-letters?limit=-1", 400, "limit=-1 is out of range"),
        ("/dead-letters?name=***", 400, "invalid pattern"),
        ("/dead-letters?done=redrive&count=many", 400, "count='many' is not a whole number"),
        ("/nowhere", 404, "there is no page /nowhere"),
        ("/static/../../etc/passwd", 404, "there is no file"),
    ],
)
def test_bad_query_parameters_and_unknown_ids_get_a_clear_message_and_their_status(
    sqlite_shop: Shop, path: str, status: int, message: str
) -> None:
    served = serve(sqlite_shop.url)
    got, body, headers = served.get(path)
    assert got == status
    text = body.replace("&#x27;", "'")
    assert message in text
    assert "Traceback" not in body
    assert headers["Content-Type"] == "text/html; charset=utf-8"


def test_a_post_without_the_csrf_token_changes_nothing(sqlite_shop: Shop) -> None:
    served = serve(sqlite_shop.url)
    ids = {"ids": sqlite_shop.dead_letter, "confirm": "yes"}
    token, cookie = _csrf(served)

    assert served.get("/dead-letters/redrive")[0] == 405
    status, body, _ = served.post("/dead-letters/redrive", urlencode(ids))
    assert (status, "CSRF token is missing or wrong" in body) == (403, True)
    wrong = urlencode({**ids, "csrf": "x" * 43})
    assert served.post("/dead-letters/redrive", wrong, Cookie=cookie)[0] == 403
    # The cookie alone, as a forged cross-site form would send it, is not enough either.
    assert served.post("/dead-letters/purge", urlencode(ids), Cookie=cookie)[0] == 403
    assert [d.id for d in sqlite_shop.queue().dead_letters()] == [sqlite_shop.dead_letter]

    status, _, headers = served.post(
        "/dead-letters/purge", urlencode({**ids, "csrf": token}), Cookie=cookie
    )
    assert status == 303
    assert headers["Location"] == "/dead-letters?done=purge&count=1&asked=1"
    assert sqlite_shop.queue().dead_letters() == []


def test_redrive_asks_first_and_refuses_ids_that_are_no_longer_dead(sqlite_shop: Shop) -> None:
    served = serve(sqlite_shop.url)
    token, cookie = _csrf(served)
    form = {"ids": sqlite_shop.dead_letter, "csrf": token}

    status, body, _ = served.post("/dead-letters/redrive", urlencode(form), Cookie=cookie)
    assert status == 200 and "Redrive 1 dead letter?" in body
    assert len(sqlite_shop.queue().dead_letters()) == 1  # asking changed nothing

    assert run_evq("dlq", "purge", sqlite_shop.dead_letter, **sqlite_shop.env).returncode == 0
    form["confirm"] = "yes"
    status, body, _ = served.post("/dead-letters/redrive", urlencode(form), Cookie=cookie)
    assert status == 409
    assert f"not dead letters (any more): {sqlite_shop.dead_letter}; nothing was changed" in body
    empty = urlencode({"csrf": token, "confirm": "yes"})
    assert served.post("/dead-letters/purge", empty, Cookie=cookie)[0] == 400
    # A purge that raced a redrive (or the other way round) says how many it found.
    status, body, _ = served.get("/dead-letters?done=purge&count=0&asked=2")
    assert status == 200
    assert "Purged 0 dead letters. 2 of the 2 chosen were no longer dead letters" in body


def test_read_only_hides_and_refuses_redrive_and_purge(sqlite_shop: Shop) -> None:
    served = serve(sqlite_shop.url, "--read-only")
    status, body, _ = served.get("/dead-letters")
    assert status == 200 and "tests.apps.shop:send_invoice" in body
    assert "Redrive" not in body and 'name="ids"' not in body
    # Even with a CSRF token a browser could hold:
    token = "t" * 43
    cookie = f"evq_dashboard_csrf={token}"
    form = urlencode({"ids": sqlite_shop.dead_letter, "csrf": token, "confirm": "yes"})
    status, body, _ = served.post("/dead-letters/redrive", form, Cookie=cookie)
    assert (status, "read-only" in body) == (403, True)
    assert len(sqlite_shop.queue().dead_letters()) == 1


def test_with_a_token_every_request_needs_it_as_a_bearer_header_or_the_session_cookie(
    sqlite_shop: Shop,
) -> None:
    served = serve(sqlite_shop.url, EVQ_DASHBOARD_TOKEN=TOKEN)
    for path in ("/", "/events", f"/events/{sqlite_shop.order}", "/dead-letters"):
        status, body, _ = served.get(path)
        assert status == 401 and "order.created" not in body and "Sign in" in body
    assert served.get("/", Authorization="Bearer " + TOKEN[:-1] + "x")[0] == 401
    status, body, _ = served.get("/events", Authorization="Bearer " + TOKEN)
    assert status == 200 and "order.created" in body
    # A script with the token needs no CSRF token: browsers never add that header themselves.
    form = urlencode({"ids": sqlite_shop.dead_letter, "confirm": "yes"})
    status, _, _ = served.post("/dead-letters/purge", form, Authorization="Bearer " + TOKEN)
    assert status == 303
    assert served.get("/static/dashboard.css")[0] == 200  # the login page's looks


def test_without_a_token_only_requests_addressed_to_localhost_are_answered(
    sqlite_shop: Shop,
) -> None:
    served = serve(sqlite_shop.url)
    assert served.get("/", Host="localhost:8484")[0] == 200
    # A page elsewhere whose name was rebound to 127.0.0.1 (DNS rebinding) is refused.
    status, body, _ = served.get("/", Host="attacker.example")
    assert status == 403 and "answers only requests to localhost" in body


def test_every_response_forbids_inline_scripts_framing_and_sniffing(sqlite_shop: Shop) -> None:
    served = serve(sqlite_shop.url)
    for path in ("/", "/nowhere"):
        _, body, headers = served.get(path)
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert not re.search(r"<script(?![^>]*\bsrc=)", body)  # no inline script
        assert "http://" not in body and "https://" not in body  # no external asset


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--host", "0.0.0.0"], {}, "refusing to serve the dashboard on 0.0.0.0 without a token"),
        (["--host", "::"], {}, "refusing to serve the dashboard on :: without a token"),
        ([], {"EVQ_DASHBOARD_TOKEN": "short"}, "EVQ_DASHBOARD_TOKEN is too short"),
        (["--port", "70000"], {}, "Invalid value for '--port'"),
        ([], {"EVQ_URL": "ftp://nowhere"}, "unsupported storage URL scheme 'ftp'"),
    ],
)
def test_evq_dashboard_refuses_bad_settings_with_one_line_and_exit_code_2(
    sqlite_url: str, args: list[str], env: dict[str, str], message: str
) -> None:
    done = run_evq("dashboard", *args, **{"EVQ_URL": sqlite_url, **env})
    assert done.returncode == 2
    assert done.stderr.startswith("Error: ") and message in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stdout == ""


def test_evq_dashboard_says_so_when_its_port_is_taken(sqlite_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_evq("dashboard", "--port", str(port), EVQ_URL=sqlite_url)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(f"Error: cannot listen on 127.0.0.1:{port}")


def test_a_token_lets_evq_dashboard_listen_on_every_address(sqlite_shop: Shop) -> None:
    served = serve(sqlite_shop.url, "--host", "0.0.0.0", EVQ_DASHBOARD_TOKEN=TOKEN)
    status, _, _ = served.get("/", Authorization="Bearer " + TOKEN)
    assert status == 200


@pytest.mark.parametrize(
    "next_path",
    ["/%09/evil.example", "/%0d%0aSet-Cookie:%20planted=1", "/%E2%82%AC", "//evil.example"],
)
def test_signing_in_never_sends_the_browser_elsewhere_or_adds_a_header(
    sqlite_shop: Shop, next_path: str
) -> None:
    served = serve(sqlite_shop.url, EVQ_DASHBOARD_TOKEN=TOKEN)
    status, body, headers = served.get(f"/login?next={next_path}")
    assert status == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', body)
    assert csrf is not None
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    form = urlencode({"token": TOKEN, "csrf": csrf.group(1), "next": unquote(next_path)})
    status, _, headers = served.post("/login", form, Cookie=cookie)
    assert status == 303
    assert headers["Location"] in ("/", f"{served.base}/")
    assert "planted" not in str(headers)
