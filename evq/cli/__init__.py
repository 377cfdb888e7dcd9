"""The `evq` command.

Each command lives in its own module and is imported only when it runs, so that
`evq publish` pays for click and sqlite3, not for the worker's machinery or rich.

Exit codes: 0 success, 2 bad usage or bad input (nothing was stored), 1 any other failure.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any

import click

from evq.errors import AppImportError, EvqError, InvalidInput

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

# command name -> "module:attribute", imported on demand.
COMMANDS = {
    "publish": "evq.cli.publish:publish",
    "worker": "evq.cli.worker:worker",
    "list-subscribers": "evq.cli.subscribers:list_subscribers",
    "dlq": "evq.cli.dlq:dlq",
    "status": "evq.cli.status:status",
    "events": "evq.cli.events:events",
    "show": "evq.cli.events:show",
    "replay": "evq.cli.replay:replay",
    "prune": "evq.cli.prune:prune",
    "migrate": "evq.cli.migrate:migrate",
    "dashboard": "evq.cli.dashboard:dashboard",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported when used (click's documented pattern)."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # Every argument and EVQ_* variable of every command is checked here, once, before
        # any is used: text that is not UTF-8 cannot be stored, printed or passed to SQLite.
        try:
            _check_utf8(args, os.environ)
        except InvalidInput as exc:
            raise EvqUsageError(exc) from None
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        # Library errors become one line on stderr and an exit code here, at the edge, for
        # `evq` and for click's CliRunner alike.
        try:
            return super().invoke(ctx)
        except AppImportError as exc:
            if exc.traceback:
                click.echo(exc.traceback, err=True)
            raise EvqUsageError(exc) from exc
        except EvqError as exc:
            raise EvqUsageError(exc) from exc
        except click.UsageError as exc:
            raise _one_line(exc) from exc

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attribute = self.lazy[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module_name), attribute)
            _show_envvars(command)
            return command
        return super().get_command(ctx, cmd_name)


def _show_envvars(command: click.Command) -> None:
    # Every option reads an EVQ_* variable (auto_envvar_prefix); say which in --help.
    for param in command.params:
        if isinstance(param, click.Option):
            param.show_envvar = True
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _show_envvars(sub)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "EVQ"},
)
@click.version_option(package_name="evq", prog_name="evq")
@click.option(
    "--django-settings",
    metavar="MODULE",
    envvar="DJANGO_SETTINGS_MODULE",
    show_envvar=True,
    help="Set Django up with this settings module first, as `manage.py evq` does (evq[django]).",
)
def cli(django_settings: str | None) -> None:
    """Durable publish/subscribe events on an embedded SQLite queue.

    Publish an event, then run a worker to deliver it to every subscribed receiver:

    \b
      evq publish user.created --payload '{"user_id": 42}'
      evq worker
      evq list-subscribers

    Exit codes: 0 success, 2 bad usage or bad input (nothing stored), 1 any other failure.
    """
    if django_settings:
        from evq.contrib.django.command import set_up

        set_up(django_settings)


def entry_point() -> None:
    """The `evq` command (its console script, and `python -m evq`): `main`, in a process of
    its own."""
    # What is imported by now lives until the process exits: frozen, it is never walked by the
    # garbage collector again, while the command runs nor at exit, when the interpreter's own
    # collections cost `evq publish` a tenth of its time. Only here, where the process is
    # evq's: `main` also runs inside other programs (`manage.py evq`, call_command, tests).
    # (CPython's collector can freeze; PyPy's cannot, and needs it less.)
    freeze = getattr(gc, "freeze", None)
    if freeze is not None:
        freeze()
    main()


def main(args: list[str] | None = None, *, prog_name: str = "evq") -> None:
    """Run the `evq` command and exit with its documented exit code."""
    try:
        cli.main(args=args, prog_name=prog_name)
    except BrokenPipeError:
        # `evq events | head`: the reader left; that is not an error. Point stdout at devnull
        # so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(EXIT_OK)


class EvqUsageError(click.ClickException):
    """An evq error on its way to stderr, with the exit code its kind documents."""

    def __init__(self, error: EvqError) -> None:
        super().__init__(str(error))
        self.exit_code = EXIT_BAD_INPUT if isinstance(error, InvalidInput) else EXIT_FAILURE  # type: ignore[misc]

    def format_message(self) -> str:
        # One error, one line: a message spread over lines would break log scrapers.
        return " ".join(part.strip() for part in self.message.splitlines() if part.strip())


def _one_line(error: click.UsageError) -> click.ClickException:
    """Return a click usage error as one `Error:` line (exit code 2), without click's usage
    lines; the help command it points to is named on that line. Help shown because a group
    was given no command is left as it is."""
    if isinstance(error, click.exceptions.NoArgsIsHelpError):
        return error
    message = error.format_message().removesuffix(".")
    if error.ctx is not None:
        message += f" (see '{error.ctx.command_path} --help')"
    return EvqUsageError(InvalidInput(message))


def _check_utf8(args: list[str], environ: Mapping[str, str]) -> None:
    """Raise `InvalidInput` for an argument or `EVQ_*` variable that is not valid UTF-8.

    Python hands such bytes over as lone surrogates ("surrogateescape"), which no encoder
    accepts later.
    """
    for arg in args:
        if not _is_utf8(arg):
            raise InvalidInput(f"the argument {_shown(arg)} is not valid UTF-8 text")
    for variable, value in environ.items():
        if variable.startswith("EVQ_") and not (_is_utf8(variable) and _is_utf8(value)):
            raise InvalidInput(
                f"the environment variable {_shown(variable)} is not valid UTF-8 text"
            )


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _shown(text: str) -> str:
    # The bytes a surrogate-escaped argument came from, as \xff escapes.
    try:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "backslashreplace").decode()
    return "'" + (shown if len(shown) <= 40 else shown[:39] + "…") + "'"
