"""The admin (for its login page) and the dashboard under /ops/evq/, for staff only."""

import os

from django.contrib import admin
from django.urls import include, path

from evq.dashboard.django import dashboard_urls

urlpatterns = [
    path("admin/", admin.site.urls),
    path("ops/evq/", include(dashboard_urls(os.environ["EVQ_URL"]))),
]
