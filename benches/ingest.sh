#!/usr/bin/env bash
# Signed webhooks per second into linedesk, server pinned to core 0, wrk to core 1, for each
# storage.durability. One text event per webhook, 1,000 LINE users, every webhookEventId unique.
# Knobs: DURATION (s, default 10), CONNECTIONS (64), REQUESTS (unique webhooks, 600000),
# DURABILITIES ("flush os"). Needs wrk (apt-get install wrk) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
REQUESTS=${REQUESTS:-600000}
cargo build --release --quiet
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
python3 benches/signed_webhooks.py --requests "$REQUESTS" > "$work/requests.tsv"

for durability in ${DURABILITIES:-flush os}; do
  rm -rf "$work/db"
  LINEDESK__SERVER__BIND=127.0.0.1:0 LINEDESK__SERVER__WORKERS=1 \
  LINEDESK__STORAGE__PATH="$work/db" LINEDESK__STORAGE__DURABILITY="$durability" \
  LINEDESK__LOG__LEVEL=warn \
    taskset -c 0 target/release/linedesk serve > "$work/stdout" 2> "$work/stderr" &
  pid=$!
  for _ in $(seq 100); do grep -q '^listening on ' "$work/stdout" && break; sleep 0.1; done
  url=$(sed -n 's/^listening on //p' "$work/stdout")
  echo "== durability = $durability ($url, ${CONNECTIONS} connections, ${DURATION}s)"
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s benches/wrk_webhooks.lua "$url" -- "$work/requests.tsv" 1
  curl -s "$url/metrics" | grep -E '^linedesk_(webhook_requests|webhook_events_stored|journal)' | grep -v ' 0$'
  kill -TERM "$pid"; wait "$pid" || true; pid=
done
