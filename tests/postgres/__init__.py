"""Tests of the PostgreSQL backend alone: what the contract suite cannot say (the outbox on
psycopg connections, migrations, connections and their errors, workers on several hosts'
worth of processes, wake-up by LISTEN). They run when EVQ_TEST_POSTGRES_URL is set."""
