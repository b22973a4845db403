//! Journal append with group commit: webhook deliveries of one text event each, stored and made
//! as durable as `storage.durability` says, by `WRITERS` concurrent deliveries (as concurrent
//! webhook requests would). Run: `cargo bench --bench journal`.
//!
//! One iteration is one round: every writer appends its delivery and waits for `commit`; the
//! round ends when all have. Throughput is in events, so rounds of different widths compare.
//! `flush` waits for an fsync shared by the round (group commit); `os` only for sled's memory.

use std::time::{Duration, Instant};

use actix::System;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use linedesk::settings::Durability;
use linedesk::storage::{IncomingEvent, Journal};
use linedesk_actors::domain::{AccountId, ConversationKey, LineSource};
use serde_json::value::RawValue;

const USERS: u64 = 1_000;

fn delivery(id: u64) -> Vec<IncomingEvent> {
    let user = id % USERS;
    let raw = RawValue::from_string(format!(
        r#"{{"type":"message","message":{{"type":"text","id":"{id}","quoteToken":"q","text":"hello {id}"}},"webhookEventId":"E{id}","deliveryContext":{{"isRedelivery":false}},"timestamp":1700000000000,"source":{{"type":"user","userId":"U{user:032x}"}},"replyToken":"r","mode":"active"}}"#
    ))
    .unwrap();
    vec![IncomingEvent {
        webhook_event_id: format!("E{id}"),
        timestamp_ms: 1_700_000_000_000,
        conversation: ConversationKey::new(
            AccountId::parse("demo").unwrap(),
            LineSource::user(format!("U{user:032x}")).unwrap(),
        ),
        raw,
        inbound: None,
    }]
}

fn append_and_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal_append_commit");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for durability in [Durability::Flush, Durability::Os] {
        for writers in [1u64, 16, 64] {
            group.throughput(Throughput::Elements(writers));
            let name = format!("{durability:?}").to_lowercase();
            group.bench_with_input(BenchmarkId::new(name, writers), &writers, |b, &writers| {
                b.iter_custom(|rounds| {
                    System::new().block_on(async move {
                        let dir = tempfile::tempdir().unwrap();
                        let db = sled::Config::new()
                            .path(dir.path())
                            .cache_capacity(16 << 20)
                            .open()
                            .unwrap();
                        let journal = Journal::open(db, durability).unwrap();
                        let account = AccountId::parse("demo").unwrap();
                        let mut next = 0u64;
                        let start = Instant::now();
                        for _ in 0..rounds {
                            let round = (0..writers).map(|_| {
                                next += 1;
                                let (journal, account) = (journal.clone(), account.clone());
                                let events = delivery(next);
                                async move {
                                    journal.append(&account, events, 1).await.unwrap();
                                    journal.commit().await.unwrap();
                                }
                            });
                            futures_util::future::join_all(round).await;
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, append_and_commit);
criterion_main!(benches);
