#!/usr/bin/env bash
# The Django shop, end to end: migrate, serve, pay an order over HTTP, deliver its events with
# `manage.py evq worker --burst`, and show the order with its receipt and audit entries.
# SQLite (a fresh file) unless SHOP_DATABASE_URL names a PostgreSQL database.
set -euo pipefail
cd "$(dirname "$0")"
export SHOP_SQLITE="${SHOP_SQLITE:-$(mktemp -d)/shop.sqlite3}"
python=${PYTHON:-python3}

"$python" manage.py migrate --verbosity 0
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$python" manage.py runserver --noreload "127.0.0.1:$port" >runserver.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f runserver.log' EXIT
base="http://127.0.0.1:$port"
"$python" client.py WAIT "$base/orders/0"   # until the server answers

order=$("$python" client.py POST "$base/orders" '{"total_cents": 1250}')
id=$("$python" -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "$order")
echo "== paid: $("$python" client.py POST "$base/orders/$id/pay")"
echo "== delivering"
"$python" manage.py evq worker --burst
echo "== order: $("$python" client.py GET "$base/orders/$id")"
