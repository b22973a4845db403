//! Conversation actors: events per second through journal → live actor → snapshot, the
//! snapshot codec, and what one more message costs a save as a conversation grows. Run:
//! `cargo bench --bench conversations`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use linedesk::line::{events, inbound};
use linedesk::settings::Durability;
use linedesk::storage::{IncomingEvent, Journal, SledConversationStore};
use linedesk_actors::conversation::state::Transcript;
use linedesk_actors::conversation::{
    AskConversation, ConversationSettings, ConversationState, ConversationStore, Question,
    Registry, RuntimeSettings,
};
use linedesk_actors::domain::{
    AccountId, Content, ConversationKey, Inbound, InboundKind, LineSource,
};
use serde_json::value::RawValue;

fn key(user: usize) -> ConversationKey {
    ConversationKey::new(
        AccountId::parse("demo").unwrap(),
        LineSource::user(format!("U{user:032x}")).unwrap(),
    )
}

fn raw_text(id: u64, user: usize) -> Box<RawValue> {
    RawValue::from_string(format!(
        r#"{{"type":"message","message":{{"type":"text","id":"{id}","quoteToken":"q","text":"hello {id}"}},"webhookEventId":"E{id}","deliveryContext":{{"isRedelivery":false}},"timestamp":1700000000000,"source":{{"type":"user","userId":"U{user:032x}"}},"replyToken":"r","mode":"active"}}"#
    ))
    .unwrap()
}

/// `rounds` × `users` events: each round appends one event per user (the journal notifies the
/// registry, handing over the events) and waits until every actor has applied it (its answer
/// is the synchronisation point).
fn through_actors(c: &mut Criterion) {
    const USERS: usize = 100;
    let mut group = c.benchmark_group("conversation_pipeline");
    group.throughput(Throughput::Elements(USERS as u64));
    group.sample_size(20);
    group.bench_function("append_notify_apply_100_users", |b| {
        b.iter_custom(|iters| {
            System::new().block_on(async move {
                let dir = tempfile::tempdir().unwrap();
                let db = sled::Config::new().path(dir.path()).open().unwrap();
                let journal = Journal::open(db.clone(), dir.path(), Durability::Os).unwrap();
                let store = SledConversationStore::open(&db, journal.clone()).unwrap();
                let runtime = RuntimeSettings {
                    snapshot_every: 50,
                    idle_passivate: Duration::from_secs(3_600),
                    timer_resolution: Duration::from_secs(3_600),
                    arbiters: 0,
                };
                let registry =
                    Registry::new(Arc::new(store), ConversationSettings::default(), runtime);
                journal.notify(registry.live_conversations());
                let registry = registry.start();
                let account = AccountId::parse("demo").unwrap();
                let mut next_id = 0u64;
                let start = Instant::now();
                for _ in 0..iters {
                    let events = (0..USERS)
                        .map(|u| {
                            next_id += 1;
                            let raw = raw_text(next_id, u);
                            let event = events::parse_event(raw.get()).unwrap();
                            IncomingEvent {
                                webhook_event_id: format!("E{next_id}"),
                                timestamp_ms: 1_700_000_000_000,
                                conversation: key(u),
                                inbound: Some(inbound::to_inbound("demo", &event, 0, now_ms())),
                                raw,
                            }
                        })
                        .collect();
                    // The journal tells the registry, as in the server.
                    journal.append(&account, events, now_ms()).await.unwrap();
                    for u in 0..USERS {
                        registry
                            .send(AskConversation {
                                key: key(u),
                                question: Question::Get,
                            })
                            .await
                            .unwrap()
                            .unwrap();
                    }
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn message(seq: u64) -> Inbound {
    Inbound {
        seq,
        webhook_event_id: format!("E{seq}"),
        at_ms: 1,
        received_at_ms: 1,
        sender: Some("U1".into()),
        reply_token: None,
        redelivery: false,
        kind: InboundKind::Message {
            message_id: seq.to_string(),
            content: Content::Text {
                text: "ご注文の件で質問があります".into(),
            },
            quote_token: None,
        },
    }
}

/// One message more in a conversation already `n` messages long, and its save: a conversation
/// open for days should not cost more per message as it grows.
fn save_one_more_message(c: &mut Criterion) {
    let settings = ConversationSettings::default();
    let mut group = c.benchmark_group("save_one_more_message");
    for n in [20u64, 200, 1_000] {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let journal = Journal::open(db.clone(), dir.path(), Durability::Os).unwrap();
        let store = SledConversationStore::open(&db, journal).unwrap();
        let mut state = ConversationState::new(key(1));
        for seq in 1..=n {
            state.apply(&message(seq), &settings);
        }
        store.save(&mut state).unwrap();
        group.bench_function(format!("after_{n}"), |b| {
            b.iter_batched(
                || with_room_for_one_more(&state),
                |mut state| {
                    state.apply(&message(n + 1), &settings);
                    store.save(&mut state).unwrap();
                    // Dropped by criterion outside the timing: freeing the clone's n entries
                    // is the bench's own cost, not the save's.
                    state
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A copy of `state` whose transcript has room for one more entry, as a live conversation's
/// has: a plain clone's is full, and its first push would copy all `n` entries over.
fn with_room_for_one_more(state: &ConversationState) -> ConversationState {
    let mut copy = state.clone();
    if let Some(conversation) = copy.current.as_mut() {
        let mut entries = Vec::with_capacity(conversation.transcript.len() + 1);
        entries.extend(conversation.transcript.iter().cloned());
        conversation.transcript = Transcript::saved(entries);
    }
    copy
}

fn snapshot_codec(c: &mut Criterion) {
    let settings = ConversationSettings::default();
    let mut state = ConversationState::new(key(1));
    for seq in 1..=20u64 {
        state.apply(&message(seq), &settings);
    }
    let bytes = serde_json::to_vec(&state).unwrap();
    let mut group = c.benchmark_group("snapshot_20_messages");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| b.iter(|| serde_json::to_vec(&state).unwrap()));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| serde_json::from_slice::<ConversationState>(&bytes).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    through_actors,
    snapshot_codec,
    save_one_more_message
);
criterion_main!(benches);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
