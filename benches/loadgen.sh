#!/usr/bin/env bash
# End to end with agents: a release linedesk (fresh data folder, default settings) driven by
# `linedesk loadgen` in open loop, with the fake LINE platform embedded in loadgen and the
# server's LINE API pointed at it, so agent send → LINE is measured.
# Knobs: RATE (webhooks/s, 5000), DURATION (s, 10), AGENTS (200), CAPACITY (100), USERS (1000),
# WARMUP (1: agents hold every conversation before measuring; 0: cold), LINE_PORT (9100),
# LINEDESK (the binary, target/release/linedesk), EXTRA (more loadgen flags, e.g. --json),
# SERVER_ENV (more settings for the server, e.g. "LINEDESK__STORAGE__CACHE_CAPACITY_BYTES=67108864"),
# THREADS (1: also print each thread's CPU, server and loadgen, over 3 s from 5 s into the run;
# Linux only, from /proc).
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
  --users "$USERS" --line-bind "127.0.0.1:$LINE_PORT" "${warmup[@]}" ${EXTRA:-} &
loadgen=$!
if [ "${THREADS:-0}" = 1 ]; then
  # CPU ticks (1/100 s) of every thread of both processes, 3 s apart, summed by thread name.
  ticks() {
    for p in "$pid" "$loadgen"; do
      for t in /proc/"$p"/task/*; do
        echo "$([ "$p" = "$pid" ] && echo server || echo loadgen) $(tr ' ' _ < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
      done 2>/dev/null
    done
  }
  sleep 5; ticks > "$work/ticks1"; sleep 3; ticks > "$work/ticks2"
  echo "== CPU by thread over 3 s (% of one core)"
  # A failure here must not stop the script (and with it the server) mid-run.
  awk 'NR == FNR { before[$1" "$2] += $3; next } { after[$1" "$2] += $3 }
       END { for (k in after) { d = (after[k] - before[k]) / 3; split(k, part, " ")
               total[part[1]] += d
               if (d > 0) printf "%-8s %-28s %6.1f\n", part[1], part[2], d }
             for (who in total) printf "%-8s %-28s %6.1f\n", who, "(all)", total[who] }' \
    "$work/ticks1" "$work/ticks2" | sort -k1,1 -k3,3nr || true
fi
wait "$loadgen"
kill -TERM "$pid"; wait "$pid" || true; pid=
