"""`python -m evq`: the same as the `evq` command."""

from evq.cli import entry_point

entry_point()
