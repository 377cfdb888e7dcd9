"""The dashboard's HTML: every page from records of the storage contract, every value escaped.

Pages use no inline script or style (the Content-Security-Policy forbids them): behaviour is in
`static/dashboard.js`, looks in `static/dashboard.css`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any, NamedTuple

from evq.storage.contract import (
    DELIVERY_STATES,
    DeadLetter,
    DeliveryRecord,
    EventRecord,
    MinuteCount,
    QueueStatus,
    WorkerRecord,
)
from evq.storage.rules import WORKER_SEEN_WITHIN_SECONDS

NAVIGATION = (
    ("/", "Overview"),
    ("/events", "Events"),
    ("/dead-letters", "Dead letters"),
    ("/subscriptions", "Subscriptions"),
)


class Page(NamedTuple):
    """What every page needs around its content."""

    prefix: str
    csrf: str
    read_only: bool
    signed_in_with_token: bool
    where: str


def layout(page: Page, *, title: str, active: str, content: str, live: int = 0) -> str:
    """Return a whole page: the header, the navigation and `content` in `<main>`, which the
    page's script refreshes every `live` milliseconds (0: never)."""
    links = "".join(
        f'<a href="{page.prefix}{path}"{" aria-current=page" if path == active else ""}>{label}</a>'
        for path, label in NAVIGATION
    )
    logout = (
        f'<form method="post" action="{page.prefix}/logout" class="logout">{csrf_field(page)}'
        '<button type="submit" class="link">Sign out</button></form>'
        if page.signed_in_with_token
        else ""
    )
    badge = '<span class="badge muted">read-only</span>' if page.read_only else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · evq</title>
<link rel="stylesheet" href="{page.prefix}/static/dashboard.css">
<script src="{page.prefix}/static/dashboard.js" defer></script>
</head>
<body>
<header class="top">
<a class="brand" href="{page.prefix}/">evq</a>
<nav>{links}</nav>
<span class="where" title="{escape(page.where)}">{escape(page.where)}</span>{badge}{logout}
</header>
<div id="banner" class="banner" hidden></div>
<main id="main" data-live="{live}">
{content}
</main>
</body>
</html>
"""


def csrf_field(page: Page) -> str:
    """The hidden field that carries the CSRF token in a form."""
    return f'<input type="hidden" name="csrf" value="{escape(page.csrf)}">'


# Overview


def overview(
    page: Page, status: QueueStatus, minutes: Sequence[MinuteCount], *, location: str
) -> str:
    """The numbers of `evq status`, the last hour's throughput, and the workers."""
    wait = "none" if status.oldest_due_at is None else _age(status.time, status.oldest_due_at)
    per_second = (status.delivered_last_minute + status.failed_last_minute) / 60
    cards = [
        ("Published", f"{status.published:,}", "events ever stored", ""),
        ("Awaiting dispatch", f"{status.awaiting_dispatch:,}", f"{status.delayed:,} delayed", ""),
        ("Pending", f"{status.pending:,}", f"{status.scheduled:,} scheduled", ""),
        ("Running", f"{status.running:,}", _plural(len(status.workers), "worker"), ""),
        ("Retrying", f"{status.retrying:,}", "after a failure", "warn" if status.retrying else ""),
        ("Dead", f"{status.dead:,}", "dead letters", "bad" if status.dead else ""),
        ("Oldest wait", wait, "the longest a due delivery waited", ""),
        (
            "Throughput",
            f"{per_second:.3g}/s",
            f"{status.failed_last_minute:,} failed in the last minute",
            "",
        ),
    ]
    html = [f'<h1>Overview</h1><p class="location muted">{escape(location)}</p>']
    html.extend(f'<p class="notice warn">{escape(w)}</p>' for w in status.warnings)
    html.append('<section class="cards">')
    for label, value, note, tone in cards:
        target = f' href="{page.prefix}/dead-letters"' if label == "Dead" else ""
        tag = "a" if target else "div"
        html.append(
            f'<{tag} class="card {tone}"{target} data-card="{escape(label.lower())}">'
            f'<span class="label">{label}</span><span class="value">{escape(value)}</span>'
            f'<span class="note">{escape(note)}</span></{tag}>'
        )
    html.append("</section>")
    html.append("<section><h2>Deliveries in the last hour</h2>")
    html.append(chart(minutes, now=status.time))
    html.append("</section>")
    html.append(
        f"<section><h2>Workers</h2>{workers_table(status.workers, now=status.time)}</section>"
    )
    html.append(f'<p class="muted small">As of {when(status.time)}.</p>')
    return "\n".join(html)


def chart(minutes: Sequence[MinuteCount], *, now: float) -> str:
    """A bar per minute of the last hour: delivered and failed, stacked, as inline SVG."""
    first = (int(now) // 60 - 59) * 60
    by_minute = {int(m.minute): m for m in minutes if m.minute >= first}
    highest = max((m.delivered + m.failed for m in by_minute.values()), default=0)
    width, height, bar = 600, 120, 10
    bars = []
    for index in range(60):
        minute = first + index * 60
        counts = by_minute.get(minute)
        if counts is None or highest == 0:
            continue
        x = index * bar
        done_h = counts.delivered / highest * (height - 4)
        fail_h = counts.failed / highest * (height - 4)
        tip = escape(
            f"{_hhmm(minute)} UTC: {counts.delivered:,} delivered, {counts.failed:,} failed"
        )
        bars.append(
            f"<g><title>{tip}</title>"
            f'<rect class="done" x="{x + 1}" y="{height - done_h:.1f}" width="{bar - 2}"'
            f' height="{done_h:.1f}"></rect>'
            f'<rect class="failed" x="{x + 1}" y="{height - done_h - fail_h:.1f}"'
            f' width="{bar - 2}" height="{fail_h:.1f}"></rect></g>'
        )
    total = sum(m.delivered for m in by_minute.values())
    failed = sum(m.failed for m in by_minute.values())
    empty = (
        ""
        if bars
        else '<text x="300" y="64" text-anchor="middle" class="empty">'
        "No deliveries in the last hour</text>"
    )
    return (
        f'<figure class="chart"><svg viewBox="0 0 {width} {height}" preserveAspectRatio="none"'
        f' role="img" aria-label="Deliveries per minute over the last hour">'
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" class="axis"></line>'
        f"{''.join(bars)}{empty}</svg>"
        f'<figcaption><span>60 min ago</span><span><i class="key done"></i>{total:,} delivered'
        f' <i class="key failed"></i>{failed:,} failed · peak {highest:,}/min</span>'
        f"<span>now</span></figcaption></figure>"
    )


def workers_table(workers: Sequence[WorkerRecord], *, now: float) -> str:
    """The workers seen lately: id, host, pid, age, last heartbeat, receivers."""
    if not workers:
        return (
            f'<p class="empty">No worker seen in the last {int(WORKER_SEEN_WITHIN_SECONDS)} s.'
            " Start one with <code>evq worker</code>.</p>"
        )
    rows = []
    for worker in workers:
        info = worker_info(worker)
        receivers = info.get("receivers") or []
        rows.append(
            "<tr>"
            f'<td class="mono">{escape(worker.id)}</td>'
            f"<td>{escape(worker.hostname)}</td>"
            f'<td class="num">{worker.pid}</td>'
            f"<td>{when(worker.started_at, text=_age(now, worker.started_at))}</td>"
            f'<td class="wide">{when(worker.seen_at, text=_age(now, worker.seen_at))}</td>'
            f'<td class="num">{len(receivers)}</td>'
            "</tr>"
        )
    return _table(["Worker", "Host", "PID", "Up for", "Seen", "Receivers"], rows, wide=(4,))


# Events


class EventFilters(NamedTuple):
    """The event log's filters as the user typed them."""

    name: str = ""
    since: str = ""
    until: str = ""
    status: str = ""


def event_log(
    page: Page,
    events: Sequence[EventRecord],
    filters: EventFilters,
    *,
    older: str | None,
    paged: bool,
) -> str:
    """The event log: filters, one row per event, and the link to the next (older) page."""
    options = "".join(
        f'<option value="{s}"{" selected" if s == filters.status else ""}>{s}</option>'
        for s in DELIVERY_STATES
    )
    form = f"""<form class="filters" method="get" action="{page.prefix}/events">
<label>Name <input name="name" value="{escape(filters.name)}" placeholder="order.*"></label>
<label>Since <input name="since" value="{escape(filters.since)}"
 placeholder="2h, 2024-05-01"></label>
<label>Until <input name="until" value="{escape(filters.until)}" placeholder="now"></label>
<label>Status <select name="status"><option value="">any</option>{options}</select></label>
<button type="submit">Filter</button>
</form>"""
    rows = [
        "<tr>"
        f"<td>{when(e.published_at)}</td>"
        f'<td><a href="{page.prefix}/events/{escape(e.id)}">{escape(e.name)}</a></td>'
        f"<td>{state_badge(e.status)}</td>"
        f'<td class="wide">{escape(counts_summary(e.counts))}</td>'
        f'<td class="mono wide">{escape(e.id)}</td>'
        "</tr>"
        for e in events
    ]
    table = (
        _table(["Published", "Event", "Status", "Deliveries", "ID"], rows, wide=(3, 4))
        if rows
        else '<p class="empty">No events match.</p>'
    )
    current = {k: v for k, v in filters._asdict().items() if v}
    pager = []
    if paged:
        pager.append(f'<a href="{_url(page, "/events", current)}">« Newest</a>')
    if older is not None:
        pager.append(
            f'<a href="{_url(page, "/events", {**current, "before": older})}" rel="next">'
            "Older »</a>"
        )
    return f'<h1>Events</h1>{form}{table}<nav class="pager">{"".join(pager)}</nav>'


def event_page(page: Page, event: EventRecord, payload: Any) -> str:
    """One event: its attributes, its payload pretty-printed, every delivery and attempt."""
    facts = [
        ("ID", f'<span class="mono">{escape(event.id)}</span>'),
        ("Status", state_badge(event.status)),
        ("Published", when(event.published_at)),
    ]
    if event.due_at is not None:
        facts.append(("Due", when(event.due_at)))
    if event.dispatched_at is not None:
        facts.append(("Dispatched", when(event.dispatched_at)))
    if event.key is not None:
        facts.append(("Key", f'<span class="mono">{escape(event.key)}</span>'))
    facts.append(("Deliveries", escape(counts_summary(event.counts))))
    shown = (
        payload if isinstance(payload, str) else json.dumps(payload, indent=2, ensure_ascii=False)
    )
    html = [
        f"<h1>{escape(event.name)}</h1>",
        _facts(facts),
        f'<h2>Payload</h2><pre class="payload">{escape(shown)}</pre>',
        "<h2>Deliveries</h2>",
    ]
    if not event.deliveries:
        html.append(
            '<p class="empty">No deliveries yet: a worker fans the event out to its receivers.</p>'
        )
    html.extend(delivery_section(page, d) for d in event.deliveries)
    return "\n".join(html)


def delivery_section(page: Page, delivery: DeliveryRecord) -> str:
    """One delivery: receiver, state, attempts, each attempt's error, the last traceback."""
    facts = [
        ("State", state_badge(delivery.state) + (" (replay)" if delivery.replay else "")),
        ("Attempts", f"{delivery.attempts} ({delivery.failures} failed)"),
        ("Created", when(delivery.created_at)),
    ]
    if delivery.due_at is not None and delivery.state in ("scheduled", "retrying", "pending"):
        facts.append(("Due", when(delivery.due_at)))
    if delivery.finished_at is not None:
        facts.append(("Finished", when(delivery.finished_at)))
    if delivery.worker:
        facts.append(("Worker", f'<span class="mono">{escape(delivery.worker)}</span>'))
    action = ""
    if delivery.state == "dead" and not page.read_only:
        action = (
            f'<form method="post" action="{page.prefix}/dead-letters/redrive">{csrf_field(page)}'
            f'<input type="hidden" name="ids" value="{escape(delivery.id)}">'
            '<button type="submit">Redrive…</button></form>'
        )
    rows = [
        "<tr>"
        f'<td class="num">{a.attempt}</td>'
        f"<td>{state_badge(a.outcome)}</td>"
        f"<td>{when(a.started_at) if a.started_at is not None else '&ndash;'}</td>"
        f'<td class="num">{_took(a.started_at, a.finished_at)}</td>'
        f'<td class="mono wide">{escape(a.worker or "")}</td>'
        f'<td class="error">{escape(a.error or "")}</td>'
        "</tr>"
        for a in delivery.history
    ]
    history = (
        _table(["Attempt", "Outcome", "Started", "Took", "Worker", "Error"], rows, wide=(4,))
        if rows
        else '<p class="empty">No attempt finished yet.</p>'
    )
    traceback = (
        f'<details><summary>Last traceback</summary><pre class="traceback">'
        f"{escape(delivery.traceback)}</pre></details>"
        if delivery.traceback
        else ""
    )
    return (
        f'<section class="delivery" id="delivery-{escape(delivery.id)}">'
        f'<h3><span class="mono">{escape(delivery.receiver)}</span>'
        f' <small class="muted">delivery {escape(delivery.id)}</small></h3>'
        f"{action}{_facts(facts)}{history}{traceback}</section>"
    )


# Dead letters


def dead_letters(
    page: Page,
    letters: Sequence[DeadLetter],
    *,
    receiver: str,
    name: str,
    message: str | None,
    limit: int,
) -> str:
    """The dead letters, with filters, checkboxes and the redrive and purge buttons."""
    receivers = sorted({letter.receiver for letter in letters})
    datalist = "".join(f'<option value="{escape(r)}"></option>' for r in receivers)
    form = f"""<form class="filters" method="get" action="{page.prefix}/dead-letters">
<label>Receiver <input name="receiver" list="receivers" value="{escape(receiver)}"
 placeholder="module:function"></label>
<datalist id="receivers">{datalist}</datalist>
<label>Name <input name="name" value="{escape(name)}" placeholder="order.*"></label>
<button type="submit">Filter</button>
</form>"""
    html = ["<h1>Dead letters</h1>"]
    if message:
        html.append(f'<p class="notice ok" role="status">{escape(message)}</p>')
    html.append(form)
    if not letters:
        html.append('<p class="empty">No dead letters. 🎉</p>')
        return "\n".join(html)
    select = (
        "" if page.read_only else '<input type="checkbox" data-select-all aria-label="Select all">'
    )
    rows = []
    for letter in letters:
        box = (
            ""
            if page.read_only
            else f'<input type="checkbox" name="ids" value="{escape(letter.id)}"'
            f' aria-label="Select dead letter {escape(letter.id)}">'
        )
        rows.append(
            "<tr>"
            + (f"<td>{box}</td>" if not page.read_only else "")
            + f"<td>{when(letter.dead_at)}</td>"
            f'<td><a href="{page.prefix}/events/{escape(letter.event_id)}'
            f'#delivery-{escape(letter.id)}">'
            f"{escape(letter.name)}</a></td>"
            f'<td class="mono">{escape(letter.receiver)}</td>'
            f'<td class="num wide">{letter.attempts}</td>'
            f'<td class="error wide">{escape(first_line(letter.error))}</td>'
            "</tr>"
        )
    headers = ["Dead since", "Event", "Receiver", "Attempts", "Last error"]
    wide = (3, 4)
    if not page.read_only:
        headers = [select, *headers]
        wide = (4, 5)
    table = _table(headers, rows, wide=wide, escape_headers=False)
    more = (
        f'<p class="muted small">Showing the newest {limit}; filter to see others.</p>'
        if len(letters) >= limit
        else ""
    )
    if page.read_only:
        html.extend([table, more])
    else:
        html.append(
            f'<form method="post" class="selection">{csrf_field(page)}{table}{more}'
            '<div class="actions">'
            f'<button type="submit" formaction="{page.prefix}/dead-letters/redrive">'
            "Redrive selected…</button>"
            f'<button type="submit" class="danger" formaction="{page.prefix}/dead-letters/purge">'
            "Purge selected…</button>"
            "</div></form>"
        )
    return "\n".join(html)


def confirm(page: Page, action: str, letters: Sequence[DeadLetter]) -> str:
    """Ask before redriving or purging the chosen dead letters."""
    count = len(letters)
    noun = "dead letter" if count == 1 else "dead letters"
    what = (
        "They go back in the queue, due now, with a fresh attempt count."
        if action == "redrive"
        else "They are deleted for good, with their history."
    )
    hidden = "".join(
        f'<input type="hidden" name="ids" value="{escape(letter.id)}">' for letter in letters
    )
    items = "".join(
        f'<li><span class="mono">{escape(letter.receiver)}</span> ← {escape(letter.name)}'
        f' <small class="muted">{escape(letter.id)}</small></li>'
        for letter in letters[:50]
    )
    if count > 50:
        items += f"<li>… and {count - 50} more</li>"
    verb = action.capitalize()
    return (
        f'<h1>{verb} {count} {noun}?</h1><p>{what}</p><ul class="chosen">{items}</ul>'
        f'<form method="post" action="{page.prefix}/dead-letters/{action}" class="actions">'
        f'{csrf_field(page)}{hidden}<input type="hidden" name="confirm" value="yes">'
        f'<button type="submit" class="{"danger" if action == "purge" else ""}">'
        f"{verb} {count} {noun}</button>"
        f'<a class="button secondary" href="{page.prefix}/dead-letters">Cancel</a></form>'
    )


# Subscriptions


def subscriptions(page: Page, workers: Sequence[WorkerRecord], *, now: float) -> str:
    """The receivers the workers reported, and which workers run each."""
    html = [
        "<h1>Subscriptions</h1>",
        '<p class="muted">As the workers seen in the last'
        f" {int(WORKER_SEEN_WITHIN_SECONDS)} s reported them.</p>",
    ]
    by_receiver: dict[str, list[WorkerRecord]] = {}
    for worker in workers:
        for receiver in worker_info(worker).get("receivers") or []:
            by_receiver.setdefault(str(receiver), []).append(worker)
    if not by_receiver:
        html.append(
            '<p class="empty">No worker reported any receiver. Start one with'
            " <code>evq worker</code>; <code>evq list-subscribers</code> lists what the"
            " code subscribes.</p>"
        )
        return "\n".join(html)
    rows = [
        "<tr>"
        f'<td class="mono">{escape(receiver)}</td>'
        f'<td class="num">{len(running)}</td>'
        f'<td class="wide">{escape(", ".join(f"{w.hostname}:{w.pid}" for w in running))}</td>'
        f'<td><a href="{_url(page, "/dead-letters", {"receiver": receiver})}">dead letters</a></td>'
        "</tr>"
        for receiver, running in sorted(by_receiver.items())
    ]
    html.append(_table(["Receiver", "Workers", "Running on", ""], rows, wide=(2,)))
    return "\n".join(html)


# Login and errors


def login(page: Page, *, next_path: str, failed: bool) -> str:
    """The form that asks for the token."""
    error = '<p class="notice bad" role="alert">That is not the token.</p>' if failed else ""
    return f"""<h1>Sign in</h1>
<p>This dashboard asks for the token it was started with (EVQ_DASHBOARD_TOKEN).</p>
{error}
<form method="post" action="{page.prefix}/login" class="login">{csrf_field(page)}
<input type="hidden" name="next" value="{escape(next_path)}">
<label>Token <input type="password" name="token" autocomplete="current-password"
 required autofocus></label>
<button type="submit">Sign in</button>
</form>"""


def problem(status: int, message: str) -> str:
    """A refused request: what went wrong, in one sentence."""
    return f'<h1>{status}</h1><p class="notice bad" role="alert">{escape(message)}</p>'


def unreachable(message: str) -> str:
    """The banner shown while the queue cannot be read."""
    return (
        '<div class="notice bad outage" role="alert" data-outage>'
        f"<strong>The queue is unreachable.</strong> {escape(message)}"
        " This page retries by itself.</div>"
    )


# Pieces


def when(timestamp: float | None, *, text: str | None = None) -> str:
    """A time for people: shown in the viewer's local time (by the page's script), UTC on
    hover; `text` replaces the time shown (an age, say)."""
    if timestamp is None:
        return "&ndash;"
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        return escape(str(timestamp))
    utc = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    local = "" if text is not None else " data-local"
    return (
        f'<time datetime="{moment.isoformat()}" title="{utc}"{local}>{escape(text or utc)}</time>'
    )


def state_badge(state: str) -> str:
    """A delivery state or attempt outcome as a coloured badge."""
    return f'<span class="state {escape(state)}">{escape(state)}</span>'


def counts_summary(counts: Any) -> str:
    """Delivery counts as "2 done, 1 dead" (zero counts left out)."""
    return ", ".join(f"{counts[s]} {s}" for s in DELIVERY_STATES if counts.get(s)) or "none"


def first_line(text: str | None) -> str:
    """The first line of an error, at most 160 characters."""
    lines = (text or "").strip().splitlines()
    return lines[0][:160] if lines else ""


def worker_info(worker: WorkerRecord) -> dict[str, Any]:
    """What a worker told about itself (`info`), or nothing if it is not a JSON object."""
    try:
        info = json.loads(worker.info)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _table(
    headers: Sequence[str],
    rows: Iterable[str],
    *,
    wide: Sequence[int] = (),
    escape_headers: bool = True,
) -> str:
    cells = "".join(
        f"<th{' class=wide' if index in wide else ''}>{escape(h) if escape_headers else h}</th>"
        for index, h in enumerate(headers)
    )
    body = "".join(rows)
    return (
        f'<div class="scroll"><table><thead><tr>{cells}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _facts(facts: Sequence[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)
    return f'<dl class="facts">{items}</dl>'


def _url(page: Page, path: str, params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    query = urlencode(params)
    return escape(page.prefix + path + ("?" + query if query else ""))


def _age(now: float, then: float) -> str:
    from evq.durations import format_seconds

    seconds = max(0.0, now - then)
    return "just now" if seconds < 1 else format_seconds(seconds)


def _took(started: float | None, finished: float) -> str:
    from evq.durations import format_seconds

    return "&ndash;" if started is None else format_seconds(max(0.0, finished - started))


def _hhmm(minute: float) -> str:
    return datetime.fromtimestamp(minute, UTC).strftime("%H:%M")


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
