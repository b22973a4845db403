//! Journal append with group commit: webhook deliveries of one text event each, stored and made
//! as durable as `storage.durability` says, by `WRITERS` concurrent deliveries (as concurrent
//! webhook requests would). Run: `cargo bench --bench journal`.
//!
//! One iteration is one round: every writer appends its delivery and waits for `commit`; the
//! round ends when all have. Throughput is in events, so rounds of different widths compare.
//! `flush` waits for an fsync shared by the round (group commit); `os` only for sled's memory.
//!
//! `journal_layout` prices the journal's writes in sled alone (no server, no actors), in
//! batches of 34 events as ingest forms them: the event records keyed by chat as stored today
//! beside their redelivery checks, the checks alone (what a journal keeping its records
//! outside sled would leave in sled), and the records keyed in one arrival order. The
//! seventh round of `docs/benchmarks.md` takes ingest apart the same way over HTTP.

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

/// sled as the server opens it by default (16 MiB cache).
fn open_db(path: &std::path::Path) -> sled::Db {
    sled::Config::new()
        .path(path)
        .cache_capacity(16 << 20)
        .open()
        .unwrap()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal_append");
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
                        let db = open_db(dir.path());
                        let journal = Journal::open(db, dir.path(), durability).unwrap();
                        let account = AccountId::parse("demo").unwrap();
                        let mut next = 0u64;
                        let start = Instant::now();
                        for _ in 0..rounds {
                            let round = (0..writers).map(|_| {
                                next += 1;
                                let (journal, account) = (journal.clone(), account.clone());
                                let events = delivery(next);
                                // As a webhook: `append` returns once the events are as
                                // durable as asked (the event log's fsync with `flush`).
                                async move {
                                    journal.append(&account, events, 1).await.unwrap();
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

/// How the events of a batch are laid out in sled, for `journal_layout`.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// `e` chat `\0` seq → record, and `w` … id → seq: as the journal writes now.
    RecordsByChat,
    /// Only the `w` checks.
    ChecksOnly,
    /// `e` seq → record (one arrival order), and the checks.
    RecordsInArrivalOrder,
}

const BATCH: u64 = 34;

fn layout_batch(layout: Layout, first: u64, record: &[u8]) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for seq in first..first + BATCH {
        let chat = format!("demo:user:U{:032x}", seq % USERS);
        let mut check = b"w\0\0\x4e\x20demo\0E".to_vec();
        check.extend_from_slice(format!("{seq:020}").as_bytes());
        batch.insert(check, &seq.to_be_bytes());
        let key = match layout {
            Layout::ChecksOnly => continue,
            Layout::RecordsByChat => [b"e", chat.as_bytes(), b"\0", &seq.to_be_bytes()].concat(),
            Layout::RecordsInArrivalOrder => [&b"e\0"[..], &seq.to_be_bytes()].concat(),
        };
        batch.insert(key, record);
    }
    batch.insert(&b"mseq"[..], &(first + BATCH).to_be_bytes());
    batch
}

fn layouts(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal_layout");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(BATCH));
    // A stored record's size for a one-text webhook (~540 bytes).
    let record = vec![b'x'; 540];
    for layout in [
        Layout::RecordsByChat,
        Layout::ChecksOnly,
        Layout::RecordsInArrivalOrder,
    ] {
        let name = format!("{layout:?}");
        group.bench_function(BenchmarkId::new(name, BATCH), |b| {
            b.iter_custom(|batches| {
                let dir = tempfile::tempdir().unwrap();
                let db = open_db(dir.path());
                let tree = db.open_tree("journal").unwrap();
                // Every chat has events already, as after a minute of ingest.
                for first in (0..20 * USERS).step_by(BATCH as usize) {
                    tree.apply_batch(layout_batch(layout, first, &record))
                        .unwrap();
                }
                let mut first = 20 * USERS;
                let start = Instant::now();
                for _ in 0..batches {
                    tree.apply_batch(layout_batch(layout, first, &record))
                        .unwrap();
                    first += BATCH;
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append, layouts);
criterion_main!(benches);
