"""`manage.py evq ...`: every `evq` command, with Django set up (see `evq --help`)."""

from __future__ import annotations

import argparse
from typing import Any, ClassVar

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Run an evq command (worker, status, events, ...) with Django set up."
    requires_system_checks: ClassVar[list[str]] = []  # evq reports its own settings' mistakes

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.add_argument("args", nargs=argparse.REMAINDER)
        return parser

    def run_from_argv(self, argv: list[str]) -> None:
        # `manage.py evq ARGS`: evq's own parser, help, output and exit codes.
        _run(argv[2:], f"{argv[0].rsplit('/', 1)[-1]} {argv[1]}")

    def handle(self, *args: str, **options: Any) -> None:
        # `call_command("evq", "worker", "--burst")`: an exit code other than 0 raises.
        try:
            _run(list(args), "manage.py evq")
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise CommandError(
                    f"evq {' '.join(args)} exited with {exc.code}",
                    returncode=exc.code if isinstance(exc.code, int) else 1,
                ) from None


def _run(args: list[str], prog_name: str) -> None:
    import click

    from evq.cli import EXIT_BAD_INPUT, main
    from evq.contrib.django.command import use_django_queue
    from evq.errors import EvqError

    try:
        use_django_queue()
    except EvqError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(EXIT_BAD_INPUT) from None
    main(args, prog_name=prog_name)
