"""A minimal Django project that mounts the dashboard for staff (see test_django.py)."""
