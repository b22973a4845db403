#!/usr/bin/env python3
"""Writes N signed LINE webhook requests, one per line: `signature<TAB>body`.

Each body carries one text event with a unique webhookEventId, from one of --users LINE users,
signed with the demo account's development secret. Used by benches/ingest.sh with wrk.
"""
import argparse, base64, hashlib, hmac, json, sys

p = argparse.ArgumentParser()
p.add_argument("--requests", type=int, default=500_000)
p.add_argument("--users", type=int, default=1000)
p.add_argument("--secret", default="linedesk-demo-channel-secret-dev")
p.add_argument("--id-prefix", default="01LOAD", help="6 characters; vary it to reuse a database")
p.add_argument("--events-per-ms", type=int, default=32,
               help="events sharing each millisecond `timestamp`: LINE stamps an event with the "
                    "time its user sent it, and at the ~30,000 events/s this bench delivers about "
                    "30 share a millisecond")
a = p.parse_args()
key = a.secret.encode()
out = sys.stdout
for i in range(a.requests):
    body = json.dumps({
        "destination": "U0123456789abcdef0123456789abcdef",
        "events": [{
            "type": "message",
            "message": {"type": "text", "id": str(10**12 + i), "quoteToken": "q" * 20,
                        "text": f"hello from the load test {i}"},
            "webhookEventId": f"{a.id_prefix}{i:020d}",
            "deliveryContext": {"isRedelivery": False},
            "timestamp": 1_700_000_000_000 + i // a.events_per_ms,
            "source": {"type": "user", "userId": f"U{i % a.users:032x}"},
            "replyToken": f"{i:032x}",
            "mode": "active",
        }],
    }, separators=(",", ":"))
    sig = base64.b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()).decode()
    out.write(f"{sig}\t{body}\n")
