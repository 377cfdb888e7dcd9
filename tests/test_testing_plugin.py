"""The pytest plugin of `evq.testing`, as a user's test suite meets it: run with `pytester`
in a fresh process (the plugin found through its `pytest11` entry point)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT, evq_env, run_evq

pytest_plugins = ["pytester"]

# A user's application: a receiver, and code that publishes.
SHOP = """
import evq

outbox = []


@evq.subscriber("user.created")
def send_welcome_email(event: evq.Event, /) -> None:
    if "@" not in event.payload["email"]:
        raise ValueError(f"not an email address: {event.payload['email']}")
    outbox.append(f"Welcome, {event.payload['email']}")


@evq.subscriber("user.created", retries=0)
def add_to_newsletter(event: evq.Event, /) -> None:
    pass


def sign_up(email: str) -> None:
    evq.publish("user.created", payload={"email": email})
"""


@pytest.fixture
def shop(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(shop=SHOP)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A process of its own: the plugin is loaded from the installed entry point, as it is
    # for a user, and nothing of this process's evq state leaks in.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def readme_files() -> dict[str, str]:
    """The Python blocks of the README that begin with a file name (`# shop.py`), by name."""
    text = (ROOT / "README.md").read_text()
    files = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        first = block.split("\n", 1)[0]
        if re.fullmatch(r"# \w+\.py", first):
            files[first[2:]] = block
    return files


def test_the_readme_example_passes_with_the_installed_plugin(pytester: pytest.Pytester) -> None:
    files = readme_files()
    assert sorted(files) == ["shop.py", "test_shop.py"]
    for name, source in files.items():
        pytester.path.joinpath(name).write_text(source)
    pytester.makepyfile(
        test_isolation="""
        def test_each_test_has_a_queue_of_its_own(evq_queue):
            assert evq_queue.published() == []
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=3)


def test_a_failed_assert_published_lists_what_was_published(shop: pytest.Pytester) -> None:
    shop.makepyfile(
        test_shop="""
        import shop

        def test_wrong_email(evq_queue):
            shop.sign_up("ada@example.com")
            evq_queue.assert_published("user.created", payload={"email": "bob@example.com"})
        """
    )
    result = run(shop)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * AssertionError: expected an event user.created with payload"
            " {'email': 'bob@example.com'}, found 0; 1 event(s) were published:",
            'E *   user.created {"email": "ada@example.com"}',
        ]
    )


def test_a_failing_receiver_fails_the_test_with_its_traceback(shop: pytest.Pytester) -> None:
    shop.makepyfile(
        test_shop="""
        import shop

        def test_bad_email(evq_queue):
            shop.sign_up("not-an-email")
            evq_queue.deliver()
        """
    )
    result = run(shop)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * evq.testing.DeliveryFailed: 1 of 2 delivery attempts failed:",
            "E * user.created * -> shop:send_welcome_email (attempt 1): retry:"
            " ValueError: not an email address: not-an-email",
            "E * Traceback (most recent call last):",
            'E *     raise ValueError(f"not an email address: *")',
        ]
    )


def test_the_marker_chooses_subscriptions_and_a_sqlite_file(shop: pytest.Pytester) -> None:
    shop.makepyfile(
        test_shop="""
        import pytest
        import shop

        @pytest.mark.evq(subscriptions=[shop.add_to_newsletter], backend="sqlite")
        def test_newsletter_only(evq_queue, tmp_path):
            assert evq_queue.url == f"sqlite:///{tmp_path / 'evq-test.db'}"
            shop.sign_up("not-an-email")
            attempts = evq_queue.deliver()
            assert [a.receiver for a in attempts] == ["shop:add_to_newsletter"]

        @pytest.mark.evq(backend="postgres")
        def test_unknown_backend(evq_queue):
            pass
        """
    )
    result = run(shop)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*UsageError: @pytest.mark.evq(backend='postgres'): use one of memory, sqlite"]
    )


def test_no_evq_turns_the_plugin_off(shop: pytest.Pytester) -> None:
    shop.makepyfile(test_shop="def test_uses_it(evq_queue):\n    pass\n")
    result = run(shop, "-p", "no:evq")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'evq_queue' not found*"])


def test_importing_and_publishing_with_evq_imports_neither_pytest_nor_evq_testing() -> None:
    script = (
        "import sys, evq\n"
        "evq.configure(url='memory://')\n"
        "evq.publish('a.b', payload={})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest')"
        " or m.startswith('evq.testing')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=evq_env()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("worker", "--app", "tests.apps.recorder"), {"EVQ_URL": "memory://"}),
        (("publish", "order.created", "--url", "memory://orders"), {}),
        (("status",), {"EVQ_URL": "memory://"}),
    ],
)
def test_a_command_refuses_a_memory_queue_it_could_never_share(
    args: tuple[str, ...], env: dict[str, str]
) -> None:
    result = run_evq(*args, **env)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: memory://{'orders' if 'publish' in args else ''} is a queue")
    assert f"`evq {args[0]}` runs in a process of its own" in line
