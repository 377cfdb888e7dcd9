"""Subscription modules used by the tests through `--app tests.apps.NAME`."""
