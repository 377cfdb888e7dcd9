"""What only the SQLite backend does: its file, schema upgrades, indexes, pragmas and URL."""
