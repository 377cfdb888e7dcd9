"""Settings of the test project, chosen by the test through the environment:

- TESTPROJECT_DATABASE: a PostgreSQL URL (with its search_path option), else a SQLite file
  in TESTPROJECT_DIR;
- TESTPROJECT_EVQ: settings.EVQ as JSON (default {"DATABASE": "default"}; "unset" leaves it
  out); TESTPROJECT_EXTRA_DATABASES: more DATABASES entries as JSON;
- TESTPROJECT_WITHOUT_APP=1: evq.contrib.django left out of INSTALLED_APPS.
"""

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DIRECTORY = Path(os.environ.get("TESTPROJECT_DIR", Path(__file__).resolve().parent.parent))
SECRET_KEY = "test"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ROOT_URLCONF = "testproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

import sys  # noqa: E402

import django  # noqa: E402

# The seed's events.py, for the Tasks framework of this Django (see seed/README.md).
BACKPORT = django.VERSION < (6, 0)
SEED = Path(__file__).resolve().parent.parent / "seed" / ("backport" if BACKPORT else "django6")
sys.path.insert(0, str(SEED))

INSTALLED_APPS = ["django.contrib.contenttypes", "ledger", "accounts.apps.Config"]
if BACKPORT:
    INSTALLED_APPS.append("django_tasks")
if os.environ.get("TESTPROJECT_WITHOUT_APP") != "1":
    INSTALLED_APPS.append("evq.contrib.django")


def _postgres(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": parts.port or "",
        "OPTIONS": options,
        "TEST": {"NAME": os.environ.get("TESTPROJECT_TEST_DATABASE", "")},
    }


if os.environ.get("TESTPROJECT_DATABASE"):
    DATABASES = {"default": _postgres(os.environ["TESTPROJECT_DATABASE"])}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DIRECTORY / "db.sqlite3",
            # SQLite test databases are in memory by default: evq's worker needs a file.
            "TEST": {"NAME": DIRECTORY / "test.sqlite3"},
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    }
DATABASES.update(json.loads(os.environ.get("TESTPROJECT_EXTRA_DATABASES", "{}")))

if os.environ.get("TESTPROJECT_EVQ") != "unset":
    EVQ = json.loads(os.environ.get("TESTPROJECT_EVQ", '{"DATABASE": "default"}'))

TASKS = {
    "default": {
        "BACKEND": "evq.contrib.django."
        + ("tasks_backport" if BACKPORT else "tasks")
        + ".EvqBackend",
        "QUEUES": json.loads(os.environ.get("TESTPROJECT_TASK_QUEUES", '["events"]')),
        "OPTIONS": {"RETRIES": 0},
    }
}
