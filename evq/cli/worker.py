"""`evq worker`: deliver published events to the subscribed receivers."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, ClassVar

import click

from evq import config
from evq.cli.options import Duration, app_option, apply_settings, receiver_option, url_option

if TYPE_CHECKING:
    from evq.metrics import WorkerMetrics


@click.command()
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1, max=256),
    default=1,
    show_default=True,
    show_envvar=True,
    help="Number of worker threads or processes.",
)
@click.option(
    "--worker-type",
    "-k",
    type=click.Choice(["thread", "process"]),
    default="thread",
    show_default=True,
    show_envvar=True,
    help="Run receivers in threads, or in forked processes (for CPU-bound receivers).",
)
@click.option(
    "--burst",
    is_flag=True,
    show_envvar=True,
    help="Deliver everything that is due, then exit 0 (for cron, CI and tests); exit 1 if the"
    " queue cannot be used for 10 s.",
)
@click.option(
    "--lease",
    "lease_seconds",
    type=Duration(minimum=config.MIN_LEASE_SECONDS, maximum=config.MAX_LEASE_SECONDS),
    default=f"{config.DEFAULT_LEASE_SECONDS:g}s",
    show_default=True,
    envvar="EVQ_LEASE",
    show_envvar=True,
    help="How long a delivery stays taken by this worker without a heartbeat before another"
    " may run it, 1s to 1d. A subscription's timeout= overrides it.",
)
@click.option(
    "--shutdown-timeout",
    type=Duration(maximum=86400.0),
    default=f"{config.DEFAULT_SHUTDOWN_TIMEOUT_SECONDS:g}s",
    show_default=True,
    show_envvar=True,
    help="On SIGTERM, SIGINT or SIGHUP, wait this long for running receivers, then give their"
    " deliveries back to the queue; at most 1d.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1, max=10_000),
    default=config.DEFAULT_PREFETCH,
    show_default=True,
    show_envvar=True,
    help="Deliveries leased per transaction.",
)
@click.option(
    "--entry-points/--no-entry-points",
    default=True,
    show_default=True,
    show_envvar=True,
    help="Load subscriptions of installed packages (the evq.subscriptions entry points).",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    show_envvar=True,
    help="Log only retries, dead letters and errors, not every delivery.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    envvar="EVQ_WORKER_METRICS_PORT",
    show_envvar=True,
    metavar="PORT",
    help="Serve Prometheus metrics on this port, on every interface (needs the prometheus"
    " extra: pip install 'evq[prometheus]').",
)
@click.option(
    "--log-format",
    type=click.Choice(["plain", "json"]),
    default="plain",
    show_default=True,
    envvar="EVQ_LOG_FORMAT",
    show_envvar=True,
    help="plain: lines for people; json: one JSON object per line, for log collectors.",
)
@receiver_option
@app_option
@url_option
def worker(
    workers: int,
    worker_type: str,
    burst: bool,
    lease_seconds: float,
    shutdown_timeout: float,
    prefetch: int,
    entry_points: bool,
    quiet: bool,
    metrics_port: int | None,
    log_format: str,
    receivers: tuple[str, ...],
    apps: tuple[str, ...],
    url: str,
) -> None:
    """Deliver events to every subscribed receiver, each on its own, with retries.

    Subscriptions come from installed packages (the `evq.subscriptions` entry-point group) and
    from --app modules. SIGTERM, SIGINT or SIGHUP stops gracefully: no new deliveries are taken,
    running receivers get --shutdown-timeout to finish, then their deliveries go back to the
    queue. A second signal stops at once. With no subscription loaded, it refuses to start
    (exit code 2): it would mark every event delivered to nobody.

    With --receiver, it runs only the matching receivers, so that a slow or heavy receiver
    can have workers of its own: it still fans events out to every loaded subscription, but
    leaves the deliveries of the other receivers for other workers (never dead letters). A
    pattern that matches no loaded receiver exits with code 2.

    \b
      evq worker --app shop.events --receiver 'shop.reports:*'
      evq worker --app shop.events --receiver 'shop.email:send_*' --receiver shop.sms:send
    """
    from evq import subscriptions
    from evq.durations import format_seconds
    from evq.storage import open_queue

    settings = apply_settings(url)
    # The port first: if it cannot be served, the command stops before it touches the queue.
    metrics = None if metrics_port is None else _serve_metrics(metrics_port, settings.url)
    _configure_logging(quiet, log_format)
    loaded = subscriptions.load(subscriptions.split_apps(apps), entry_points=entry_points)
    selected = subscriptions.select_receivers(receivers)
    # Create the queue now (or find that it cannot be used), with a clear error if not.
    queue = open_queue(settings.url, role="work")
    queue.check()
    location = queue.location
    warnings = queue.status().warnings
    queue.close()
    from evq.worker import WorkerOptions, create_consumer

    options = WorkerOptions(
        url=settings.url,
        workers=workers,
        worker_type=worker_type,
        burst=burst,
        lease_seconds=lease_seconds,
        shutdown_timeout=shutdown_timeout,
        prefetch=prefetch,
        retention_seconds=settings.retention_seconds,
        receivers=receivers,
    )
    consumer = create_consumer(options)
    log = logging.getLogger("evq.worker")
    served = subscriptions.subscriptions()
    log.info(
        "evq worker %s: queue %s, %d %s worker%s, lease %s%s",
        _version(),
        location,
        workers,
        worker_type,
        "" if workers == 1 else "s",
        format_seconds(lease_seconds),
        ", burst" if burst else "",
    )
    for warning in warnings:
        log.warning("%s", warning)
    for module in loaded:
        log.info("loaded %s (%s)", module.module, module.source)
    if selected is not None:
        log.info(
            "running %d of %d receivers (--receiver %s); the others' deliveries are left for"
            " other workers",
            len(selected),
            len({s.name for s in served}),
            " ".join(receivers),
        )
    for subscription in served:
        left = "" if selected is None or subscription.name in selected else "  (not run here)"
        log.info("  %s -> %s%s", subscription.pattern, subscription.name, left)
    if metrics is not None:
        metrics.attach(consumer.huey)  # before run() forks any process worker
        log.info("serving Prometheus metrics on port %d", metrics_port)
    started = time.monotonic()
    consumer.run()
    log.info(
        "stopped after %s, %d deliveries",
        format_seconds(time.monotonic() - started),
        consumer.delivered,
    )
    fatal = consumer.huey.storage.outage.fatal
    if fatal is not None:
        from evq.errors import StorageError

        if log_format == "json":  # a log collector gets this line too, as JSON
            log.critical("the worker stopped: %s", fatal)
            sys.exit(1)

        raise StorageError(f"the worker stopped: {fatal}")


def _serve_metrics(port: int, url: str) -> WorkerMetrics:
    """Serve Prometheus metrics on `port` until the command ends."""
    from evq.metrics import WorkerMetrics

    metrics = WorkerMetrics(url=url)
    metrics.serve(port)
    click.get_current_context().call_on_close(metrics.close)
    return metrics


def _version() -> str:
    from evq import __version__

    return __version__


_DIM, _RESET = "\033[2m", "\033[0m"


class _Formatter(logging.Formatter):
    """Short local times for a person at a terminal (coloured unless NO_COLOR); full UTC
    timestamps and level names when redirected to a file or a log collector."""

    COLORS: ClassVar[dict[int, str]] = {logging.WARNING: "\033[33m", logging.ERROR: "\033[31m"}

    def __init__(self, *, terminal: bool, color: bool) -> None:
        super().__init__()
        self.terminal = terminal
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if not self.terminal:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            return f"{stamp}.{int(record.msecs):03d}Z {record.levelname} {message}"
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        if not self.color:
            return f"{stamp} {message}"
        color = self.COLORS.get(record.levelno, "")
        reset = _RESET if color else ""
        return f"{_DIM}{stamp}{_RESET} {color}{message}{reset}"


def _configure_logging(quiet: bool, log_format: str = "plain") -> None:
    from evq.cli.output import is_terminal, use_color

    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from evq.cli.log_format import JSONFormatter

        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(
            _Formatter(terminal=is_terminal(sys.stderr), color=use_color(sys.stderr))
        )
    for name in ("evq", "huey"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    logging.getLogger("evq").setLevel(logging.WARNING if quiet else logging.INFO)
    # huey's own messages ("Executing ...", its startup banner) would repeat evq's.
    logging.getLogger("huey").setLevel(logging.WARNING)
