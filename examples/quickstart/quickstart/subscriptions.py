"""The quickstart's subscriptions: `evq worker` imports this module through the entry point
`quickstart = "quickstart.subscriptions"` in this package's pyproject.toml."""

from __future__ import annotations

import evq


@evq.subscriber("user.created", retries=3, timeout=10)
def send_welcome_email(event: evq.Event, /) -> None:
    """Runs once for every `user.created` event (again only if it fails)."""
    print(
        f"[welcome] sending a welcome email to {event.payload['email']} (event {event.id})",
        flush=True,
    )


def audit_log(event: evq.Event, /) -> None:
    """Runs for every `user.*` event, independently of the welcome email."""
    print(f"[audit]   {event.published_at:%H:%M:%S} {event.name} {event.payload}", flush=True)


evq.subscribe("user.*", receiver=audit_log)
