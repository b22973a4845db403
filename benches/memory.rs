//! Memory per live conversation actor and per passivated conversation (RSS, not a timing).
//!
//! Run: `cargo bench --bench memory`. LIVE (default 100,000) and PASSIVATED (default 1,000,000)
//! change the counts; the defaults take several minutes and a few GiB of disk.
//!
//! Three measurements, each read after `malloc_trim` so that memory the allocator keeps for
//! reuse does not count as held:
//! 1. PASSIVATED conversations created, then all passivated, in this process;
//! 2. LIVE conversation actors alive at once (RSS growth per actor);
//! 3. a fresh process opening the database of all of them, as after a restart: what a node
//!    pays for conversations it is not talking to, how long until it could accept webhooks
//!    (sled, journal and conversation store open, registry started, open conversations read:
//!    what `Application::build` does before it listens), and how long until the router has
//!    re-queued every open conversation (`RestoreRouting`, as at start-up).
//!
//! The bench's conversations are created without a routing table, so their summaries carry no
//! queue; phase 3 gives the unclassified ones the default queue before restoring them, so the
//! router does the work a restart of classified conversations costs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use linedesk::settings::{Durability, Settings};
use linedesk::storage::{IncomingEvent, Journal, SledConversationStore};
use linedesk_actors::conversation::{
    ConversationSettings, ConversationStore, EventsStored, GetRegistryStats, Registry,
    RuntimeSettings,
};
use linedesk_actors::conversation::{RoutingInfo, Status};
use linedesk_actors::domain::{AccountId, ConversationKey, LineSource};
use linedesk_actors::router::actor::Router;
use linedesk_actors::router::messages::{GetRouterStats, OpenConversation, RestoreRouting};
use serde_json::value::RawValue;

const LIMIT: Duration = Duration::from_secs(3_600);

fn rss_mib() -> f64 {
    // SAFETY: malloc_trim only returns free heap memory to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open(path: &Path) -> (Journal, SledConversationStore) {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(64 << 20)
        .open()
        .unwrap();
    let journal = Journal::open(db.clone(), Durability::Os).unwrap();
    let store = SledConversationStore::open(&db, journal.clone()).unwrap();
    (journal, store)
}

fn registry(store: &SledConversationStore, idle: Duration) -> Addr<Registry> {
    let runtime = RuntimeSettings {
        snapshot_every: 50,
        idle_passivate: idle,
        timer_resolution: Duration::from_secs(3_600),
        arbiters: 0,
    };
    Registry::new(
        Arc::new(store.clone()),
        ConversationSettings::default(),
        runtime,
    )
    .start()
}

/// Appends one text event for each user in `users`, tells the registry, and waits until every
/// conversation has applied it (nothing pending).
async fn feed(
    journal: &Journal,
    store: &SledConversationStore,
    registry: &Addr<Registry>,
    users: std::ops::Range<usize>,
) {
    let account = AccountId::parse("demo").unwrap();
    let total = users.len();
    let started = Instant::now();
    for (i, chunk) in users.collect::<Vec<_>>().chunks(1_000).enumerate() {
        let events = chunk
            .iter()
            .map(|&u| IncomingEvent {
                webhook_event_id: format!("E{u}"),
                conversation: ConversationKey::new(
                    account.clone(),
                    LineSource::user(format!("U{u:032x}")).unwrap(),
                ),
                raw: RawValue::from_string(format!(
                    r#"{{"type":"message","message":{{"type":"text","id":"{u}","quoteToken":"q","text":"hello"}},"webhookEventId":"E{u}","deliveryContext":{{"isRedelivery":false}},"timestamp":1700000000000,"source":{{"type":"user","userId":"U{u:032x}"}},"mode":"active"}}"#
                ))
                .unwrap(),
                inbound: None,
            })
            .collect();
        let outcome = journal.append(&account, events, now_ms()).await.unwrap();
        for (key, seq) in outcome.latest {
            registry.do_send(EventsStored {
                key,
                seq,
                events: Vec::new(),
            });
        }
        // Keep the mailboxes from running far ahead of the actors.
        while store.pending().unwrap().len() > 5_000 {
            actix::clock::sleep(Duration::from_millis(20)).await;
        }
        if i % 100 == 99 {
            eprintln!(
                "  {} of {total} conversations created ({:.0}/s)",
                (i + 1) * 1_000,
                ((i + 1) * 1_000) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let deadline = Instant::now() + LIMIT;
    while !store.pending().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "conversations did not catch up in time"
        );
        actix::clock::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_until_none_live(registry: &Addr<Registry>) {
    let deadline = Instant::now() + LIMIT;
    while registry.send(GetRegistryStats).await.unwrap().live > 0 {
        assert!(
            Instant::now() < deadline,
            "conversations did not passivate in time"
        );
        actix::clock::sleep(Duration::from_millis(200)).await;
    }
}

/// Phase 3, in a child process: open the database as a restarted node would.
fn reopened(path: &Path) {
    System::new().block_on(async move {
        let base = rss_mib();
        let started = Instant::now();
        let (_journal, store) = open(path);
        let registry = registry(&store, Duration::from_secs(60));
        let opened = rss_mib();
        let open = store.open_conversations().unwrap();
        let ready = started.elapsed();
        let settings = Settings::load_from(None, std::iter::empty()).unwrap();
        let router = Router::new(
            settings.queue_policies(),
            settings.routing.missed_offers_to_away,
        )
        .start();
        let default_queue = RoutingInfo {
            workstream: "support".into(),
            queue: "general".into(),
            skills: Default::default(),
            priority: 0,
            units: 1,
            rule: None,
            direct_to: None,
        };
        let count = open.len();
        let requeued = router
            .send(RestoreRouting {
                conversations: open
                    .into_iter()
                    .map(|c| OpenConversation {
                        agent: None,
                        conversation: c.id,
                        status: Status::Queued,
                        routing: Some(c.routing.unwrap_or_else(|| default_queue.clone())),
                        since_ms: c.opened_at_ms,
                        capacity_held: false,
                    })
                    .collect(),
            })
            .await
            .unwrap();
        let waiting = router.send(GetRouterStats).await.unwrap().waiting;
        let restored = started.elapsed();
        let stats = registry.send(GetRegistryStats).await.unwrap();
        let rss = rss_mib();
        println!(
            "restarted on that database: RSS {opened:.1} MiB (process baseline {base:.1} MiB), {} live actors; \
             {rss:.1} MiB once every open conversation is read and waiting in the router",
            stats.live
        );
        println!(
            "restart: ready to accept webhooks after {:.2} s ({count} open conversations read); \
             {requeued} re-queued ({waiting} waiting) after {:.2} s",
            ready.as_secs_f64(),
            restored.as_secs_f64()
        );
        System::current().stop();
    });
}

/// Phases 1 and 2, in a child process (which ends before phase 3 opens the database).
fn create(path: &Path) {
    let live = count("LIVE", 100_000);
    let passivated = count("PASSIVATED", 1_000_000);
    let path = path.to_owned();
    System::new().block_on(async move {
        let (journal, store) = open(&path);
        let base = rss_mib();

        let short = registry(&store, Duration::from_secs(2));
        let started = Instant::now();
        feed(&journal, &store, &short, 0..passivated).await;
        wait_until_none_live(&short).await;
        let after_passivated = rss_mib();
        println!(
            "{passivated} conversations created and passivated: RSS {after_passivated:.1} MiB (baseline {base:.1} MiB), {:.0} conversations/s",
            passivated as f64 / started.elapsed().as_secs_f64()
        );

        let long = registry(&store, Duration::from_secs(3_600));
        let before_live = rss_mib();
        feed(&journal, &store, &long, passivated..passivated + live).await;
        let stats = long.send(GetRegistryStats).await.unwrap();
        let after_live = rss_mib();
        println!(
            "{} live conversation actors: RSS {after_live:.1} MiB, {:.0} bytes per live actor",
            stats.live,
            (after_live - before_live) * 1024.0 * 1024.0 / stats.live.max(1) as f64
        );
        journal.flush().await.unwrap();
        System::current().stop();
    });
}

const PHASE: &str = "LINEDESK_MEMORY_BENCH_PHASE";
const DATA: &str = "LINEDESK_MEMORY_BENCH_DATA";

fn main() {
    match (std::env::var(PHASE).as_deref(), std::env::var(DATA)) {
        (Ok("create"), Ok(path)) => create(Path::new(&path)),
        (Ok("reopen"), Ok(path)) => reopened(Path::new(&path)),
        _ => {
            let dir = tempfile::tempdir().unwrap();
            for phase in ["create", "reopen"] {
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .env(PHASE, phase)
                    .env(DATA, dir.path())
                    .status()
                    .unwrap();
                assert!(status.success(), "phase {phase} failed");
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
