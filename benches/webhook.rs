//! Per-event cost of the webhook's CPU work: signature check plus parse, by payload size.
//! Run: `cargo bench --bench webhook`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use linedesk::line::{events, signature};
use serde_json::json;

const SECRET: &[u8] = b"linedesk-demo-channel-secret-dev";

fn body(events_per_request: usize, text_len: usize) -> Vec<u8> {
    let events: Vec<_> = (0..events_per_request)
        .map(|i| {
            json!({
                "type": "message",
                "message": {"type": "text", "id": format!("{i}"), "quoteToken": "q", "text": "あ".repeat(text_len / 3)},
                "webhookEventId": format!("01J00000000000000000{i:06}"),
                "deliveryContext": {"isRedelivery": false},
                "timestamp": 1_700_000_000_000u64,
                "source": {"type": "user", "userId": "U4af4980629ec1f5ca4e3e0c9a4f0e4b1"},
                "replyToken": "b60d432864f44d079f6d8efe86cf404b",
                "mode": "active"
            })
        })
        .collect();
    serde_json::to_vec(
        &json!({"destination": "U0123456789abcdef0123456789abcdef", "events": events}),
    )
    .unwrap()
}

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    events: Vec<&'a serde_json::value::RawValue>,
}

fn verify_and_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("webhook_verify_and_parse");
    for (events_per_request, text_len) in [(1, 30), (1, 3000), (10, 30), (100, 30)] {
        let body = body(events_per_request, text_len);
        let sig = signature::sign(SECRET, &body);
        group.throughput(Throughput::Elements(events_per_request as u64));
        group.bench_with_input(
            BenchmarkId::new(
                format!("{events_per_request}_events"),
                format!("{}B", body.len()),
            ),
            &body,
            |b, body| {
                b.iter(|| {
                    signature::verify(SECRET, body, Some(sig.as_bytes())).unwrap();
                    let envelope: Envelope<'_> = serde_json::from_slice(body).unwrap();
                    for raw in envelope.events {
                        events::parse_event(raw.get()).unwrap();
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, verify_and_parse);
criterion_main!(benches);
