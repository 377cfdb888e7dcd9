"""Integrations of evq with frameworks, each an optional extra (`evq[django]`)."""
