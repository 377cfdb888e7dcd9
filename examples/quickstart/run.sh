#!/usr/bin/env bash
# The quickstart, end to end: publish three events, list who listens, deliver everything.
set -euo pipefail
export EVQ_URL="${EVQ_URL:-$(mktemp -d)/evq.db}"   # a fresh queue for each run

echo "== publishing to $EVQ_URL"
evq publish user.created --payload '{"user_id": 42, "email": "ada@example.com"}'
evq publish user.created --payload '{"user_id": 43, "email": "grace@example.com"}'
echo '{"user_id": 42}' | evq publish user.deleted --payload -

echo "== subscribers"
evq list-subscribers

echo "== delivering (evq worker --burst exits once everything due is delivered)"
evq worker --burst
