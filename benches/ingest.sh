#!/usr/bin/env bash
# Signed webhooks per second into linedesk, server pinned to core 0, wrk to core 1, for each
# storage.durability, beside the ceiling: a bare actix-web handler that reads the body and
# answers 200 (benches/ceiling_server.rs). One text event per webhook, 1,000 LINE users, every
# webhookEventId unique. Ratios to the ceiling are the figures to quote.
# Knobs: DURATION (s, default 10), CONNECTIONS (64), REQUESTS (unique webhooks, 600000),
# DURABILITIES ("flush os"), ROUNDS (3), LINEDESK (the binary; default the release build),
# EVENTS_PER_MS (32: events sharing a millisecond `timestamp`, as LINE stamps them at this rate;
# rounds before the eleventh spaced them 1 ms apart). Needs wrk (apt-get install wrk) and python3.
# Each round runs the ceiling and then linedesk, and its ratios use that round's ceiling; the
# median of the rounds is the figure to quote. On a shared host one configuration's rate
# varies by ±20% from run to run (two identical builds measured 5,385 and 8,079/s), so a
# single run proves little.
# linedesk's LINE API is `linedesk fake-line` on the load core: each new customer's profile
# fetch and automated messages (greeting, queue position) succeed once, as with a real LINE,
# instead of failing and being retried for the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
REQUESTS=${REQUESTS:-600000}
cargo build --release --quiet
ceiling_bin=$(cargo bench --no-run --bench ceiling_server --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "ceiling_server" and m.get("executable"):
        print(m["executable"])')
work=$(mktemp -d)
pid=
line_pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  [ -n "$line_pid" ] && kill "$line_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
python3 benches/signed_webhooks.py --requests "$REQUESTS" --events-per-ms "${EVENTS_PER_MS:-32}" > "$work/requests.tsv"

run() { # name, then the command that serves
  local name=$1; shift
  rm -rf "$work/db"
  taskset -c 0 "$@" > "$work/stdout" 2> "$work/stderr" &
  pid=$!
  for _ in $(seq 100); do grep -q '^listening on ' "$work/stdout" && break; sleep 0.1; done
  url=$(sed -n 's/^listening on //p' "$work/stdout")
  echo "== $name ($url, ${CONNECTIONS} connections, ${DURATION}s)"
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s benches/wrk_webhooks.lua "$url" -- "$work/requests.tsv" 1 | tee "$work/wrk.txt"
  rate=$(sed -n 's/^Requests\/sec: *//p' "$work/wrk.txt")
  echo "$round|$name|$rate" >> "$work/rates"
  curl -s "$url/metrics" | grep -E '^linedesk_(webhook_requests|webhook_events_stored|journal)' | grep -v ' 0$' || true
  kill -TERM "$pid"; wait "$pid" || true; pid=
}

LINEDESK__LOG__LEVEL=warn taskset -c 1 target/release/linedesk fake-line > "$work/line.stdout" &
line_pid=$!
for _ in $(seq 100); do grep -q '^listening on ' "$work/line.stdout" && break; sleep 0.1; done
line_url=$(sed -n 's/^listening on //p' "$work/line.stdout")
for round in $(seq "${ROUNDS:-3}"); do
  run ceiling "$ceiling_bin"
  for durability in ${DURABILITIES:-flush os}; do
    LINEDESK__SERVER__BIND=127.0.0.1:0 LINEDESK__SERVER__WORKERS=1 \
    LINEDESK__STORAGE__PATH="$work/db" LINEDESK__STORAGE__DURABILITY="$durability" \
    LINEDESK__LINE__API_BASE="$line_url" LINEDESK__LINE__DATA_API_BASE="$line_url" \
    LINEDESK__LOG__LEVEL=warn \
      run "linedesk durability=$durability" "${LINEDESK:-target/release/linedesk}" serve
  done
done
echo "== ratios to the ceiling of the same round"
python3 - "$work/rates" <<'PY'
import statistics, sys
rounds = {}
for line in open(sys.argv[1]):
    r, name, rate = line.strip().split("|")
    rounds.setdefault(r, {})[name] = float(rate)
ratios = {}
for r, rates in rounds.items():
    for name, rate in rates.items():
        ratio = rate / rates["ceiling"]
        ratios.setdefault(name, []).append((rate, ratio))
        print(f"round {r}  {name:<28} {rate:8.0f}/s  {ratio:.2f} of the ceiling")
for name, runs in ratios.items():
    if name != "ceiling":
        print(f"median  {name:<28} {statistics.median(x for _, x in runs):.2f} of the ceiling"
              f" (rounds: {', '.join(f'{x:.2f}' for _, x in runs)})")
PY
