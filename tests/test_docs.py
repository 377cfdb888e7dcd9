"""The command examples in README.md and docs/*.md parse against the real `evq` command.

Every `evq ...` line in a fenced `sh`, `bash` or `console` block is parsed by click, through
the same command tree `evq` runs (subcommand by subcommand, options, arguments and their
types), without running it; an option that was renamed or removed, a subcommand that no longer
exists or a value of the wrong type fails here with the file and line of the example. Every
`EVQ_*` variable the documents name must be one evq reads, so a typo fails too.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from evq.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}

# Examples that do not parse as written, on purpose (a placeholder such as `<id>` or `...`
# where a value goes): (document, the shell line as written) -> why. Each must still be in
# its document (see the test below), so the list cannot outlive its examples. None today.
SKIPPED: dict[tuple[str, str], str] = {}

# Shell words that end one command and start another; only the `evq` parts are checked.
SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")"}
REDIRECTIONS = {"<", ">", ">>", ">|", "<<<", "&>", ">&", "<&"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
FILE_DESCRIPTOR = re.compile(r"(?<!\S)\d+(?=[<>])")  # the 2 of `2>&1`, as the shell reads it
PLACEHOLDER = re.compile(r"<[A-Za-z_][A-Za-z0-9_.:-]*>")
# `EVQ_URL`, `_EVQ_COMPLETE`; not `EVQ_*` or `EVQ_<COMMAND>_<OPTION>`.
VARIABLE = re.compile(r"(?<![A-Za-z0-9])_?EVQ_[A-Z0-9_]*[A-Z0-9]")


@dataclass(frozen=True)
class Example:
    document: str  # relative to the repository
    line: int  # where the shell line starts
    text: str  # the shell line as written, continuations joined
    args: tuple[str, ...]  # what follows `evq`

    def where(self) -> str:
        return f"{self.document}:{self.line}: {self.text!r}"


def code_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """Yield (language, line number of the first line, lines) for each fenced code block."""
    language: str | None = None
    start = 0
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = re.match(r"\s*(```+|~~~+)\s*([\w+-]*)", line)
        if language is None:
            if fence:
                language, start, lines = fence.group(2).lower(), number + 1, []
        elif fence and not fence.group(2):
            yield language, start, lines
            language = None
        else:
            lines.append(line)


def shell_lines(language: str, start: int, lines: list[str]) -> Iterator[tuple[int, str]]:
    """Yield (line number, command line) for the commands of one shell block: every line of an
    `sh` block, the `$ ` lines of a `console` block (the rest is output); a line ending in `\\`
    goes on on the next one."""
    console = language == "console"
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(lines, start=start):
        line = raw.strip()
        if pending is not None:
            first, text = pending
            line = line.removeprefix("> ") if console else line
            text = text[:-1] + " " + line
        elif console:
            if not line.startswith("$ "):
                continue
            first, text = number, line[2:]
        else:
            if not line or line.startswith("#"):
                continue
            first, text = number, line
        if text.endswith("\\"):
            pending = (first, text)
        else:
            pending = None
            yield first, text


def evq_arguments(line: str) -> Iterator[list[str]]:
    """Yield the arguments of each `evq` invocation in one shell line: each part between
    `|`, `&&`, `;` (and inside `$(...)`) whose command is `evq` or `python manage.py evq`,
    after leading `VAR=value` assignments; redirections and trailing `# comments` are dropped.
    An `export VAR=...` part is skipped. (shlex, like any simple lexer, also takes a `#` inside
    an unquoted word for a comment: quote such a value in the example.)"""
    for inner in SUBSTITUTION.findall(line):
        yield from evq_arguments(inner)
    line = SUBSTITUTION.sub("SUBSTITUTED", line)
    line = FILE_DESCRIPTOR.sub("", line)
    # A placeholder stays one word, for click to accept or refuse like any value.
    line = PLACEHOLDER.sub(lambda match: shlex.quote(match.group(0)), line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    part: list[str] = []
    for token in [*lexer, ";"]:
        if token not in SEPARATORS:
            part.append(token)
            continue
        words: list[str] = []
        assignments: list[str] = []
        tokens = iter(part)
        for word in tokens:
            if word in REDIRECTIONS:
                next(tokens, None)
            elif not words and ASSIGNMENT.match(word):
                assignments.append(word)
            else:
                words.append(word)
        part = []
        if any(a.startswith("_EVQ_COMPLETE=") for a in assignments):
            continue  # shell completion: click reads no arguments then
        if words[:1] and Path(words[0]).name == "evq":
            yield words[1:]
        elif words[:2] in (["python", "manage.py"], ["python3", "manage.py"]) and (
            words[2:3] == ["evq"]
        ):
            yield words[3:]


def examples(document: Path) -> list[Example]:
    """Return every `evq` invocation in the shell blocks of one document."""
    name = document.relative_to(ROOT).as_posix()
    found: list[Example] = []
    for language, start, lines in code_blocks(document.read_text(encoding="utf-8")):
        if language not in SHELL_LANGUAGES:
            continue
        for number, text in shell_lines(language, start, lines):
            try:
                invocations = list(evq_arguments(text))
            except ValueError as exc:  # shlex: an unbalanced quote
                pytest.fail(f"{name}:{number}: {text!r} is not a shell line: {exc}")
            found.extend(Example(name, number, text, tuple(args)) for args in invocations)
    return found


def parse(args: tuple[str, ...]) -> None:
    """Parse `evq ARGS` as `evq` would, down to the last subcommand, without running it; raise
    click's error (a `ClickException`) if it does not parse."""
    try:
        context = cli.make_context("evq", list(args), resilient_parsing=False)
        command = context.command
        while isinstance(command, click.Group):
            # click 8.2 keeps the subcommand's name in `_protected_args` (the public name warns).
            protected = (
                context._protected_args
                if hasattr(context, "_protected_args")
                else context.protected_args
            )
            name, sub, rest = command.resolve_command(context, [*protected, *context.args])
            assert name is not None and sub is not None
            context = sub.make_context(name, rest, parent=context, resilient_parsing=False)
            command = sub
    except click.exceptions.Exit:
        pass  # --help and --version parse, and stop there


def documented_variables() -> set[str]:
    """Return every `EVQ_*` variable evq reads: the settings its code names, the test suite's
    `EVQ_TEST_*`, each option's variable (its own or click's `EVQ_<COMMAND>_<OPTION>`) and
    click's `_EVQ_COMPLETE`."""
    known = {"_EVQ_COMPLETE"}
    for source in (ROOT / "evq").rglob("*.py"):
        known.update(VARIABLE.findall(source.read_text(encoding="utf-8")))
    for source in (ROOT / "tests").rglob("*.py"):
        if source.resolve() != Path(__file__).resolve():
            text = source.read_text(encoding="utf-8")
            known.update(v for v in VARIABLE.findall(text) if v.startswith("EVQ_TEST_"))

    def walk(command: click.Command, context: click.Context, prefix: str) -> None:
        for param in command.params:
            if not isinstance(param, click.Option) or param.name is None:
                continue
            if param.envvar:
                envvars = [param.envvar] if isinstance(param.envvar, str) else param.envvar
                known.update(envvars)
            else:
                known.add(f"{prefix}_{param.name.upper()}")
        if isinstance(command, click.Group):
            for name in command.list_commands(context):
                sub = command.get_command(context, name)
                assert sub is not None
                child = click.Context(sub, parent=context, info_name=name)
                walk(sub, child, f"{prefix}_{name.upper().replace('-', '_')}")

    walk(cli, click.Context(cli, info_name="evq"), "EVQ")
    return known


def test_skipped_examples_are_still_in_their_documents() -> None:
    for document, text in SKIPPED:
        assert text in (ROOT / document).read_text(encoding="utf-8"), (document, text)


def test_the_extractor_reads_shell_as_the_shell_would() -> None:
    def invocations(line: str) -> list[list[str]]:
        return list(evq_arguments(line))

    assert invocations("evq status --check   # after a delivery died") == [["status", "--check"]]
    assert invocations("evq status | grep dead && evq dlq list; echo") == [
        ["status"],
        ["dlq", "list"],
    ]
    assert invocations('echo "$(evq show 01M8)" | EVQ_URL=x.db evq publish a.b --jsonl') == [
        ["show", "01M8"],
        ["publish", "a.b", "--jsonl"],
    ]
    assert invocations("python manage.py evq worker --burst 2>&1 > log < /dev/null") == [
        ["worker", "--burst"]
    ]
    assert invocations("evq dlq redrive <id> ...") == [["dlq", "redrive", "<id>", "..."]]
    assert invocations("export EVQ_URL=postgresql://db/shop") == []
    assert invocations('eval "$(_EVQ_COMPLETE=bash_source evq)"') == []
    assert invocations("pip install 'evq[redis]'   # evq") == []
    console = ["$ evq publish a.b \\", "> --payload '{}'", "out: evq x", "$ evq worker"]
    assert list(shell_lines("console", 1, console)) == [
        (1, "evq publish a.b  --payload '{}'"),
        (4, "evq worker"),
    ]
    assert list(shell_lines("sh", 1, ["# evq x", "evq worker \\", "  --burst"])) == [
        (2, "evq worker  --burst")
    ]


def test_the_readme_has_examples_to_check() -> None:
    # So that a change to the extractor (or to the README's fences) cannot check nothing.
    found = examples(ROOT / "README.md")
    assert len(found) >= 20, [e.where() for e in found]
    assert {e.args[0] for e in found if e.args} >= {"publish", "worker", "status", "dlq"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_evq_example_parses(document: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reader's environment is not the test's: no EVQ_* variable may change the parse.
    for variable in [v for v in os.environ if v.startswith("EVQ_")]:
        monkeypatch.delenv(variable)
    failures = []
    for example in examples(document):
        try:
            parse(example.args)
        except click.ClickException as exc:
            if (example.document, example.text) not in SKIPPED:
                failures.append(f"{example.where()} does not parse: {exc.format_message()}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_evq_variable_named_is_one_evq_reads(document: Path) -> None:
    known = documented_variables()
    text = document.read_text(encoding="utf-8")
    unknown = sorted(set(VARIABLE.findall(text)) - known)
    assert not unknown, f"{document.name} names variables evq does not read: {unknown}"
