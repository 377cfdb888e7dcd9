"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright), against
a queue with real events, a dead letter and a running `evq worker`.

With EVQ_TEST_SCREENSHOTS=docs/images, the SQLite run of the first test saves a screenshot of
each page there (the ones docs/dashboard.md shows).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_evq

from dashboard.conftest import SCRIPT_PAYLOAD, TOKEN, Shop, serve, wait_for

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    # Pages refresh themselves every 2 to 5 s, and a worker delivers meanwhile.
    expect.set_options(timeout=TIMEOUT_MS)
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need Debian's chromium: apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in a fresh browser context, in Paris time; fails the test on any script error
    or Content-Security-Policy violation."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 860}, timezone_id="Europe/Paris", locale="en-GB"
    )
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield opened
    context.close()
    assert problems == []


def _card(page: Any, name: str) -> Any:
    return page.locator(f'[data-card="{name}"] .value')


def _shoot(page: Any, name: str, shop: Shop) -> None:
    folder = os.environ.get("EVQ_TEST_SCREENSHOTS")
    if folder and shop.url.startswith("sqlite"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_every_page_shows_the_queue_and_a_dead_letter_redriven_by_a_click_is_delivered(
    shop: Shop, page: Any, browser: Any
) -> None:
    from playwright.sync_api import expect

    served = serve(shop.url)

    # Overview: the numbers of `evq status`, the chart, the worker.
    page.goto(served.base + "/")
    expect(_card(page, "published")).to_have_text("3")
    expect(_card(page, "dead")).to_have_text("1")
    worker = page.locator("main table tbody tr").first
    expect(worker).to_contain_text(str(os.uname().nodename))
    expect(page.locator("figure.chart svg rect.done").first).to_be_attached()
    _shoot(page, "overview", shop)

    # The event log, newest first, with each event's status.
    page.click("nav >> text=Events")
    rows = page.locator("main table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(1)).to_contain_text("invoice.requested")
    expect(rows.nth(1)).to_contain_text("dead")
    # Times are shown in the viewer's time zone, with UTC on hover.
    published = rows.nth(1).locator("time")
    assert published.get_attribute("title").endswith("UTC")
    assert published.inner_text() != published.get_attribute("title")
    _shoot(page, "events", shop)

    # The event: its payload pretty-printed, the dead delivery's error and traceback.
    page.click("text=invoice.requested")
    expect(page.locator("pre.payload")).to_contain_text('"order_id": 1042')
    delivery = page.locator("section.delivery")
    expect(delivery).to_contain_text("tests.apps.shop:send_invoice")
    expect(delivery.locator("td.error")).to_contain_text("the mail server refused the connection")
    page.click("text=Last traceback")
    expect(delivery.locator("pre.traceback")).to_contain_text("ConnectionError")
    _shoot(page, "event", shop)

    page.click("nav >> text=Subscriptions")
    expect(page.locator("main table")).to_contain_text("tests.apps.shop:send_invoice")
    _shoot(page, "subscriptions", shop)

    # Dead letters: select, redrive, confirm; the worker delivers it.
    page.click("nav >> text=Dead letters")
    expect(page.locator("main table tbody tr")).to_have_count(1)
    _shoot(page, "dead-letters", shop)
    shop.fixed_file.touch()
    page.check(f'input[name="ids"][value="{shop.dead_letter}"]')
    page.click("text=Redrive selected")
    expect(page.locator("h1")).to_have_text("Redrive 1 dead letter?")
    _shoot(page, "confirm", shop)
    page.click("button >> text=Redrive 1 dead letter")
    expect(page.locator("[role=status]")).to_have_text("Redrove 1 dead letter.")
    wait_for(lambda: "send_invoice" in shop.log.read_text(), "the redriven delivery")
    page.goto(f"{served.base}/events/{shop.invoice}")
    expect(page.locator("section.delivery .state").first).to_have_text("done")

    # Every page reads on a phone: nothing wider than the screen.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    small = phone.new_page()
    for path, name in (("/", "overview-phone"), (f"/events/{shop.invoice}", "event-phone")):
        small.goto(served.base + path)
        expect(small.locator("main h1")).to_be_visible()
        assert small.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        _shoot(small, name, shop)
    for path in ("/events", "/dead-letters", "/subscriptions"):
        small.goto(served.base + path)
        assert small.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    phone.close()


def test_the_overview_changes_without_a_reload_when_an_event_is_published_from_the_shell(
    sqlite_shop: Shop, page: Any
) -> None:
    from playwright.sync_api import expect

    served = serve(sqlite_shop.url)
    page.goto(served.base + "/")
    expect(_card(page, "published")).to_have_text("3")
    page.evaluate("window.stillTheSamePage = true")

    sqlite_shop.publish("order.created", {"order_id": 1043})

    expect(_card(page, "published")).to_have_text("4")
    assert page.evaluate("window.stillTheSamePage") is True


def test_the_event_log_and_dead_letters_update_without_a_reload(
    sqlite_shop: Shop, page: Any
) -> None:
    from playwright.sync_api import expect

    served = serve(sqlite_shop.url)
    page.goto(served.base + "/events")
    expect(page.locator("main table tbody tr")).to_have_count(3)
    page.evaluate("window.stillTheSamePage = true")
    sqlite_shop.publish("invoice.requested", {"order_id": 1043})
    expect(page.locator("main table tbody tr")).to_have_count(4)

    page.click("nav >> text=Dead letters")
    page.evaluate("window.stillTheSamePage = true")
    expect(page.locator("main table tbody tr")).to_have_count(2)  # the worker failed it too
    sqlite_shop.publish("invoice.requested", {"order_id": 1044})
    expect(page.locator("main table tbody tr")).to_have_count(3)
    assert page.evaluate("window.stillTheSamePage") is True


def test_a_script_in_a_payload_is_shown_as_text_and_never_runs(
    sqlite_shop: Shop, page: Any
) -> None:
    from playwright.sync_api import expect

    served = serve(sqlite_shop.url)
    response = page.goto(f"{served.base}/events/{sqlite_shop.note}")
    expect(page.locator("pre.payload")).to_contain_text(SCRIPT_PAYLOAD.replace('"', '\\"'))
    assert page.title() != "pwned"
    assert page.locator("#pwned").count() == 0
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    page.goto(f"{served.base}/events")
    expect(page.locator("main table")).to_contain_text("note.added")
    assert page.title() != "pwned"


def test_with_a_token_the_login_form_signs_in_with_an_httponly_strict_cookie(
    sqlite_shop: Shop, page: Any
) -> None:
    from playwright.sync_api import expect

    served = serve(sqlite_shop.url, EVQ_DASHBOARD_TOKEN=TOKEN)
    response = page.goto(served.base + "/events")
    assert response.status == 401
    expect(page.locator("h1")).to_have_text("Sign in")
    assert page.locator("main table").count() == 0  # nothing of the queue shows

    page.fill("input[name=token]", "not-the-token-at-all")
    page.click("button >> text=Sign in")
    expect(page.locator("[role=alert]")).to_have_text("That is not the token.")

    page.fill("input[name=token]", TOKEN)
    page.click("button >> text=Sign in")
    expect(page.locator("h1")).to_have_text("Events")  # back where the reader was going
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["evq_dashboard_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert TOKEN not in session["value"]
    assert "evq_dashboard_session" not in page.evaluate("document.cookie")

    page.click("text=Sign out")
    expect(page.locator("h1")).to_have_text("Sign in")
    assert page.goto(served.base + "/").status == 401


def test_a_queue_that_is_not_there_yet_shows_a_banner_until_it_appears(
    sqlite_url: str, tmp_path: Path, page: Any
) -> None:
    from playwright.sync_api import expect

    served = serve(sqlite_url)
    response = page.goto(served.base + "/")
    assert response.status == 503
    expect(page.locator("[data-outage]")).to_contain_text("The queue is unreachable.")

    assert run_evq("publish", "order.created", EVQ_URL=sqlite_url).returncode == 0

    expect(page.locator("[data-outage]")).to_have_count(0)
    expect(_card(page, "published")).to_have_text("1")


def test_a_postgresql_server_that_goes_away_shows_a_banner_and_the_page_recovers(
    page: Any,
) -> None:
    from urllib.parse import urlsplit

    from playwright.sync_api import expect
    from postgres_server import drop_schema, fresh_schema, server_url
    from proxy import Proxy

    server = server_url()
    url = fresh_schema(server)
    parts = urlsplit(server)
    try:
        with Proxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
            assert run_evq("publish", "order.created", EVQ_URL=url).returncode == 0
            served = serve(proxy.url(url))
            page.goto(served.base + "/")
            expect(_card(page, "published")).to_have_text("1")
            with proxy.refusing():
                proxy.cut()
                expect(page.locator("[data-outage]")).to_contain_text("unreachable")
            expect(page.locator("[data-outage]")).to_have_count(0)
            expect(_card(page, "published")).to_have_text("1")
            assert re.search(r"\S", page.locator("main").inner_text())
    finally:
        drop_schema(server, url)
