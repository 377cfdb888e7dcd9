"""Run in a process of its own (Django's settings are global): the dashboard mounted in Django
for staff only. Prints one line per check; exits non-zero on the first that fails."""

import os
import re
import sys
from urllib.parse import urlencode

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.django_site.settings")

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

call_command("migrate", verbosity=0)
dead_letter = sys.argv[1]

anonymous = Client()
response = anonymous.get("/ops/evq/dead-letters")
assert response.status_code == 302 and "/admin/login/" in response["Location"], response
print("anonymous: sent to the admin's login")

User.objects.create_user("clerk", password="pw", is_staff=False)
clerk = Client()
clerk.login(username="clerk", password="pw")
response = clerk.get("/ops/evq/dead-letters")
assert response.status_code == 302, response.status_code
print("not staff: sent to the admin's login")

User.objects.create_user("admin", password="pw", is_staff=True)
staff = Client(enforce_csrf_checks=True)
staff.login(username="admin", password="pw")
response = staff.get("/ops/evq/dead-letters")
page = response.content.decode()
assert response.status_code == 200 and dead_letter in page, response.status_code
assert 'href="/ops/evq/events/' in page
assert response["Content-Security-Policy"].startswith("default-src 'none'")
print("staff: sees the dead letters under the prefix")

token = re.search(r'name="csrf" value="([^"]+)"', page)
assert token is not None
refused = staff.post(
    "/ops/evq/dead-letters/purge",
    urlencode({"ids": dead_letter, "confirm": "yes"}),
    content_type="application/x-www-form-urlencoded",
)
assert refused.status_code == 403, refused.status_code
print("staff without the dashboard's CSRF token: refused")
# As a browser sends the dashboard's forms:
done = staff.post(
    "/ops/evq/dead-letters/purge",
    urlencode({"ids": dead_letter, "confirm": "yes", "csrf": token.group(1)}),
    content_type="application/x-www-form-urlencoded",
)
assert done.status_code == 303, done.status_code
assert done["Location"] == "/ops/evq/dead-letters?done=purge&count=1&asked=1"
print("staff with it: purged")
