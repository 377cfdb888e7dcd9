"""The shop's settings: the queue lives in Django's own database (EVQ["DATABASE"]).

SQLite by default (db.sqlite3 here, or the file SHOP_SQLITE names); PostgreSQL when
SHOP_DATABASE_URL is a postgresql:// URL.
"""

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "django-shop-example-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "shop.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "orders",
    "evq.contrib.django",  # evq's tables (migrate), `manage.py evq`, publish joins transactions
]

EVQ = {"DATABASE": "default"}


def _postgres(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": parts.port or "",
        "OPTIONS": {key: values[-1] for key, values in parse_qs(parts.query).items()},
    }


if os.environ.get("SHOP_DATABASE_URL"):
    DATABASES = {"default": _postgres(os.environ["SHOP_DATABASE_URL"])}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SHOP_SQLITE", BASE_DIR / "db.sqlite3"),
            # Writers take the lock when their transaction starts: the worker and the web
            # server then wait for each other instead of failing with "database is locked".
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"orders": {"handlers": ["console"], "level": "INFO"}},
}
