#!/usr/bin/env bash
# End to end with agents: a release linedesk (fresh data folder, default settings) driven by
# `linedesk loadgen` in open loop, with the fake LINE platform embedded in loadgen and the
# server's LINE API pointed at it, so agent send → LINE is measured.
# Knobs: RATE (webhooks/s, 5000), DURATION (s, 10), AGENTS (200), CAPACITY (100), USERS (1000),
# WARMUP (1: agents hold every conversation before measuring; 0: cold), LINE_PORT (9100),
# LINEDESK (the binary, target/release/linedesk), EXTRA (more loadgen flags, e.g. --json),
# SERVER_ENV (more settings for the server, e.g. "LINEDESK__STORAGE__CACHE_CAPACITY_BYTES=67108864").
# The server's client limit to LINE's send endpoints is raised to 20,000/s: LINE allows a
# channel 2,000/s, below the load of one account answering 5,000 messages/s; this measures
# linedesk, not LINE's quota.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-5000}
DURATION=${DURATION:-10}
AGENTS=${AGENTS:-200}
CAPACITY=${CAPACITY:-100}
USERS=${USERS:-1000}
WARMUP=${WARMUP:-1}
LINE_PORT=${LINE_PORT:-9100}
LINEDESK=${LINEDESK:-target/release/linedesk}
[ -x "$LINEDESK" ] || cargo build --release --quiet
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$LINEDESK" loadgen agents-config --agents "$AGENTS" --capacity "$CAPACITY" > "$work/agents.toml"
env ${SERVER_ENV:-} LINEDESK__SERVER__BIND=127.0.0.1:0 LINEDESK__STORAGE__PATH="$work/db" LINEDESK__LOG__LEVEL=warn \
LINEDESK__LINE__API_BASE="http://127.0.0.1:$LINE_PORT" \
LINEDESK__LINE__DATA_API_BASE="http://127.0.0.1:$LINE_PORT" \
LINEDESK__LINE__REQUESTS_PER_SECOND=20000 LINEDESK__LINE__BURST=2000 \
  "$LINEDESK" serve --config "$work/agents.toml" > "$work/stdout" 2> "$work/stderr" &
pid=$!
for _ in $(seq 100); do grep -qs "^listening on " "$work/stdout" && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/stdout")
warmup=()
[ "$WARMUP" = 1 ] && warmup=(--warmup)
"$LINEDESK" loadgen --target "$url" --rate "$RATE" --duration "$DURATION" --agents "$AGENTS" \
  --users "$USERS" --line-bind "127.0.0.1:$LINE_PORT" "${warmup[@]}" ${EXTRA:-}
kill -TERM "$pid"; wait "$pid" || true; pid=
