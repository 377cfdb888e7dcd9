"""`evq` run with a pseudo-terminal as its stdout, as a person runs it."""

from __future__ import annotations

import shlex
import subprocess
import sys

from conftest import ROOT, evq_env


def run_in_terminal(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m evq ARGS` with a pseudo-terminal as stdout (through `script`)."""
    return _in_terminal([sys.executable, "-m", "evq", *args], env)


def run_in_terminal_for(seconds: float, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Like `run_in_terminal`, for a command that runs until interrupted: SIGINT after
    `seconds`, as a person's Ctrl-C."""
    return _in_terminal(
        ["timeout", "-s", "INT", str(seconds), sys.executable, "-m", "evq", *args], env
    )


def _in_terminal(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["script", "-qec", shlex.join(command), "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
        env=evq_env(TERM="xterm-256color", COLUMNS="160", NO_COLOR="1", **env),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
