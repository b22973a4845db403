//! Issue 7's restart target, measured: 1,000,000 persisted conversations, 100,000 of them still
//! queued and 10,000 live; RSS, how long a restart takes to be ready for webhooks, and how long
//! until routing holds every queued conversation again (RSS, not a criterion timing).
//!
//! Run: `LIVE=10000 PASSIVATED=1000000 cargo bench --bench memory` (the defaults). QUEUED
//! (default 90,000) of the PASSIVATED conversations stay queued; the others are group chats
//! the account left, closed and archived by the state machine like any conversation whose chat
//! ends. LIVE more conversations stay queued and live. So a restart finds PASSIVATED + LIVE
//! persisted conversations, QUEUED + LIVE of them queued. CACHE_MIB (e.g. `64,16`) repeats the
//! restart with those sled cache capacities; the default is `storage.cache_capacity_bytes`.
//!
//! Every RSS is read after the allocator returned its free memory (`mi_collect`, or `malloc_trim`
//! with `--no-default-features`), so that memory it keeps for reuse does not
//! count as held. The phases run in child processes:
//! 1. create: the conversations, classified by the default settings' routing table (no
//!    router), then passivated, then LIVE live actors on top; then stopped cleanly, as the
//!    server stops (`storage.snapshot_on_stop`), or as a crash leaves it with SNAPSHOT_ON_STOP=0;
//! 2. restart, as `Application::build` then `run_until_stopped` do it: storage open, registry
//!    and router started (ready: the server would listen here), then the open conversations
//!    streamed into the router (`RoutingRestore`), timed until the router holds them all;
//! 3. the same restart as before branch restart-ready: every open conversation read, then sent
//!    in one `RestoreRouting`, before listening.
//!
//! The phases can be run alone on a kept folder: `LINEDESK_MEMORY_BENCH_PHASE=create|stream|read-all
//! LINEDESK_MEMORY_BENCH_DATA=folder LINEDESK_MEMORY_BENCH_CACHE=bytes` on the bench binary
//! (e.g. under heaptrack).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use linedesk::metrics::Metrics;
use linedesk::settings::{Durability, Settings};
use linedesk::startup::RoutingRestore;
use linedesk::storage::{IncomingEvent, Journal, SledConversationStore};
use linedesk_actors::conversation::{
    ConversationLinks, ConversationSettings, ConversationStore, EventsStored, GetRegistryStats,
    Registry, RuntimeSettings,
};
use linedesk_actors::domain::{AccountId, AgentId, ConversationKey, LineSource};
use linedesk_actors::router::actor::Router;
use linedesk_actors::router::messages::{GetRouterStats, OpenConversation, RestoreRouting};
use serde_json::value::RawValue;

const LIMIT: Duration = Duration::from_secs(3_600);

fn rss_mib() -> f64 {
    release_free_memory();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Bytes the allocator has handed out and not got back (RSS minus this is free memory it
/// keeps, or fragmentation).
/// Hands the allocator's free memory back to the OS before RSS is read, so that memory kept
/// for reuse does not count as used.
fn release_free_memory() {
    #[cfg(feature = "mimalloc")]
    {
        extern "C" {
            // In every mimalloc build; the Rust crate declares it only with `extended`.
            fn mi_collect(force: bool);
        }
        // SAFETY: mi_collect only frees memory mimalloc holds and no one uses.
        unsafe { mi_collect(true) }
    }
    // SAFETY: malloc_trim only returns free heap memory to the OS.
    #[cfg(not(feature = "mimalloc"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Only glibc's counters are read; mimalloc (the default feature) keeps none this cheap.
fn heap_in_use() -> String {
    if cfg!(feature = "mimalloc") {
        return "not read under mimalloc".to_owned();
    }
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let info = unsafe { libc::mallinfo2() };
    format!(
        "{:.1} MiB",
        (info.uordblks + info.hblkhd) as f64 / 1024.0 / 1024.0
    )
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn settings() -> Settings {
    Settings::load_from(None, std::iter::empty()).unwrap()
}

/// Opens the database as `storage.open()` does, with `cache` bytes of sled cache.
fn open(path: &Path, cache: u64) -> (Journal, SledConversationStore) {
    let mut storage = settings().storage;
    storage.path = path.to_owned();
    storage.cache_capacity_bytes = cache;
    let db = storage.open().unwrap();
    let journal = Journal::open(db.clone(), path, Durability::Os).unwrap();
    let store = SledConversationStore::open(&db, journal.clone()).unwrap();
    (journal, store)
}

/// A registry whose conversations classify with the default routing table (no router, no LINE).
fn registry(store: &SledConversationStore, idle: Duration) -> Addr<Registry> {
    let runtime = RuntimeSettings {
        snapshot_every: 50,
        idle_passivate: idle,
        timer_resolution: Duration::from_secs(3_600),
        arbiters: 0,
    };
    let links = ConversationLinks {
        routing: Arc::new(settings().routing_table()),
        router: None,
        positions: None,
        outbound: None,
        agents: Arc::new(std::collections::HashMap::<AgentId, _>::new()),
    };
    Registry::new(
        Arc::new(store.clone()),
        ConversationSettings::default(),
        runtime,
    )
    .with_links(links)
    .start()
}

/// Conversation `n`: a customer's one-to-one chat that waits for an agent, or (`closed`) a
/// group chat that the account leaves right after a member wrote.
fn events_of(n: usize, closed: bool) -> Vec<IncomingEvent> {
    let account = AccountId::parse("demo").unwrap();
    let user = format!("U{n:032x}");
    let (source, source_json) = match closed {
        false => (
            LineSource::user(user.clone()).unwrap(),
            format!(r#"{{"type":"user","userId":"{user}"}}"#),
        ),
        true => {
            let group = format!("C{n:032x}");
            (
                LineSource::group(group.clone()).unwrap(),
                format!(r#"{{"type":"group","groupId":"{group}","userId":"{user}"}}"#),
            )
        }
    };
    let key = ConversationKey::new(account, source);
    let common = format!(
        r#""deliveryContext":{{"isRedelivery":false}},"timestamp":1700000000000,"source":{source_json},"mode":"active""#
    );
    let mut events = vec![IncomingEvent {
        webhook_event_id: format!("E{n}"),
        timestamp_ms: 1_700_000_000_000,
        conversation: key.clone(),
        raw: RawValue::from_string(format!(
            r#"{{"type":"message","message":{{"type":"text","id":"{n}","quoteToken":"q","text":"hello"}},"webhookEventId":"E{n}",{common}}}"#
        ))
        .unwrap(),
        inbound: None,
    }];
    if closed {
        events.push(IncomingEvent {
            webhook_event_id: format!("L{n}"),
            timestamp_ms: 1_700_000_000_000,
            conversation: key,
            raw: RawValue::from_string(format!(
                r#"{{"type":"leave","webhookEventId":"L{n}",{common}}}"#
            ))
            .unwrap(),
            inbound: None,
        });
    }
    events
}

/// Stores the events of conversations `range` (closed when `closed(n)`), tells the registry,
/// and waits until every conversation has applied them (nothing pending).
async fn feed(
    journal: &Journal,
    store: &SledConversationStore,
    registry: &Addr<Registry>,
    range: std::ops::Range<usize>,
    closed: impl Fn(usize) -> bool,
) {
    let account = AccountId::parse("demo").unwrap();
    let total = range.len();
    let started = Instant::now();
    for (i, chunk) in range.collect::<Vec<_>>().chunks(1_000).enumerate() {
        let events = chunk
            .iter()
            .flat_map(|&n| events_of(n, closed(n)))
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

/// Phase 1, in a child process (which ends before a restart opens the database).
fn create(path: &Path, cache: Option<u64>) {
    let live = count("LIVE", 10_000);
    let passivated = count("PASSIVATED", 1_000_000);
    let queued = count("QUEUED", 90_000).min(passivated);
    let path = path.to_owned();
    System::new().block_on(async move {
        let cache = cache.unwrap_or(settings().storage.cache_capacity_bytes);
        let (journal, store) = open(&path, cache);
        let base = rss_mib();

        let short = registry(&store, Duration::from_secs(2));
        let started = Instant::now();
        // Every tenth-or-so conversation stays queued, spread over the key space.
        let stride = passivated / queued.max(1);
        let closed = move |n: usize| queued == 0 || n % stride != 0 || n / stride >= queued;
        feed(&journal, &store, &short, 0..passivated, closed).await;
        wait_until_none_live(&short).await;
        let after_passivated = rss_mib();
        println!(
            "{passivated} conversations created and passivated ({} queued, the rest closed), sled \
             cache {} MiB: RSS {after_passivated:.1} MiB (baseline {base:.1} MiB), {:.0} conversations/s",
            (0..passivated).filter(|&n| !closed(n)).count(),
            cache >> 20,
            passivated as f64 / started.elapsed().as_secs_f64()
        );

        let long = registry(&store, Duration::from_secs(3_600));
        let before_live = rss_mib();
        feed(&journal, &store, &long, passivated..passivated + live, |_| false).await;
        let stats = long.send(GetRegistryStats).await.unwrap();
        let after_live = rss_mib();
        println!(
            "{} live conversation actors (queued) on top: RSS {after_live:.1} MiB, {:.0} bytes per live actor",
            stats.live,
            (after_live - before_live) * 1024.0 * 1024.0 / stats.live.max(1) as f64
        );
        // As the server's shutdown does after its snapshots.
        journal.settle().await.unwrap();
        journal.flush().await.unwrap();
        System::current().stop();
    });
}

/// What `linedesk serve` does after a clean stop (`storage.snapshot_on_stop`): open the
/// database once more, in a process of its own here, so that sled writes its page-table snapshot.
fn snapshot_on_stop(path: &Path) {
    let mut storage = settings().storage;
    storage.path = path.to_owned();
    let took = storage.snapshot_now().unwrap();
    println!(
        "clean stop: database snapshot written in {:.2} s",
        took.as_secs_f64()
    );
}

fn restart(path: &Path, cache: u64, old: bool) {
    let path = path.to_owned();
    System::new().block_on(async move {
        let settings = settings();
        let base = rss_mib();
        let started = Instant::now();
        let (_journal, store) = open(&path, cache);
        let registry = registry(&store, Duration::from_secs(60));
        let router = Router::new(
            settings.queue_policies(),
            settings.routing.missed_offers_to_away,
        );
        let (ready, ready_rss, restored) = if old {
            let router = router.start();
            let mut open = Vec::new();
            let mut after = None;
            loop {
                let chunk = store.open_conversations_after(after.as_ref(), 100_000).unwrap();
                if chunk.is_empty() {
                    break;
                }
                after = chunk.last().map(|c| c.id.clone());
                open.extend(chunk.into_iter().map(|c| OpenConversation {
                    agent: None,
                    conversation: c.id,
                    status: c.status,
                    routing: c.routing,
                    since_ms: c.opened_at_ms,
                    capacity_held: c.capacity_held,
                }));
            }
            let ready = started.elapsed();
            let ready_rss = rss_mib();
            eprintln!("  heap in use at ready: {}", heap_in_use());
            let restored = router
                .send(RestoreRouting {
                    conversations: open,
                    last: true,
                })
                .await
                .unwrap();
            (ready, ready_rss, (restored, router))
        } else {
            let router = router.restoring().start();
            let (restore, _restored) = RoutingRestore::new(
                store.clone(),
                router.clone(),
                settings.routing.restore_chunk,
                Arc::new(Metrics::default()),
            );
            let ready = started.elapsed();
            let ready_rss = rss_mib();
            eprintln!("  heap in use at ready: {}", heap_in_use());
            let restored = restore.run().await.unwrap();
            (ready, ready_rss, (restored, router))
        };
        let (restored, router) = restored;
        let waiting = router.send(GetRouterStats).await.unwrap().waiting;
        let requeued = started.elapsed();
        let stats = registry.send(GetRegistryStats).await.unwrap();
        let rss = rss_mib();
        println!(
            "restart ({}, sled cache {} MiB): ready for webhooks after {:.3} s (RSS {ready_rss:.1} MiB); \
             {restored} open conversations restored, {waiting} waiting in the router, after {:.2} s; \
             RSS {rss:.1} MiB, heap in use {} (process baseline {base:.1} MiB, {} live actors)",
            if old { "read all, then listen (before)" } else { "listen, then stream (after)" },
            cache >> 20,
            ready.as_secs_f64(),
            requeued.as_secs_f64(),
            heap_in_use(),
            stats.live
        );
        System::current().stop();
    });
}

const PHASE: &str = "LINEDESK_MEMORY_BENCH_PHASE";
const DATA: &str = "LINEDESK_MEMORY_BENCH_DATA";
const CACHE: &str = "LINEDESK_MEMORY_BENCH_CACHE";

fn main() {
    let cache = std::env::var(CACHE).ok().and_then(|c| c.parse().ok());
    match (std::env::var(PHASE).as_deref(), std::env::var(DATA), cache) {
        (Ok("create"), Ok(path), cache) => create(Path::new(&path), cache.filter(|&c| c > 0)),
        (Ok("snapshot"), Ok(path), _) => snapshot_on_stop(Path::new(&path)),
        (Ok("stream"), Ok(path), Some(cache)) => restart(Path::new(&path), cache, false),
        (Ok("read-all"), Ok(path), Some(cache)) => restart(Path::new(&path), cache, true),
        _ => {
            let default = settings().storage.cache_capacity_bytes >> 20;
            let caches: Vec<u64> = std::env::var("CACHE_MIB")
                .unwrap_or_else(|_| default.to_string())
                .split(',')
                .map(|c| c.trim().parse().expect("CACHE_MIB: MiB, comma-separated"))
                .collect();
            let dir = tempfile::tempdir().unwrap();
            run("create", dir.path(), 0);
            // SNAPSHOT_ON_STOP=0 leaves the database as a crash would: the first restart then
            // replays sled's log.
            if settings().storage.snapshot_on_stop
                && std::env::var("SNAPSHOT_ON_STOP").as_deref() != Ok("0")
            {
                run("snapshot", dir.path(), 0);
            }
            // sled 0.34 replays its log since the last open when it opens (and snapshots then),
            // so the first restart after a busy run is the slow one: each way gets one on its
            // own copy of the database, then both restart again warm with each cache size.
            let copy = tempfile::tempdir().unwrap();
            let copied = std::process::Command::new("cp")
                .arg("-a")
                .arg(dir.path().join("."))
                .arg(copy.path())
                .status()
                .unwrap();
            assert!(copied.success(), "the database could not be copied");
            let first = caches[0] << 20;
            println!("first restarts after the run that wrote the database:");
            run("stream", dir.path(), first);
            run("read-all", copy.path(), first);
            drop(copy);
            println!("restarts again:");
            for cache in caches {
                run("stream", dir.path(), cache << 20);
                run("read-all", dir.path(), cache << 20);
            }
        }
    }
}

/// Runs one phase in a child process.
fn run(phase: &str, data: &Path, cache: u64) {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .env(PHASE, phase)
        .env(DATA, data)
        .env(CACHE, cache.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "phase {phase} failed");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
