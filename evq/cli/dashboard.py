"""`evq dashboard`: the web dashboard, served on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import os

import click

from evq.cli.options import url_option
from evq.errors import InvalidInput, QueueNotFound, StorageError

#: The token every request must carry; required to serve on another host than 127.0.0.1.
TOKEN_VARIABLE = "EVQ_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH = 16


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Listen on this address. Any other than this machine's own (127.0.0.1, ::1,"
    " localhost) needs EVQ_DASHBOARD_TOKEN.",
)
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=8484,
    show_default=True,
    help="Listen on this port (0: any free one).",
)
@click.option("--read-only", is_flag=True, help="Hide and refuse redrive and purge.")
@url_option
def dashboard(host: str, port: int, read_only: bool, url: str) -> None:
    """Serve the web dashboard: status, event log, events, dead letters and subscriptions.

    It listens on http://127.0.0.1:8484 and opens nothing else; Ctrl-C stops it. With
    EVQ_DASHBOARD_TOKEN set (at least 16 characters), every request must carry the token: the
    login form sets a cookie, scripts send `Authorization: Bearer TOKEN`. Without it, only
    127.0.0.1 is served. See docs/dashboard.md, which also shows how to mount the dashboard
    in Django, Flask or FastAPI.
    """
    from evq.dashboard import create_app
    from evq.dashboard.server import is_loopback, make

    token = os.environ.get(TOKEN_VARIABLE) or None
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise InvalidInput(
            f"{TOKEN_VARIABLE} is too short: use at least {MIN_TOKEN_LENGTH} characters"
            " (python -c 'import secrets; print(secrets.token_urlsafe())' makes one)"
        )
    if token is None and not is_loopback(host):
        raise InvalidInput(
            f"refusing to serve the dashboard on {host} without a token: set {TOKEN_VARIABLE}"
            " (or keep the default --host 127.0.0.1)"
        )
    _check_queue(url)
    app = create_app(url, token=token, read_only=read_only, local_only=token is None)
    try:
        server = make(app, host, port)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    shown_host = f"[{host}]" if ":" in host else host
    address = f"http://{shown_host}:{server.server_port}/"
    mode = " (read-only)" if read_only else ""
    click.echo(f"evq dashboard{mode} of {app.url} at {address} (Ctrl-C stops it)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _check_queue(url: str) -> None:
    """Fail at once on a URL evq cannot use; only warn when the queue is not there yet or not
    reachable now (the dashboard shows it, and recovers)."""
    from evq.storage import open_queue

    try:
        open_queue(url, role="inspect", create=False).close()
    except QueueNotFound as exc:
        click.echo(f"Warning: {exc}; the dashboard shows it until the queue appears", err=True)
    except StorageError as exc:
        click.echo(f"Warning: {exc}; the dashboard retries", err=True)
