"""The dashboard mounted in a Django project for staff only (`evq.dashboard.django`), in a
process of its own: Django's settings are global to a process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, evq_env

from dashboard.conftest import Shop


def test_in_django_only_staff_see_the_dashboard_and_changes_need_its_csrf_token(
    sqlite_shop: Shop, tmp_path: Path
) -> None:
    env = evq_env(EVQ_URL=sqlite_shop.url, EVQ_TEST_DJANGO_DB=str(tmp_path / "django.db"))
    env["PYTHONPATH"] = f"{ROOT / 'tests'}:{env['PYTHONPATH']}"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests/dashboard/django_site/check.py"),
            sqlite_shop.dead_letter,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "anonymous: sent to the admin's login",
        "not staff: sent to the admin's login",
        "staff: sees the dead letters under the prefix",
        "staff without the dashboard's CSRF token: refused",
        "staff with it: purged",
    ]
    assert sqlite_shop.queue().dead_letters() == []
