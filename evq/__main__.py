"""`python -m evq`: the same as the `evq` command."""

from evq.cli import main

main()
