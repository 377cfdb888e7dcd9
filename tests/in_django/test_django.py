"""evq in a Django project, tested as Django users run theirs: `manage.py test`, `manage.py
migrate`, `manage.py evq ...` and `evq --django-settings ...`, each a real subprocess of the
project in tests/in_django/project (its own Django tests are in ledger/tests.py), on SQLite and,
when EVQ_TEST_POSTGRES_URL is set, on PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.postgres_server import drop_schema, fresh_schema, server_url

pytest.importorskip("django", reason="the Django tests need evq[django] (in the test extra)")

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "project"
ROOT = HERE.parent.parent
EXIT_BAD_INPUT = 2


def project_env(directory: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVQ_", "TESTPROJECT_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(PROJECT)])
    env["TESTPROJECT_DIR"] = str(directory)
    env.update(extra)
    return env


def manage(directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python manage.py ARGS` of the test project, from `directory`."""
    return subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=project_env(directory, **env),
        cwd=directory,
    )


def evq_command(directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m evq ARGS` with the test project importable, from `directory`."""
    return subprocess.run(
        [sys.executable, "-m", "evq", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=project_env(directory, **env),
        cwd=directory,
    )


def passed(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


# The project's own Django tests: transactions, TestCase, on_commit, worker, migrations.


IN_DATABASE = ("test", "ledger", "accounts", "--tag", "queue_in_database", "--noinput")
IN_DATABASE_TESTS = 21  # ledger's 9, accounts' 12 (the seed and the Tasks backend)


def test_django_tests_pass_with_the_queue_in_a_sqlite_database(tmp_path: Path) -> None:
    output = passed(manage(tmp_path, *IN_DATABASE))
    assert f"Ran {IN_DATABASE_TESTS} tests" in output and "\nOK\n" in output


def test_django_tests_pass_with_the_queue_in_a_postgresql_database(tmp_path: Path) -> None:
    server = server_url()
    database = f"test_evq_django_{os.getpid()}"
    output = passed(
        manage(
            tmp_path,
            *IN_DATABASE,
            TESTPROJECT_DATABASE=server,
            TESTPROJECT_TEST_DATABASE=database,
        )
    )
    assert f"Ran {IN_DATABASE_TESTS} tests" in output and "\nOK\n" in output


def test_django_tests_pass_with_the_queue_elsewhere(tmp_path: Path) -> None:
    queue = tmp_path / "queue.db"
    output = passed(
        manage(
            tmp_path,
            *("test", "ledger", "--tag", "queue_elsewhere", "--noinput"),
            TESTPROJECT_EVQ=f'{{"URL": "{queue}"}}',
        )
    )
    assert "Ran 3 tests" in output and "\nOK\n" in output


# manage.py migrate, manage.py evq, evq --django-settings


def test_migrate_creates_evq_tables_that_the_evq_commands_then_use(tmp_path: Path) -> None:
    passed(manage(tmp_path, "migrate", "--verbosity", "0"))
    status = passed(manage(tmp_path, "evq", "status", "--json"))
    assert '"published": 0' in status
    assert not (tmp_path / "evq.db").exists()  # the queue is in db.sqlite3


def test_migrate_evq_zero_removes_the_tables(tmp_path: Path) -> None:
    passed(manage(tmp_path, "migrate", "--verbosity", "0"))
    passed(manage(tmp_path, "migrate", "evq", "zero", "--verbosity", "0"))
    tables = passed(
        manage(
            tmp_path,
            "shell",
            "-c",
            "from django.db import connection; print(connection.introspection.table_names())",
        )
    )
    assert "ledger_order" in tables and "evq_" not in tables


def test_list_subscribers_shows_each_subscription_with_its_django_app(tmp_path: Path) -> None:
    output = passed(manage(tmp_path, "evq", "list-subscribers"))
    rows = {tuple(line.split("\t")[i] for i in (0, 1, 3)) for line in output.splitlines()}
    assert rows == {
        # subscribed in LedgerConfig.ready()
        ("order.*", "ledger.receivers:audit", "Django app ledger"),
        # in ledger/subscriptions.py
        (
            "order.paid",
            "ledger.subscriptions:write_receipt",
            "Django app ledger (ledger.subscriptions)",
        ),
        # evq's Tasks backend, for the queues of TASKS["default"]
        (
            "django.tasks.events",
            "evq.contrib.django.task_queue:run_task",
            "Django TASKS['default']",
        ),
    }


def test_evq_with_django_settings_is_manage_py_evq(tmp_path: Path) -> None:
    passed(manage(tmp_path, "migrate", "--verbosity", "0"))
    published = passed(
        manage(tmp_path, "evq", "publish", "order.created", "--payload", '{"order_id": 7}')
    )
    through_option = passed(
        evq_command(tmp_path, "--django-settings", "testproject.settings", "events", "--json")
    )
    through_variable = passed(
        evq_command(tmp_path, "events", "--json", DJANGO_SETTINGS_MODULE="testproject.settings")
    )
    assert published.strip() in through_option
    assert through_option == through_variable
    assert not (tmp_path / "evq.db").exists()


def test_manage_py_evq_help_is_evqs(tmp_path: Path) -> None:
    output = passed(manage(tmp_path, "evq", "--help"))
    assert "Usage: manage.py evq [OPTIONS] COMMAND" in output
    assert "worker" in output


def test_the_worker_closes_django_connections_around_each_delivery(tmp_path: Path) -> None:
    # With CONN_MAX_AGE 0 (Django's default), a request's connection is closed at its end; a
    # delivery's must be too, or a long-running worker keeps one the server may have dropped.
    passed(manage(tmp_path, "migrate", "--verbosity", "0"))
    script = (
        "import evq\n"
        "from django.db import connection\n"
        "seen = []\n"
        "def probe(event):\n"
        "    seen.append(connection.connection is None)\n"
        "    connection.ensure_connection()\n"
        "evq.subscribe('probe.*', receiver=probe)\n"
        "for n in range(3):\n"
        "    evq.publish('probe.sent', payload={'n': n})\n"
        "from django.core.management import call_command\n"
        "call_command('evq', 'worker', '--burst', '--quiet', '--no-entry-points')\n"
        "print(seen)\n"
    )
    output = passed(manage(tmp_path, "shell", "-c", script))
    assert "[True, True, True]" in output


# Bad configuration: one line, exit code 2 (Django's checks: exit 1), nothing created.


BAD_SETTINGS = {
    "no such alias": (
        '{"DATABASE": "nope"}',
        "Error: settings.EVQ['DATABASE'] names the database 'nope', which is not in"
        " settings.DATABASES (it has 'default', 'mysql')",
    ),
    "MySQL": (
        '{"DATABASE": "mysql"}',
        "Error: settings.EVQ['DATABASE'] names 'mysql', a MySQL database"
        " (django.db.backends.mysql), and evq has no MySQL backend: keep the queue in a"
        " PostgreSQL or SQLite database, or in a store of its own with"
        " EVQ = {'URL': 'redis://...'} (or a SQLite file path)",
    ),
    "DATABASE and URL": (
        '{"DATABASE": "default", "URL": "queue.db"}',
        "Error: settings.EVQ sets both 'DATABASE' and 'URL': keep 'DATABASE' for a queue in"
        " Django's database, or 'URL' for a queue of its own",
    ),
    "unknown key": (
        '{"DATABASES": "default"}',
        "Error: settings.EVQ has unknown key 'DATABASES': evq reads 'DATABASE' and 'URL'",
    ),
    "not a dict": (
        '"default"',
        "Error: settings.EVQ must be a dict such as {'DATABASE': 'default'}, not str",
    ),
}
MYSQL = '{"mysql": {"ENGINE": "django.db.backends.mysql", "NAME": "shop"}}'


@pytest.mark.parametrize("case", BAD_SETTINGS, ids=list(BAD_SETTINGS))
def test_bad_evq_settings_are_one_line_and_create_nothing(case: str, tmp_path: Path) -> None:
    evq_setting, line = BAD_SETTINGS[case]
    env = {"TESTPROJECT_EVQ": evq_setting, "TESTPROJECT_EXTRA_DATABASES": MYSQL}
    for command in (["evq", "worker", "--burst"], ["evq", "status"]):
        result = manage(tmp_path, *command, **env)
        assert (result.returncode, result.stderr, result.stdout) == (
            EXIT_BAD_INPUT,
            line + "\n",
            "",
        )
    through_cli = evq_command(
        tmp_path, "--django-settings", "testproject.settings", "status", **env
    )
    assert (through_cli.returncode, through_cli.stderr) == (EXIT_BAD_INPUT, line + "\n")
    # migrate runs Django's system checks first: the same line, as check evq.E001.
    migrate = manage(tmp_path, "migrate", **env)
    assert migrate.returncode == 1
    assert f"(evq.E001) {line.removeprefix('Error: ')}\n" in migrate.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_tasks_queue_name_evq_refuses_is_one_line(tmp_path: Path) -> None:
    env = {"TESTPROJECT_TASK_QUEUES": '["events", "bad queue"]'}
    line = (
        "Error: TASKS['default']['QUEUES'] has the queue name 'bad queue', which evq refuses:"
        " use letters, digits, '_' and '-' (it becomes part of the event name"
        " django.tasks.<queue>)\n"
    )
    result = manage(tmp_path, "evq", "worker", "--burst", **env)
    assert (result.returncode, result.stderr, result.stdout) == (EXIT_BAD_INPUT, line, "")
    migrate = manage(tmp_path, "migrate", **env)
    assert migrate.returncode == 1
    assert f"(evq.E002) {line.removeprefix('Error: ')}" in migrate.stderr
    assert list(tmp_path.iterdir()) == []


def test_evq_set_without_the_app_installed_is_refused(tmp_path: Path) -> None:
    env = {"TESTPROJECT_WITHOUT_APP": "1"}
    line = (
        "Error: settings.EVQ is set but 'evq.contrib.django' is not in INSTALLED_APPS: add it,"
        " so that evq uses the queue EVQ names\n"
    )
    result = evq_command(tmp_path, "--django-settings", "testproject.settings", "status", **env)
    assert (result.returncode, result.stderr, result.stdout) == (EXIT_BAD_INPUT, line, "")
    # evq.publish() in the project says so too, instead of publishing to evq.db.
    shell = manage(tmp_path, "shell", "-c", "import evq; evq.publish('a.b', payload={})", **env)
    assert shell.returncode == 1
    assert shell.stderr.endswith(f"BadSettings: {line.removeprefix('Error: ')}")
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_test_database_in_memory_is_refused_with_how_to_fix_it(tmp_path: Path) -> None:
    script = (
        "import evq\n"
        "from django.db import connection\n"
        "connection.settings_dict['NAME'] = ':memory:'\n"
        "connection.ensure_connection()\n"
        "evq.publish('a.b', payload={})\n"
    )
    result = manage(tmp_path, "shell", "-c", script)
    assert result.returncode == 1
    assert result.stderr.endswith(
        "BadSettings: the database 'default' is in memory, and evq's worker cannot open it:"
        " give it a file (for tests, DATABASES['default']['TEST']['NAME'] = 'test.sqlite3')\n"
    )


def test_django_settings_that_do_not_import_are_one_line(tmp_path: Path) -> None:
    result = evq_command(tmp_path, "--django-settings", "nosuch.settings", "status")
    assert (result.returncode, result.stderr, result.stdout) == (
        EXIT_BAD_INPUT,
        "Error: cannot import the Django settings module 'nosuch.settings': no such module\n",
        "",
    )
    assert list(tmp_path.iterdir()) == []


def test_evq_publish_imports_nothing_of_django(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "evq", "publish", "a.b", "--payload", "{}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**project_env(tmp_path), "EVQ_URL": str(tmp_path / "evq.db")},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "evq.publisher" in imported  # the probe sees evq's own imports
    assert [m for m in imported if m.startswith(("django", "evq.contrib"))] == []


# The example project, end to end: a real HTTP request to Django's server, then the worker.


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_django_shop_example_runs_end_to_end(backend: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVQ_", "SHOP_"))}
    env["PYTHON"] = sys.executable
    env["SHOP_SQLITE"] = str(tmp_path / "shop.sqlite3")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    database = None
    if backend == "postgresql":
        server = server_url()
        database = env["SHOP_DATABASE_URL"] = fresh_schema(server)
    try:
        result = subprocess.run(
            ["bash", str(ROOT / "examples" / "django_shop" / "run.sh")],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
    finally:
        if database is not None:
            drop_schema(server, database)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '== paid: {"id": 1, "event_id": "' in result.stdout
    assert (
        '== order: {"id": 1, "paid": true, "receipt": "Receipt for order 1: 12.50 paid",'
        ' "audit": ["order.paid"]}'
    ) in result.stdout
    assert "2 deliveries" in result.stderr
    assert (tmp_path / "shop.sqlite3").exists() == (backend == "sqlite")


def test_a_worker_killed_while_a_task_runs_leaves_it_to_the_next_worker(tmp_path: Path) -> None:
    # django-tasks' database backend would leave the task RUNNING for ever.
    passed(manage(tmp_path, "migrate", "--verbosity", "0"))
    marker = tmp_path / "started"

    def result(result_id: str) -> str:
        return (
            passed(
                manage(
                    tmp_path,
                    "shell",
                    "-c",
                    "from accounts import tasks; r = tasks.hang_the_first_time.get_result"
                    f"({result_id!r}); print(r.status, r.return_value if r.is_finished else '')",
                )
            )
            .splitlines()[-1]
            .strip()
        )

    result_id = passed(
        manage(
            tmp_path,
            "shell",
            "-c",
            "from accounts import tasks;"
            f" print(tasks.hang_the_first_time.enqueue({str(marker)!r}).id)",
        )
    ).splitlines()[-1]
    worker = subprocess.Popen(
        [sys.executable, str(PROJECT / "manage.py"), "evq", "worker", "--lease", "1s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=project_env(tmp_path),
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the task never started"
        assert result(result_id) == "RUNNING"
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    deadline = time.monotonic() + 120
    while result(result_id) != "SUCCESSFUL done" and time.monotonic() < deadline:
        passed(manage(tmp_path, "evq", "worker", "--burst", "--lease", "1s"))
        time.sleep(0.5)
    assert result(result_id) == "SUCCESSFUL done"


def test_a_running_worker_survives_a_database_restart(tmp_path: Path) -> None:
    # Every connection to the database is cut while a worker runs, as a restart of the
    # PostgreSQL server cuts them: evq's own (work, LISTEN) and Django's. The next event is
    # still delivered, by a receiver that uses the ORM, and the worker carries on. (A database
    # of its own: the cut must not reach other tests' connections.)
    import psycopg

    server = server_url()
    name = f"evq_restart_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = server.rsplit("/", 1)[0] + "/" + name
    env = {"TESTPROJECT_DATABASE": url}

    def pay_an_order() -> None:
        passed(
            manage(
                tmp_path,
                "shell",
                "-c",
                "import evq; from ledger.models import Order; order = Order.objects.create();"
                " evq.publish('order.paid', payload={'order_id': order.pk})",
                **env,
            )
        )

    def receipts() -> int:
        script = "from ledger.models import Receipt; print(Receipt.objects.count())"
        return int(passed(manage(tmp_path, "shell", "-c", script, **env)).split()[-1])

    def wait_for_receipts(count: int) -> None:
        deadline = time.monotonic() + 90
        while receipts() < count:
            assert worker.poll() is None, "the worker stopped"
            assert time.monotonic() < deadline, f"fewer than {count} receipts"
            time.sleep(0.3)

    try:
        passed(manage(tmp_path, "migrate", "--verbosity", "0", **env))
        stderr = tmp_path / "worker.err"
        with open(stderr, "w") as err:
            worker = subprocess.Popen(
                [sys.executable, str(PROJECT / "manage.py"), "evq", "worker", "--quiet"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=project_env(tmp_path, **env),
                cwd=tmp_path,
                start_new_session=True,
            )
        try:
            pay_an_order()
            wait_for_receipts(1)
            with psycopg.connect(url, autocommit=True) as conn:
                cut = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
            assert cut is not None and cut[0] >= 2  # at least the worker's two connections
            pay_an_order()
            wait_for_receipts(2)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0, stderr.read_text()
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        assert "Traceback" not in stderr.read_text()
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
