"""The `evq` command as a whole: help, version, environment variables, completion."""

from __future__ import annotations

import re

import click
from click.testing import CliRunner
from conftest import evq_env, run_evq

from evq.cli import COMMANDS, cli


def all_commands() -> list[tuple[str, click.Command]]:
    context = click.Context(cli)
    found = []
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None
        found.append((name, command))
        if isinstance(command, click.Group):
            found.extend((f"{name} {sub}", c) for sub, c in command.commands.items())
    return found


def test_every_option_of_every_command_reads_an_evq_variable_shown_in_help() -> None:
    runner = CliRunner()
    for name, command in all_commands():
        help_text = runner.invoke(cli, [*name.split(), "--help"], terminal_width=200).output
        options = [p for p in command.params if isinstance(p, click.Option)]
        shown = re.findall(r"env var: (EVQ_[A-Z_]+)", help_text)
        assert len(shown) == len(options), (name, shown)
        assert "Show this message and exit" in help_text


def test_an_option_is_read_from_its_environment_variable(queue_url: str) -> None:
    result = run_evq(
        "publish", "a.b", EVQ_PUBLISH_PAYLOAD='{"from": "env"}', EVQ_PUBLISH_AS_JSON="1"
    )
    assert result.returncode == 0, result.stderr
    assert '"name": "a.b"' in result.stdout


def test_version_and_python_dash_m() -> None:
    result = run_evq("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"evq, version \d+\.\d+\.\d+\n", result.stdout)


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = run_evq("--help")
    for name in COMMANDS:
        assert name in result.stdout
    assert "Exit codes" in result.stdout


def test_shell_completion_completes_commands_and_options() -> None:
    import subprocess
    import sys

    def complete(words: str) -> str:
        env = evq_env(
            _EVQ_COMPLETE="bash_complete",
            COMP_WORDS=words,
            COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        )
        return subprocess.run(
            [sys.executable, "-m", "evq"], env=env, capture_output=True, text=True
        ).stdout

    assert "publish" in complete("evq pu")
    assert "--worker-type" in complete("evq worker --worker-t")
    assert "process" in complete("evq worker --worker-type ")


def test_the_public_api_lists_what_it_loads() -> None:
    import evq

    assert set(evq.__all__) == {*evq._PUBLIC, "__version__"}
    for name in evq.__all__:
        assert getattr(evq, name) is not None
