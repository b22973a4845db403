//! The journal: every webhook event LINE delivered, stored once, in arrival order. It is the
//! conversation actors' journal: an actor rebuilds its state from its latest snapshot plus the
//! journal entries after the snapshot's sequence number.
//!
//! The events themselves, exactly as received, are in segment files beside the database (see
//! [`super::event_log`], which also keeps the index of each chat's uncovered events); a batch
//! is durable once its record is there. One sled tree holds what is derived from them, written
//! after the record and rebuilt from the log at open if a crash cut it off:
//! - `w` day account `\0` webhookEventId, and `d`, `mupg`: the redelivery checks (see
//!   [`super::redelivery`])
//! - `p`, `mchk`: how far snapshots cover the journal, so that a restart resumes the
//!   conversations with events past it (see [`super::uncovered`])
//! - `m` `seq`                                → the last sequence number handed out, as of the
//!   last checkpoint stored (the event log has the later ones)
//! - `mlse`                                   → the sequence numbers leased (see [`SEQ_LEASE`])
//! - `q` conversation-key `\0` seq(be u64)     → an uncovered event of a long-uncovered
//!   conversation, set aside so that the event log's older segments can go (see [`prune`])
//!
//! Sequence numbers are global and increase with every stored event. An event is removed (with
//! its whole segment) once a snapshot covers it and it is older than
//! `storage.journal_retention_secs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use linedesk_actors::conversation::{EventsStored, StoredEventsSink};
use linedesk_actors::domain::{AccountId, ConversationKey, Inbound};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::event_log::{EventLog, Place, Record, UncoveredIndex, SEGMENT_BYTES};
#[cfg(test)]
use super::redelivery::CHECKS_THROUGH;
use super::redelivery::{CheckBatch, RedeliveryChecks, EXPIRE_PER_PASS};
use super::uncovered::Uncovered;
use super::{corrupt, decode_seq, GroupCommit, StorageError};
use crate::settings::Durability;

/// Written into every record so that a later release can read (and upgrade) older ones.
pub const JOURNAL_FORMAT_VERSION: u16 = 1;

const TREE: &str = "journal";
const ASIDE: u8 = b'q';
/// Most segments one retention pass removes.
const PRUNE_PER_PASS: usize = 64;
const LAST_SEQ: &[u8] = b"mseq";
/// Sequence numbers up to this one may have been handed out (be u64). With `durability =
/// "os"` a power cut may take events from the log that a snapshot in sled already covers; a
/// start continues past the lease, so that no later event gets a number a snapshot covers
/// (the conversation would take it for one it has and skip it).
const SEQ_LEASE: &[u8] = b"mlse";
/// Sequence numbers leased at a time: one sled flush per this many events.
const LEASE_EVENTS: u64 = 1 << 16;

/// Idle this long, the writer stores how far snapshots cover the journal: a crash then
/// resumes only conversations with events really uncovered.
const SETTLE_WHEN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the writer removes redelivery checks past `storage.redelivery_window_days` and
/// events past `storage.journal_retention_secs` (and whenever it is idle, for the events).
const EXPIRE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// After a full pass (a backlog: the window was shortened, or the server was down for days).
const EXPIRE_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// How often at most the writer stores the checkpoint and the last sequence number while
/// events keep coming: a later one only makes a start read more of the event log.
const STORE_MARKS_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Most appends the writer folds into one sled batch.
const MAX_APPENDS_PER_BATCH: usize = 512;

/// One event as the journal keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Record format, [`JOURNAL_FORMAT_VERSION`] when written by this release.
    pub v: u16,
    pub seq: u64,
    pub conversation: ConversationKey,
    /// When linedesk acknowledged it (ms since the epoch); LINE's `timestamp` is in `event`.
    pub received_at_ms: i64,
    /// The event object exactly as LINE sent it, unknown types included.
    pub event: Box<RawValue>,
}

/// How long the journal keeps what it stored; 0 keeps for ever.
#[derive(Debug, Clone, Copy, Default)]
pub struct JournalRetention {
    /// `storage.redelivery_window_days`.
    pub redelivery_window_days: u32,
    /// `storage.journal_retention_secs`: covered events older than this are removed.
    pub event_secs: u64,
}

/// An event to store, already verified and parsed by the webhook.
#[derive(Debug)]
pub struct IncomingEvent {
    pub webhook_event_id: String,
    /// LINE's `timestamp`: the original event time, which a redelivery keeps. The redelivery
    /// check is filed under its day.
    pub timestamp_ms: i64,
    pub conversation: ConversationKey,
    pub raw: Box<RawValue>,
    /// The event as its conversation applies it (its `seq` is set when stored). Handed to the
    /// conversation with the notice, so that it need not read the journal back; without it the
    /// conversation reads the journal.
    pub inbound: Option<Inbound>,
}

/// What `append` did with a delivery.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Sequence numbers of the newly stored events, in input order.
    pub stored: Vec<u64>,
    /// Events seen before (same account and `webhookEventId`): acknowledged, not stored again.
    pub duplicates: usize,
    /// Each conversation that got new events, with its latest sequence number.
    pub latest: Vec<(ConversationKey, u64)>,
}

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    durability: Durability,
    /// To the writer thread; `None` only while dropping.
    appends: Mutex<Option<mpsc::Sender<Append>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    last_seq: Arc<AtomicU64>,
    group_commit: GroupCommit,
    batches: Arc<AtomicU64>,
    listener: Listener,
    uncovered: Arc<Mutex<Uncovered>>,
    index: Arc<Mutex<UncoveredIndex>>,
    log: Arc<Mutex<EventLog>>,
    /// The event log's folder, for reads that need not wait for its lock.
    log_dir: std::path::PathBuf,
    checks: Arc<RedeliveryChecks>,
    /// `storage.journal_retention_secs` in ms; 0 keeps every event.
    event_retention_ms: i64,
}

/// Where the writer reports stored events: the live conversations, once the registry is started.
type Listener = Arc<Mutex<Option<Box<dyn StoredEventsSink>>>>;

/// One delivery waiting for the writer.
struct Append {
    /// `None`: no events, only a request to settle (see [`Journal::settle`]).
    account: Option<AccountId>,
    events: Vec<IncomingEvent>,
    received_at_ms: i64,
    done: oneshot::Sender<Result<AppendOutcome, StorageError>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer; joining it releases its handle on the database,
        // so the folder can be opened again as soon as the last `Journal` is gone.
        drop(self.appends.get_mut().ok().and_then(Option::take));
        if let Some(writer) = self.writer.get_mut().ok().and_then(Option::take) {
            let _ = writer.join();
        }
    }
}

impl Journal {
    /// Keeps every event and every redelivery check. `dir` is the database's folder: the
    /// events go to its `events` folder.
    pub fn open(db: sled::Db, dir: &Path, durability: Durability) -> Result<Self, StorageError> {
        Self::open_expiring(db, dir, durability, JournalRetention::default())
    }

    /// Redelivery checks of events whose `timestamp` is more than `redelivery_window_days` old
    /// are removed, and covered events received more than `event_secs` ago, by the writer: a
    /// first pass as soon as it starts, before any append, then every minute (and when idle,
    /// for events).
    pub fn open_expiring(
        db: sled::Db,
        dir: &Path,
        durability: Durability,
        retention: JournalRetention,
    ) -> Result<Self, StorageError> {
        let options = Options {
            promote_after: super::uncovered::PROMOTE_AFTER,
            segment_bytes: SEGMENT_BYTES,
        };
        Self::open_with(db, dir, durability, retention, options)
    }

    fn open_with(
        db: sled::Db,
        dir: &Path,
        durability: Durability,
        retention: JournalRetention,
        options: Options,
    ) -> Result<Self, StorageError> {
        let tree = db.open_tree(TREE)?;
        let leased = match tree.get(SEQ_LEASE)? {
            Some(v) => decode_seq(SEQ_LEASE, &v)?,
            None => 0,
        };
        let last_seq = match tree.get(LAST_SEQ)? {
            Some(v) => decode_seq(LAST_SEQ, &v)?,
            None => 0,
        }
        // A clean stop leaves the lease at the last number; a crash, past it.
        .max(leased);
        let sync = durability == Durability::Flush;
        let mut log = EventLog::open(&dir.join("events"), sync, options.segment_bytes)?;
        let rewritten = rewrite_legacy(&tree, &mut log)?;
        if rewritten > 0 {
            tracing::info!(
                events = rewritten,
                "journal events of an older release moved to the event log"
            );
        }
        let mut uncovered = Uncovered::load(&tree, options.promote_after)?;
        // One read of the log's tail serves both: the marks, sequence number and checks sled
        // does not hold (past its stored checkpoint), and the index of what no snapshot covers.
        let checks = Arc::new(RedeliveryChecks::open(
            &tree,
            linedesk_actors::conversation::now_ms(),
            last_seq,
        )?);
        checks.set_window_days(retention.redelivery_window_days);
        let from = uncovered
            .covered_below()
            .min(last_seq + 1)
            .min(checks.through() + 1);
        let tail = log.records_from(from)?;
        let last_seq = recover_from_log(&tree, &checks, &tail, last_seq, &mut uncovered)?;
        let index = index_uncovered(&tree, tail, &uncovered)?;
        let log_dir = log.dir().to_owned();
        let last_seq = Arc::new(AtomicU64::new(last_seq));
        let batches = Arc::new(AtomicU64::new(0));
        let listener = Listener::default();
        let index = Arc::new(Mutex::new(index));
        let uncovered = Arc::new(Mutex::new(uncovered));
        let log = Arc::new(Mutex::new(log));
        let event_retention_ms =
            i64::try_from(retention.event_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let (sender, receiver) = mpsc::channel();
        let writer = Writer {
            tree: tree.clone(),
            last_seq: last_seq.clone(),
            batches: batches.clone(),
            listener: listener.clone(),
            uncovered: uncovered.clone(),
            index: index.clone(),
            log: log.clone(),
            checks: checks.clone(),
            event_retention_ms,
            next_expiry: std::time::Instant::now(),
            marks_stored_at: std::time::Instant::now(),
            leased: std::cell::Cell::new(leased),
        };
        let writer = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StorageError::Sled(sled::Error::Io(e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tree,
                durability,
                appends: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
                last_seq,
                group_commit: GroupCommit::default(),
                batches,
                listener,
                uncovered,
                index,
                log,
                log_dir,
                checks,
                event_retention_ms,
            }),
        })
    }

    /// Removes up to 2,000 redelivery checks past the window now; the writer does it every
    /// minute. Returns how many went.
    pub fn expire_redelivery_checks(&self, now_ms: i64) -> Result<usize, StorageError> {
        self.inner.checks.expire(&self.inner.tree, now_ms)
    }

    /// From now on every stored event is reported to `sink` (the registry's live
    /// conversations), by the writer, in sequence order, as soon as the appends that stored
    /// them are answered (their acknowledgement goes first; a conversation asked a question
    /// reads the journal first, so a caller that saw its append finish still finds them
    /// applied).
    pub fn notify(&self, sink: impl StoredEventsSink + 'static) {
        *self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(sink));
    }

    /// Stores the events that were not stored before, in order. When this returns they are in
    /// the event log, synced to disk with `durability = "flush"`: they may be acknowledged.
    ///
    /// Appends from concurrent deliveries are folded into one event log record by the writer
    /// thread: with `flush`, they share its fsync (group commit).
    pub async fn append(
        &self,
        account: &AccountId,
        events: Vec<IncomingEvent>,
        received_at_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        let (done, outcome) = oneshot::channel();
        let append = Append {
            account: Some(account.clone()),
            events,
            received_at_ms,
            done,
        };
        self.send(append, outcome).await
    }

    async fn send(
        &self,
        append: Append,
        outcome: oneshot::Receiver<Result<AppendOutcome, StorageError>>,
    ) -> Result<AppendOutcome, StorageError> {
        let sent = match &*self.inner.appends.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(sender) => sender.send(append).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StorageError::WriterGone);
        }
        outcome.await.map_err(|_| StorageError::WriterGone)?
    }

    /// Returns once everything written to sled before the call (snapshots, outbox records,
    /// pending downloads) is as durable as `storage.durability` asks: on disk (`flush`, sharing
    /// the fsync with concurrent callers) or handed to sled (`os`). Appended events need no
    /// commit: `append` returns once the event log has them as durably as asked.
    pub async fn commit(&self) -> Result<(), StorageError> {
        match self.inner.durability {
            Durability::Flush => Ok(self.inner.group_commit.commit(&self.inner.db).await?),
            Durability::Os => Ok(()),
        }
    }

    /// With `durability = "flush"`, a commit's fsync starts at least `interval` after the
    /// previous one started (`storage.group_commit_min_interval_ms`).
    pub fn set_commit_interval(&self, interval: std::time::Duration) {
        self.inner.group_commit.set_min_interval(interval);
    }

    /// Stores how far snapshots cover the journal now; at shutdown, after the snapshots, so
    /// that the next start resumes no conversation for nothing.
    pub async fn settle(&self) -> Result<(), StorageError> {
        let (done, outcome) = oneshot::channel();
        let append = Append {
            account: None,
            events: Vec::new(),
            received_at_ms: 0,
            done,
        };
        self.send(append, outcome).await.map(drop)
    }

    /// Flushes everything to disk; used at shutdown.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.log().sync()?;
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// The events of one conversation with a sequence number above `after`, oldest first.
    /// Only events no snapshot covers are found: a conversation reads the events after its
    /// latest snapshot, and those are all uncovered.
    pub fn events_after(
        &self,
        conversation: &ConversationKey,
        after: u64,
    ) -> impl Iterator<Item = Result<StoredEvent, StorageError>> {
        // Without the event log's lock first: the writer holds it through each batch's fsync,
        // and a conversation reading its events (every agent action does) would wait for it.
        // Only a segment removed between the index lookup and the read (its events just set
        // aside in sled) fails that way; under the lock, with the index read again, none is.
        let read = match self.read_events_after(conversation, after) {
            Err(_) => {
                // Held, the lock keeps every segment in place.
                let _log = self.log();
                self.read_events_after(conversation, after)
            }
            read => read,
        };
        each(read)
    }

    fn read_events_after(
        &self,
        conversation: &ConversationKey,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let places = lock(&self.inner.index).after(conversation, after);
        // Events set aside come first: they are the older ones.
        let (aside, in_log): (Vec<Place>, Vec<Place>) =
            places.into_iter().partition(|p| p.segment == 0);
        let mut events = Vec::with_capacity(aside.len() + in_log.len());
        for place in &aside {
            let key = aside_key(conversation, place.seq);
            let value = self
                .inner
                .tree
                .get(&key)?
                .ok_or_else(|| corrupt(&key, "an event set aside is missing"))?;
            events.push(serde_json::from_slice(&value).map_err(|e| corrupt(&key, e))?);
        }
        if !in_log.is_empty() {
            events.extend(super::event_log::read_events(&self.inner.log_dir, &in_log)?);
        }
        Ok(events)
    }

    /// Every stored event, in sequence order. For tools and tests; it reads the whole journal.
    pub fn all_events(&self) -> impl Iterator<Item = Result<StoredEvent, StorageError>> {
        let read = || -> Result<Vec<StoredEvent>, StorageError> {
            let mut events: Vec<StoredEvent> = Vec::new();
            for entry in self.inner.tree.scan_prefix([ASIDE]) {
                let (key, value) = entry?;
                events.push(serde_json::from_slice(&value).map_err(|e| corrupt(&key, e))?);
            }
            let records = self.log().records_from(0)?;
            events.extend(records.into_iter().flat_map(|r| r.events).map(|(e, _)| e));
            events.sort_by_key(|e| e.seq);
            Ok(events)
        };
        each(read())
    }

    /// Removes the oldest segment files whose events are all covered by snapshots and were
    /// received more than `storage.journal_retention_secs` before `now_ms`; the writer does it
    /// every minute and when idle. Returns how many files went.
    pub fn prune_events(&self, now_ms: i64) -> Result<usize, StorageError> {
        prune(&self.parts(), now_ms)
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            tree: &self.inner.tree,
            log: &self.inner.log,
            uncovered: &self.inner.uncovered,
            index: &self.inner.index,
            checks: &self.inner.checks,
            retention_ms: self.inner.event_retention_ms,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, EventLog> {
        lock(&self.inner.log)
    }

    /// Whether the event with this `webhookEventId` and `timestamp` has been stored for
    /// `account` (within the redelivery window).
    pub fn contains(
        &self,
        account: &AccountId,
        webhook_event_id: &str,
        timestamp_ms: i64,
    ) -> Result<bool, StorageError> {
        self.inner
            .checks
            .contains(&self.inner.tree, account, webhook_event_id, timestamp_ms)
    }

    /// The conversations with events not yet covered by a snapshot, with their latest
    /// sequence number, in key order. Right after opening: what the last run left uncovered.
    pub fn pending_conversations(&self) -> Vec<(ConversationKey, u64)> {
        self.uncovered().pending()
    }

    /// Whether the journal holds events of `conversation` that no snapshot covers yet.
    pub fn holds_events(&self, conversation: &ConversationKey) -> bool {
        lock(&self.inner.index).first(conversation).is_some()
    }

    /// A snapshot of `conversation` now covers its events up to `applied`: if that is all of
    /// them, it need not be resumed after a restart. A newer event appended meanwhile keeps
    /// the mark. Memory only, unless the conversation had been uncovered for long.
    pub fn clear_pending(
        &self,
        conversation: &ConversationKey,
        applied: u64,
    ) -> Result<(), StorageError> {
        // The index first: an event leaves it before its batch may be pruned. It knows the
        // chat's next event, which lets the checkpoint move up to it.
        let next = {
            let mut index = lock(&self.inner.index);
            index.covered(conversation, applied);
            index.first(conversation)
        };
        let mut uncovered = self.uncovered();
        let aside = uncovered.aside(conversation);
        if let Some(key) = uncovered.covered(conversation, applied, next) {
            // Under the lock: the writer cannot promote the conversation again meanwhile.
            self.inner.tree.remove(key)?;
        }
        drop(uncovered);
        if aside > 0 {
            let range = aside_key(conversation, 0)..=aside_key(conversation, applied);
            for key in self.inner.tree.range(range).keys() {
                self.inner.tree.remove(key?)?;
            }
        }
        Ok(())
    }

    fn uncovered(&self) -> std::sync::MutexGuard<'_, Uncovered> {
        self.inner
            .uncovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// For metrics: (conversations a crash would resume, of which long uncovered, events
    /// after the stored checkpoint that a restart would look through).
    pub fn coverage(&self) -> (usize, usize, u64) {
        let uncovered = self.uncovered();
        let (marked, long) = uncovered.counts();
        let lag = self
            .last_seq()
            .saturating_sub(uncovered.stored_checkpoint());
        (marked, long, lag)
    }

    /// Events no snapshot covers yet, indexed in memory by chat.
    pub fn uncovered_events(&self) -> usize {
        lock(&self.inner.index).events()
    }

    /// fsyncs of the event log (one per writer batch with `durability = "flush"`).
    pub fn event_log_syncs(&self) -> u64 {
        self.log().syncs()
    }

    /// How many segment files the event log has.
    pub fn event_segments(&self) -> usize {
        self.log().segments()
    }

    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::SeqCst)
    }

    /// (sled batches written, durable commits requested, fsyncs issued), for metrics.
    pub fn write_stats(&self) -> (u64, u64, u64) {
        let gc = &self.inner.group_commit;
        (
            self.inner.batches.load(Ordering::Relaxed),
            gc.commits(),
            gc.flushes(),
        )
    }
}

/// The single writer: dedup checks and sequence numbers need one, and one event log record
/// (and, with `flush`, one fsync) per group of deliveries is what keeps appends cheap.
struct Writer {
    tree: sled::Tree,
    last_seq: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
    listener: Listener,
    uncovered: Arc<Mutex<Uncovered>>,
    index: Arc<Mutex<UncoveredIndex>>,
    log: Arc<Mutex<EventLog>>,
    checks: Arc<RedeliveryChecks>,
    event_retention_ms: i64,
    next_expiry: std::time::Instant,
    marks_stored_at: std::time::Instant,
    /// [`SEQ_LEASE`] as stored.
    leased: std::cell::Cell<u64>,
}

/// What tests shorten.
struct Options {
    /// [`super::uncovered::PROMOTE_AFTER`].
    promote_after: u64,
    /// [`SEGMENT_BYTES`].
    segment_bytes: u64,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Append>) {
        loop {
            self.expire_when_due();
            let first = match receiver.recv_timeout(SETTLE_WHEN_IDLE) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.settle() {
                        tracing::warn!(error.message = %e, "could not store the journal checkpoint");
                    }
                    self.prune();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.write_held_checks(true);
                    return;
                }
            };
            let mut group = vec![first];
            while group.len() < MAX_APPENDS_PER_BATCH {
                match receiver.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            match self.write(&mut group) {
                Ok((outcomes, stored)) => {
                    for (append, outcome) in group.into_iter().zip(outcomes) {
                        let _ = append.done.send(Ok(outcome));
                    }
                    self.report(stored);
                    self.write_held_checks(false);
                    self.store_marks_when_due();
                }
                Err(e) => {
                    tracing::error!(error.message = %e, "journal batch failed; nothing of it was stored");
                    let reason = e.to_string();
                    for append in group {
                        let _ = append
                            .done
                            .send(Err(StorageError::BatchFailed(reason.clone())));
                    }
                }
            }
        }
    }

    /// Between batches: a pass of at most 2,000 check removals, then, if it was full, another
    /// after [`EXPIRE_AGAIN_AFTER`] (so that appends go on
    /// meanwhile), else in a minute.
    fn expire_when_due(&mut self) {
        let now = std::time::Instant::now();
        if now < self.next_expiry {
            return;
        }
        self.next_expiry = now + EXPIRE_EVERY;
        match self
            .checks
            .expire(&self.tree, linedesk_actors::conversation::now_ms())
        {
            Ok(removed) => {
                if removed > 0 {
                    tracing::debug!(removed, "redelivery checks past the window removed");
                }
                if removed == EXPIRE_PER_PASS {
                    self.next_expiry = now + EXPIRE_AGAIN_AFTER;
                }
            }
            Err(e) => {
                tracing::warn!(error.message = %e, "could not remove expired redelivery checks")
            }
        }
        self.prune();
    }

    /// Writes the redelivery checks held in memory that are due (or all of them); what fails
    /// stays held, and in the event log.
    fn write_held_checks(&self, all: bool) {
        let last = self.last_seq.load(Ordering::SeqCst);
        if let Err(e) = self.checks.write_held(&self.tree, last, all) {
            tracing::warn!(error.message = %e, "could not store redelivery checks; they stay in memory and in the event log");
        }
    }

    /// Stores the checkpoint and the last sequence number, at most every
    /// [`STORE_MARKS_EVERY`].
    fn store_marks_when_due(&mut self) {
        let now = std::time::Instant::now();
        if now.duration_since(self.marks_stored_at) < STORE_MARKS_EVERY {
            return;
        }
        self.marks_stored_at = now;
        let mut uncovered = lock(&self.uncovered);
        let last = self.last_seq.load(Ordering::SeqCst);
        if let Err(e) = store_marks(&self.tree, &mut uncovered, last) {
            tracing::warn!(error.message = %e, "could not store the journal checkpoint; a restart reads more of the event log");
        }
    }

    fn prune(&self) {
        let now = linedesk_actors::conversation::now_ms();
        let parts = Parts {
            tree: &self.tree,
            log: &self.log,
            uncovered: &self.uncovered,
            index: &self.index,
            checks: &self.checks,
            retention_ms: self.event_retention_ms,
        };
        match prune(&parts, now) {
            Ok(0) => {}
            Ok(removed) => {
                tracing::debug!(segments = removed, "covered events past retention removed")
            }
            Err(e) => {
                tracing::warn!(error.message = %e, "could not remove events past retention")
            }
        }
    }

    /// Tells the conversations, one notice per conversation, in sequence order.
    fn report(&self, stored: Vec<EventsStored>) {
        let listener = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sink) = listener.as_ref() {
            for notice in stored {
                sink.stored(notice);
            }
        }
    }

    /// Writes one group of deliveries: one event log record, then sled's part. Returns each delivery's
    /// outcome, and the new events by conversation (in the order first seen, each
    /// conversation's events in sequence order) for the registry.
    fn write(
        &self,
        group: &mut [Append],
    ) -> Result<(Vec<AppendOutcome>, Vec<EventsStored>), StorageError> {
        let mut seq = self.last_seq.load(Ordering::SeqCst);
        let most = seq + group.iter().map(|a| a.events.len() as u64).sum::<u64>();
        if most > self.leased.get() {
            self.lease(most + LEASE_EVENTS)?;
        }
        let mut checks = self.checks.batch();
        let first_seq = seq;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut records: Vec<StoredEvent> = Vec::new();
        // With whether every event of the notice is carried: a gap would skip an event.
        let mut stored: Vec<(EventsStored, bool)> = Vec::new();
        let mut carried: HashMap<ConversationKey, usize> = HashMap::new();
        // Each conversation's first and latest new event, in the order of `stored`.
        let mut spans: Vec<(ConversationKey, u64, u64)> = Vec::new();
        for append in group.iter_mut() {
            let mut outcome = AppendOutcome::default();
            let account = append.account.as_ref();
            for incoming in &mut append.events {
                let Some(account) = account else { break };
                if !checks.file(
                    &self.tree,
                    account,
                    &incoming.webhook_event_id,
                    incoming.timestamp_ms,
                )? {
                    outcome.duplicates += 1;
                    continue;
                }
                seq += 1;
                let record = StoredEvent {
                    v: JOURNAL_FORMAT_VERSION,
                    seq,
                    conversation: incoming.conversation.clone(),
                    received_at_ms: append.received_at_ms,
                    event: incoming.raw.clone(),
                };
                records.push(record);
                outcome.stored.push(seq);
                match outcome
                    .latest
                    .iter_mut()
                    .find(|(k, _)| *k == incoming.conversation)
                {
                    Some(latest) => latest.1 = seq,
                    None => outcome.latest.push((incoming.conversation.clone(), seq)),
                }
                let index = *carried
                    .entry(incoming.conversation.clone())
                    .or_insert_with(|| {
                        let notice = EventsStored {
                            key: incoming.conversation.clone(),
                            seq,
                            events: Vec::new(),
                        };
                        stored.push((notice, true));
                        spans.push((incoming.conversation.clone(), seq, seq));
                        stored.len() - 1
                    });
                let (notice, complete) = &mut stored[index];
                notice.seq = seq;
                spans[index].2 = seq;
                match incoming.inbound.take() {
                    Some(mut inbound) if *complete => {
                        inbound.seq = seq;
                        notice.events.push(inbound);
                    }
                    _ => {
                        *complete = false;
                        notice.events.clear();
                    }
                }
            }
            outcomes.push(outcome);
        }
        if seq != first_seq {
            // The log first: it is what makes the events durable (see `super::event_log`).
            let mut log = lock(&self.log);
            let places = log.append(&records, self.event_retention_ms)?;
            // Held until sled has the `p` keys, so that a checkpoint is never stored past a
            // conversation whose key sled has not taken yet. If writing fails, the marks of its
            // events stay: harmless, they only keep those conversations marked for longer.
            let mut uncovered = self.uncovered.lock().unwrap_or_else(|p| p.into_inner());
            let marks = uncovered.batch(seq, &spans);
            if let Err(e) = write_to_sled(&self.tree, &checks, marks, seq) {
                // Neither the log nor the checks may keep a batch whose callers hear it failed.
                if let Err(undo) = log.undo_last(&places) {
                    tracing::error!(error.message = %undo, "could not remove a failed batch's events from the event log");
                }
                checks.undo(&self.tree);
                return Err(e);
            }
            drop(log);
            drop(uncovered);
            self.checks.hold(checks, first_seq + 1);
            // Before the registry hears of them: a conversation that reads the journal finds them.
            let mut index = lock(&self.index);
            for (record, place) in records.iter().zip(places) {
                index.add(&record.conversation, place);
            }
            drop(index);
            self.last_seq.store(seq, Ordering::SeqCst);
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
        if seq == first_seq {
            self.settle()?;
            if group.iter().any(|a| a.account.is_none()) {
                // Asked to settle: the server is stopping. The next start continues at once.
                self.lease(seq)?;
            }
        }
        let stored = stored.into_iter().map(|(notice, _)| notice).collect();
        Ok((outcomes, stored))
    }

    /// Stores [`SEQ_LEASE`] durably before any number past the last lease is handed out.
    fn lease(&self, up_to: u64) -> Result<(), StorageError> {
        self.tree.insert(SEQ_LEASE, &up_to.to_be_bytes())?;
        self.tree.flush()?;
        self.leased.set(up_to);
        Ok(())
    }

    /// Persists how far snapshots cover the journal now, and the redelivery checks held in
    /// memory: when idle, and at shutdown.
    fn settle(&self) -> Result<(), StorageError> {
        let last = self.last_seq.load(Ordering::SeqCst);
        self.checks.write_held(&self.tree, last, true)?;
        let mut uncovered = self.uncovered.lock().unwrap_or_else(|p| p.into_inner());
        let marks = uncovered.settle(last);
        for (key, value) in marks.inserts {
            self.tree.insert(key, value)?;
        }
        store_marks(&self.tree, &mut uncovered, last)
    }
}

/// The index of the events the last run left uncovered: those of the conversations with a
/// mark, from each one's first uncovered event: set aside in sled, or in `tail`, the log's
/// records from the oldest on.
fn index_uncovered(
    tree: &sled::Tree,
    tail: Vec<Record>,
    uncovered: &Uncovered,
) -> Result<UncoveredIndex, StorageError> {
    let mut index = UncoveredIndex::default();
    for entry in tree.scan_prefix([ASIDE]) {
        let (key, value) = entry?;
        let event: StoredEvent = serde_json::from_slice(&value).map_err(|e| corrupt(&key, e))?;
        let wanted = uncovered
            .first_uncovered(&event.conversation)
            .is_some_and(|from| {
                event.seq >= from && event.seq <= uncovered.aside(&event.conversation)
            });
        if wanted {
            let place = Place {
                seq: event.seq,
                segment: 0,
                offset: 0,
                len: 0,
            };
            index.add(&event.conversation, place);
        } else {
            // Left by a crash between a snapshot and the removal of what it covered.
            tree.remove(key)?;
        }
    }
    for record in tail {
        for (event, place) in record.events {
            if uncovered
                .first_uncovered(&event.conversation)
                .is_some_and(|from| event.seq >= from)
                && event.seq > uncovered.aside(&event.conversation)
            {
                index.add(&event.conversation, place);
            }
        }
    }
    Ok(index)
}

/// Writes what sled must have of a batch at once, key by key (sled 0.34 writes out its
/// current I/O buffer before every multi-key batch): the redelivery checks that overflowed
/// their millisecond's key, and the `p` keys of conversations found long uncovered. Usually
/// nothing: the rest is in the event log, and sled gets the checkpoint every so often.
fn write_to_sled(
    tree: &sled::Tree,
    checks: &CheckBatch<'_>,
    marks: super::uncovered::BatchMarks,
    last: u64,
) -> Result<(), StorageError> {
    checks.write(tree, last)?;
    for (key, value) in marks.inserts {
        tree.insert(key, value)?;
    }
    Ok(())
}

/// Stores the last sequence number, then the checkpoint if it moved (sled recovers a prefix
/// of its log: a recovered checkpoint is never past a recovered last sequence number), then
/// removes the `r` records of an earlier release, which the event log now stands for.
fn store_marks(
    tree: &sled::Tree,
    uncovered: &mut Uncovered,
    last: u64,
) -> Result<(), StorageError> {
    tree.insert(LAST_SEQ, &last.to_be_bytes())?;
    if let Some(checkpoint) = uncovered.to_store() {
        tree.insert(super::uncovered::CHECKPOINT, &checkpoint.to_be_bytes())?;
        for key in uncovered.stored(checkpoint) {
            tree.remove(key)?;
        }
    }
    Ok(())
}

/// The fields of a stored event its redelivery check is filed under.
#[derive(Deserialize)]
struct CheckFields {
    #[serde(rename = "webhookEventId")]
    webhook_event_id: String,
    timestamp: i64,
}

/// Rebuilds from the log's records past the stored checkpoint (`tail`) what sled does not
/// keep of them: the marks of the conversations with events there; the last sequence number
/// (sled's may be older: it is stored every so often); and the redelivery checks of the
/// events past [`RedeliveryChecks::through`] (held in memory when the last run stopped).
/// Returns the last sequence number.
fn recover_from_log(
    tree: &sled::Tree,
    redelivery: &RedeliveryChecks,
    tail: &[Record],
    sled_last: u64,
    uncovered: &mut Uncovered,
) -> Result<u64, StorageError> {
    let checks_through = redelivery.through();
    let checkpoint = uncovered.stored_checkpoint();
    let mut last = sled_last;
    for record in tail {
        let mut checks = redelivery.batch();
        let mut first_check = None;
        for (event, _) in &record.events {
            if event.seq > checkpoint {
                uncovered.add(event.conversation.clone(), event.seq, event.seq);
            }
            last = last.max(event.seq);
            if event.seq <= checks_through {
                continue;
            }
            first_check.get_or_insert(event.seq);
            match serde_json::from_str::<CheckFields>(event.event.get()) {
                Ok(f) => {
                    // Already there if sled kept this part of the batch.
                    checks.file(
                        tree,
                        &event.conversation.account,
                        &f.webhook_event_id,
                        f.timestamp,
                    )?;
                }
                Err(e) => {
                    tracing::warn!(seq = event.seq, error.message = %e, "an event without its id: no redelivery check")
                }
            }
        }
        checks.write(tree, last)?;
        if let Some(first_check) = first_check {
            redelivery.hold(checks, first_check);
        }
    }
    redelivery.write_held(tree, last, true)?;
    store_marks(tree, uncovered, last)?;
    Ok(last)
}

/// What retention works on, shared by the journal and its writer.
struct Parts<'a> {
    tree: &'a sled::Tree,
    log: &'a Mutex<EventLog>,
    uncovered: &'a Mutex<Uncovered>,
    index: &'a Mutex<UncoveredIndex>,
    checks: &'a RedeliveryChecks,
    retention_ms: i64,
}

/// A poisoned lock is taken as is: what it guards is left consistent between statements.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the journal's readers return: each item, or the one error that stopped the read.
fn each<T>(read: Result<Vec<T>, StorageError>) -> std::vec::IntoIter<Result<T, StorageError>> {
    let items: Vec<_> = match read {
        Ok(items) => items.into_iter().map(Ok).collect(),
        Err(e) => vec![Err(e)],
    };
    items.into_iter()
}

/// See [`Journal::prune_events`]. A segment old enough whose only uncovered events belong to
/// long-uncovered conversations (an actor failing for hours, say) does not hold back every
/// later segment: those few events are set aside in sled first, then it goes.
fn prune(parts: &Parts<'_>, now_ms: i64) -> Result<usize, StorageError> {
    if parts.retention_ms == 0 {
        return Ok(0);
    }
    let mut flushed = false;
    let mut removed = 0;
    for _ in 0..PRUNE_PER_PASS {
        let Some((_, last, newest_ms)) = lock(parts.log).oldest() else {
            break;
        };
        // Checks held in memory would be filed again from these events after a crash.
        if last == 0
            || newest_ms.saturating_add(parts.retention_ms) > now_ms
            || last > parts.checks.through()
        {
            break;
        }
        let (covered_below, checkpoint) = {
            let uncovered = lock(parts.uncovered);
            (uncovered.covered_below(), uncovered.stored_checkpoint())
        };
        if last >= covered_below {
            if last > checkpoint {
                break;
            }
            set_aside(parts, last)?;
            // What was just set aside must be flushed before its segment goes.
            flushed = false;
            continue;
        }
        if !flushed {
            // What lets the segment go (the snapshots covering its events, the events set
            // aside) must be on disk before it is gone.
            parts.tree.flush()?;
            flushed = true;
        }
        lock(parts.log).remove_oldest()?;
        removed += 1;
    }
    Ok(removed)
}

/// Copies the uncovered events up to `through` of the long-uncovered conversations holding
/// them into sled (`q` keys), points the index there, and records it in their `p` keys.
fn set_aside(parts: &Parts<'_>, through: u64) -> Result<(), StorageError> {
    let holding = lock(parts.uncovered).holding(through);
    for conversation in holding {
        let places: Vec<Place> = lock(parts.index)
            .after(&conversation, 0)
            .into_iter()
            .filter(|p| p.seq <= through && p.segment != 0)
            .collect();
        let events = lock(parts.log).read(&places)?;
        for event in &events {
            // unwrap: serialising strings, integers and already-valid JSON cannot fail.
            let value = serde_json::to_vec(event).unwrap();
            parts
                .tree
                .insert(aside_key(&conversation, event.seq), value)?;
        }
        lock(parts.index).set_aside(&conversation, through);
        let mark = lock(parts.uncovered).set_aside(&conversation, through);
        match mark {
            Some((key, value)) => {
                parts.tree.insert(key, value)?;
            }
            // Covered meanwhile: nothing needs them.
            None => {
                for event in &events {
                    parts.tree.remove(aside_key(&conversation, event.seq))?;
                }
            }
        }
        tracing::info!(
            conversation = %conversation,
            events = events.len(),
            through,
            "uncovered events of a long-uncovered conversation set aside so that older journal segments can go"
        );
    }
    Ok(())
}

fn aside_key(conversation: &ConversationKey, seq: u64) -> Vec<u8> {
    let name = conversation.to_string();
    let mut key = Vec::with_capacity(1 + name.len() + 1 + 8);
    key.push(ASIDE);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Events of releases before the event log, one sled key each (`e` conversation `\0` seq),
/// moved to the log in chunks: appended (and synced) first, then removed from sled, so that a
/// crash halfway leaves each event in the log, in sled or in both; an event the log already
/// has is not appended again.
const LEGACY_EVENT: u8 = b'e';
const LEGACY_PER_RECORD: usize = 512;

fn rewrite_legacy(tree: &sled::Tree, log: &mut EventLog) -> Result<usize, StorageError> {
    let mut legacy: Vec<(sled::IVec, StoredEvent)> = Vec::new();
    for entry in tree.scan_prefix([LEGACY_EVENT]) {
        let (key, value) = entry?;
        let event = serde_json::from_slice(&value).map_err(|e| corrupt(&key, e))?;
        legacy.push((key, event));
    }
    legacy.sort_by_key(|(_, e)| e.seq);
    let moved = legacy.len();
    for chunk in legacy.chunks(LEGACY_PER_RECORD) {
        let already = log.last_seq();
        let events: Vec<StoredEvent> = chunk
            .iter()
            .map(|(_, e)| e.clone())
            .filter(|e| e.seq > already)
            .collect();
        if !events.is_empty() {
            log.append(&events, 0)?;
            log.sync()?;
        }
        let mut batch = sled::Batch::default();
        for (key, _) in chunk {
            batch.remove(key.clone());
        }
        tree.apply_batch(batch)?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use linedesk_actors::domain::LineSource;

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let journal = Journal::open(db, dir.path(), Durability::Os).unwrap();
        (dir, journal)
    }

    const T0: i64 = 1_764_000_000_000;

    fn key(user: &str) -> ConversationKey {
        ConversationKey::new(
            AccountId::parse("demo").unwrap(),
            LineSource::user(user).unwrap(),
        )
    }

    fn event(id: &str, user: &str, text: &str) -> IncomingEvent {
        IncomingEvent {
            webhook_event_id: id.to_owned(),
            timestamp_ms: T0,
            conversation: key(user),
            raw: RawValue::from_string(format!(r#"{{"text":"{text}"}}"#)).unwrap(),
            inbound: None,
        }
    }

    fn demo() -> AccountId {
        AccountId::parse("demo").unwrap()
    }

    /// Collects the writer's notices.
    struct Notices(std::sync::Arc<Mutex<Vec<EventsStored>>>);

    impl actix::Actor for Notices {
        type Context = actix::Context<Self>;
    }

    impl actix::Handler<EventsStored> for Notices {
        type Result = ();
        fn handle(&mut self, msg: EventsStored, _: &mut Self::Context) {
            self.0.lock().unwrap().push(msg);
        }
    }

    fn with_inbound(mut incoming: IncomingEvent, text: &str) -> IncomingEvent {
        incoming.inbound = Some(Inbound {
            seq: 0,
            webhook_event_id: incoming.webhook_event_id.clone(),
            at_ms: 1,
            received_at_ms: 1,
            sender: None,
            reply_token: None,
            redelivery: false,
            kind: linedesk_actors::domain::InboundKind::Other {
                type_name: text.into(),
            },
        });
        incoming
    }

    /// A conversation reading its events does not wait for the writer, which holds the event
    /// log through each batch's fsync.
    #[actix_web::test]
    async fn reading_a_conversations_events_does_not_wait_for_the_event_logs_lock() {
        let (_dir, journal) = journal();
        journal
            .append(&demo(), vec![event("E1", "Ua", "a1")], 1)
            .await
            .unwrap();
        let held = journal.log();
        let (done, read) = std::sync::mpsc::channel();
        let reader = journal.clone();
        std::thread::spawn(move || {
            let seqs: Vec<u64> = reader
                .events_after(&key("Ua"), 0)
                .map(|e| e.unwrap().seq)
                .collect();
            let _ = done.send(seqs);
        });
        // Bounded: a reader that waits for the lock never answers while it is held.
        let seqs = read.recv_timeout(std::time::Duration::from_secs(30));
        drop(held);
        assert_eq!(seqs.expect("read while the lock was held"), [1]);
    }

    #[actix_web::test]
    async fn the_registry_is_told_in_order_with_the_events() {
        use actix::Actor;
        let (_dir, journal) = journal();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        journal.notify(Notices(seen.clone()).start().recipient());
        let batch = vec![
            with_inbound(event("E1", "Ua", "a1"), "a1"),
            with_inbound(event("E2", "Ub", "b1"), "b1"),
            with_inbound(event("E3", "Ua", "a2"), "a2"),
            with_inbound(event("E3", "Ua", "a2"), "a2"),
            // One without its decoded form: that conversation's notice carries nothing.
            event("E4", "Ub", "b2"),
        ];
        journal.append(&demo(), batch, 1).await.unwrap();
        let notices = {
            // The notices are sent as `append` returns; let the collector run.
            let mut notices = Vec::new();
            for _ in 0..10_000 {
                notices.append(&mut seen.lock().unwrap());
                if notices.len() >= 2 {
                    break;
                }
                actix::clock::sleep(std::time::Duration::from_millis(1)).await;
            }
            notices
        };
        let summary: Vec<_> = notices
            .iter()
            .map(|n| {
                let seqs: Vec<u64> = n.events.iter().map(|e| e.seq).collect();
                (n.key.clone(), n.seq, seqs)
            })
            .collect();
        assert_eq!(
            summary,
            [(key("Ua"), 3, vec![1, 3]), (key("Ub"), 4, vec![])],
            "in order, the duplicate left out, a notice with a gap emptied"
        );
    }

    #[actix_web::test]
    async fn events_are_stored_once_in_order_per_conversation() {
        let (_dir, journal) = journal();
        let batch = vec![
            event("E1", "Ua", "a1"),
            event("E2", "Ub", "b1"),
            event("E3", "Ua", "a2"),
            event("E3", "Ua", "a2"),
        ];
        let outcome = journal.append(&demo(), batch, 1).await.unwrap();
        assert_eq!(outcome.stored, [1, 2, 3]);
        assert_eq!(outcome.duplicates, 1);
        assert_eq!(outcome.latest, [(key("Ua"), 3), (key("Ub"), 2)]);

        let again = vec![event("E1", "Ua", "a1"), event("E2", "Ub", "b1")];
        let again = journal.append(&demo(), again, 2).await.unwrap();
        assert_eq!(
            again,
            AppendOutcome {
                stored: vec![],
                duplicates: 2,
                latest: vec![]
            }
        );

        let texts: Vec<String> = journal
            .events_after(&key("Ua"), 0)
            .map(|e| e.unwrap().event.get().to_owned())
            .collect();
        assert_eq!(texts, [r#"{"text":"a1"}"#, r#"{"text":"a2"}"#]);
        assert_eq!(journal.events_after(&key("Ua"), 1).count(), 1);
        assert_eq!(journal.all_events().count(), 3);
        assert!(journal.contains(&demo(), "E2", T0).unwrap());
        assert_eq!(
            journal.pending_conversations(),
            [(key("Ua"), 3), (key("Ub"), 2)]
        );
    }

    /// Promotion after 8 events, and a segment file per batch (so that retention removes
    /// batches one by one).
    fn one_batch_per_segment() -> Options {
        Options {
            promote_after: 8,
            segment_bytes: 1,
        }
    }

    fn keeping_events_for(dir: &std::path::Path, secs: u64) -> Journal {
        let retention = JournalRetention {
            event_secs: secs,
            ..JournalRetention::default()
        };
        let db = crate::storage::reopen(dir);
        Journal::open_with(db, dir, Durability::Os, retention, one_batch_per_segment()).unwrap()
    }

    /// A day ahead of the clock, so that the writer's own retention passes (when idle) find
    /// nothing old enough and each test's explicit pass decides.
    fn received_tomorrow() -> i64 {
        linedesk_actors::conversation::now_ms() + 86_400_000
    }

    fn seqs(journal: &Journal) -> Vec<u64> {
        journal.all_events().map(|e| e.unwrap().seq).collect()
    }

    #[actix_web::test]
    async fn covered_events_past_retention_leave_and_uncovered_ones_and_checks_stay() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = received_tomorrow();
        let journal = keeping_events_for(dir.path(), 60);
        let first = vec![event("E1", "Ua", "a1"), event("E2", "Uab", "ab1")];
        journal.append(&demo(), first, t0).await.unwrap();
        journal
            .append(&demo(), vec![event("E3", "Ua", "a2")], t0 + 1_000)
            .await
            .unwrap();
        journal.clear_pending(&key("Ua"), 1).unwrap();
        journal.clear_pending(&key("Uab"), 2).unwrap();
        journal.settle().await.unwrap();

        assert_eq!(journal.prune_events(t0 + 59_999).unwrap(), 0, "too young");
        let checks_behind = RedeliveryChecks::open(&journal.inner.tree, t0, 0).unwrap();
        let parts = Parts {
            checks: &checks_behind,
            ..journal.parts()
        };
        assert_eq!(
            prune(&parts, t0 + 60_000).unwrap(),
            0,
            "its checks would be filed from it after a crash"
        );
        assert_eq!(journal.prune_events(t0 + 60_000).unwrap(), 1);
        assert_eq!(seqs(&journal), [3], "the batch of covered events went");
        let left: Vec<u64> = journal
            .events_after(&key("Ua"), 1)
            .map(|e| e.unwrap().seq)
            .collect();
        assert_eq!(left, [3], "the uncovered event is still read");
        let again = journal
            .append(&demo(), vec![event("E1", "Ua", "a1")], t0 + 2_000)
            .await
            .unwrap();
        assert_eq!(again.duplicates, 1, "still recognised as a redelivery");

        assert_eq!(journal.prune_events(i64::MAX / 2).unwrap(), 0, "uncovered");
        journal.clear_pending(&key("Ua"), 3).unwrap();
        journal.settle().await.unwrap();
        assert_eq!(journal.prune_events(i64::MAX / 2).unwrap(), 1);
        assert!(seqs(&journal).is_empty());
        assert_eq!(journal.uncovered_events(), 0);
    }

    #[actix_web::test]
    async fn no_retention_keeps_every_event_and_a_stuck_chats_events_are_set_aside_for_the_rest_to_go(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let t0 = received_tomorrow();
        let journal = keeping_events_for(dir.path(), 0);
        journal
            .append(&demo(), vec![event("E1", "Ua", "a1")], t0)
            .await
            .unwrap();
        journal.clear_pending(&key("Ua"), 1).unwrap();
        journal.settle().await.unwrap();
        assert_eq!(journal.prune_events(i64::MAX / 2).unwrap(), 0);
        assert_eq!(seqs(&journal), [1]);
        drop(journal);

        // A chat left uncovered past the checkpoint (its own `p` key, as when its actor keeps
        // failing) does not hold back every later segment: its event is set aside in sled.
        let journal = keeping_events_for(dir.path(), 1);
        journal
            .append(&demo(), vec![event("S1", "Ustuck", "x")], t0)
            .await
            .unwrap();
        for i in 0..20 {
            journal
                .append(&demo(), vec![event(&format!("E{}", i + 10), "Ua", "a")], t0)
                .await
                .unwrap();
            journal.clear_pending(&key("Ua"), i + 3).unwrap();
        }
        journal.settle().await.unwrap();
        assert_eq!(keys_with_prefix(&journal, b"p"), 1, "promoted");
        assert_eq!(
            journal.prune_events(i64::MAX / 2).unwrap(),
            22,
            "E1's, S1's and Ua's segments"
        );
        assert_eq!(journal.event_segments(), 0);
        assert_eq!(seqs(&journal), [2], "the stuck chat's event, set aside");
        assert_eq!(keys_with_prefix(&journal, b"q"), 1);
        let stuck = |journal: &Journal| -> Vec<u64> {
            journal
                .events_after(&key("Ustuck"), 0)
                .map(|e| e.unwrap().seq)
                .collect()
        };
        assert_eq!(stuck(&journal), [2], "still read by its conversation");
        drop(journal);

        let journal = keeping_events_for(dir.path(), 1);
        assert!(journal
            .pending_conversations()
            .contains(&(key("Ustuck"), 2)));
        assert_eq!(stuck(&journal), [2], "and after a restart");
        journal
            .append(&demo(), vec![event("S2", "Ustuck", "y")], t0)
            .await
            .unwrap();
        assert_eq!(stuck(&journal), [2, 23], "set aside, then in the log");
        journal.clear_pending(&key("Ustuck"), 23).unwrap();
        assert_eq!(
            keys_with_prefix(&journal, b"q"),
            0,
            "covered: gone from sled"
        );
        // Its redelivery check written: the event log need not keep it for that.
        journal.settle().await.unwrap();
        assert_eq!(journal.prune_events(i64::MAX / 2).unwrap(), 1);
        assert!(seqs(&journal).is_empty());
    }

    #[actix_web::test]
    async fn a_batch_the_database_lost_in_a_crash_is_recovered_from_the_event_log() {
        // As LINE sends them: the check is rebuilt from the event's id and timestamp.
        let line = |id: &str, user: &str, text: &str| IncomingEvent {
            raw: RawValue::from_string(format!(
                r#"{{"webhookEventId":"{id}","timestamp":{T0},"text":"{text}"}}"#
            ))
            .unwrap(),
            ..event(id, user, text)
        };
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = keeping_events_for(dir.path(), 0);
            journal
                .append(&demo(), vec![line("E1", "Ua", "a1")], T0)
                .await
                .unwrap();
            journal
                .append(&demo(), vec![line("E2", "Ub", "b1")], T0)
                .await
                .unwrap();
            journal.clear_pending(&key("Ua"), 1).unwrap();
            journal.settle().await.unwrap();
            // What sled loses when its last writes are cut: E2's check (the millisecond's
            // key as E1's batch left it) and sequence number.
            let tree = &journal.inner.tree;
            let (key, with_e2) = tree.scan_prefix(b"v").next().unwrap().unwrap();
            assert_eq!(with_e2.len(), 2 + 2 * 8, "E1's and E2's");
            tree.insert(key, &with_e2[..with_e2.len() - 8]).unwrap();
            tree.insert(CHECKS_THROUGH, &1u64.to_be_bytes()).unwrap();
            tree.insert(LAST_SEQ, &1u64.to_be_bytes()).unwrap();
            journal.inner.db.flush().unwrap();
        }
        let journal = keeping_events_for(dir.path(), 0);
        assert_eq!(journal.last_seq(), 2);
        assert!(
            journal.contains(&demo(), "E2", T0).unwrap(),
            "the check is back"
        );
        assert_eq!(journal.pending_conversations(), [(key("Ub"), 2)]);
        let seqs: Vec<u64> = journal
            .events_after(&key("Ub"), 0)
            .map(|e| e.unwrap().seq)
            .collect();
        assert_eq!(seqs, [2], "its conversation will read it");
        let again = journal
            .append(
                &demo(),
                vec![line("E2", "Ub", "b1"), line("E3", "Ub", "b2")],
                T0,
            )
            .await
            .unwrap();
        assert_eq!((again.duplicates, again.stored), (1, vec![3]));
    }

    #[actix_web::test]
    async fn checks_held_in_memory_at_a_crash_are_filed_again_from_the_event_log() {
        let dir = tempfile::tempdir().unwrap();
        let line = |id: &str, user: &str| IncomingEvent {
            raw: RawValue::from_string(format!(
                r#"{{"webhookEventId":"{id}","timestamp":{T0},"text":"hi"}}"#
            ))
            .unwrap(),
            ..event(id, user, "hi")
        };
        {
            let journal = keeping_events_for(dir.path(), 0);
            for (id, user) in [("E1", "Ua"), ("E2", "Ub")] {
                journal
                    .append(&demo(), vec![line(id, user)], T0)
                    .await
                    .unwrap();
            }
            journal.settle().await.unwrap();
            // As sled is when the checks were still held: no millisecond key, and its own
            // checks go no further than before the first event.
            let tree = &journal.inner.tree;
            for key in tree.scan_prefix(b"v").keys() {
                tree.remove(key.unwrap()).unwrap();
            }
            tree.insert(CHECKS_THROUGH, &0u64.to_be_bytes()).unwrap();
            journal.inner.db.flush().unwrap();
        }
        let journal = keeping_events_for(dir.path(), 0);
        assert_eq!(journal.last_seq(), 2);
        assert!(journal.contains(&demo(), "E1", T0).unwrap());
        assert!(journal.contains(&demo(), "E2", T0).unwrap());
        assert_eq!(journal.inner.checks.through(), 2);
        let again = journal
            .append(&demo(), vec![line("E1", "Ua"), line("E3", "Ua")], T0)
            .await
            .unwrap();
        assert_eq!((again.duplicates, again.stored), (1, vec![3]));
    }

    #[actix_web::test]
    async fn reopening_finds_the_uncovered_events_of_each_chat_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = keeping_events_for(dir.path(), 0);
            let batch = vec![
                event("E1", "Ua", "a1"),
                event("E2", "Ub", "b1"),
                event("E3", "Ua", "a2"),
            ];
            journal.append(&demo(), batch, T0).await.unwrap();
            journal
                .append(&demo(), vec![event("E4", "Ub", "b2")], T0)
                .await
                .unwrap();
            journal.clear_pending(&key("Ua"), 1).unwrap();
            journal.clear_pending(&key("Ub"), 4).unwrap();
            journal.settle().await.unwrap();
        }
        let journal = keeping_events_for(dir.path(), 0);
        let after = |user: &str, seq: u64| -> Vec<u64> {
            journal
                .events_after(&key(user), seq)
                .map(|e| e.unwrap().seq)
                .collect()
        };
        assert_eq!(after("Ua", 1), [3]);
        // Ub's cover came after its last batch, and no batch stored it since: Ub is resumed,
        // and its snapshot (applied 4) then reads nothing more.
        assert!(after("Ub", 4).is_empty());
        journal.clear_pending(&key("Ub"), 4).unwrap();
        assert_eq!(journal.uncovered_events(), 1);
        assert_eq!(seqs(&journal), [1, 2, 3, 4], "all kept without retention");
    }

    #[actix_web::test]
    async fn events_stored_in_sled_one_key_each_by_an_older_release_move_to_the_event_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree(TREE).unwrap();
            for (seq, user) in [(2u64, "Ua"), (1, "Ub"), (3, "Ua")] {
                let record = StoredEvent {
                    v: JOURNAL_FORMAT_VERSION,
                    seq,
                    conversation: key(user),
                    received_at_ms: T0,
                    event: RawValue::from_string(format!(r#"{{"n":{seq}}}"#)).unwrap(),
                };
                let mut legacy = b"e".to_vec();
                legacy.extend_from_slice(key(user).to_string().as_bytes());
                legacy.push(0);
                legacy.extend_from_slice(&seq.to_be_bytes());
                tree.insert(legacy, serde_json::to_vec(&record).unwrap())
                    .unwrap();
            }
            tree.insert(LAST_SEQ, &3u64.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let journal = keeping_events_for(dir.path(), 0);
        assert_eq!(seqs(&journal), [1, 2, 3], "in sequence order");
        assert_eq!(keys_with_prefix(&journal, b"e"), 0);
        let texts: Vec<String> = journal
            .all_events()
            .map(|e| e.unwrap().event.get().to_owned())
            .collect();
        assert_eq!(texts, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    }

    #[actix_web::test]
    async fn a_redelivery_within_the_window_is_a_duplicate_and_checks_past_it_are_removed() {
        const DAY: i64 = 86_400_000;
        let dir = tempfile::tempdir().unwrap();
        let retention = JournalRetention {
            redelivery_window_days: 2,
            ..JournalRetention::default()
        };
        let journal = Journal::open_expiring(
            sled::open(dir.path()).unwrap(),
            dir.path(),
            Durability::Os,
            retention,
        )
        .unwrap();
        // Today, so that the writer's own pass (every minute) finds nothing to remove.
        let now = linedesk_actors::conversation::now_ms();
        let delivery = || IncomingEvent {
            timestamp_ms: now,
            ..event("E1", "Ua", "a1")
        };
        let first = journal.append(&demo(), vec![delivery()], 1).await.unwrap();
        assert_eq!(first.stored, [1]);
        let again = journal.append(&demo(), vec![delivery()], 2).await.unwrap();
        assert_eq!((again.stored.len(), again.duplicates), (0, 1));

        assert_eq!(journal.expire_redelivery_checks(now + DAY).unwrap(), 0);
        assert!(journal.contains(&demo(), "E1", now).unwrap());
        assert_eq!(journal.expire_redelivery_checks(now + 3 * DAY).unwrap(), 1);
        assert!(!journal.contains(&demo(), "E1", now).unwrap());
        assert_eq!(
            journal.events_after(&key("Ua"), 0).count(),
            1,
            "events stay"
        );
    }

    #[actix_web::test]
    async fn concurrent_appends_are_all_stored_with_distinct_sequence_numbers() {
        let (_dir, journal) = journal();
        let appends = (0..50).map(|i| {
            let journal = journal.clone();
            async move {
                let events = vec![
                    event(&format!("A{i}"), "Ua", "x"),
                    event(&format!("B{i}"), "Ub", "y"),
                ];
                journal.append(&demo(), events, 1).await.unwrap()
            }
        });
        let outcomes = futures_util::future::join_all(appends).await;
        let mut seqs: Vec<u64> = outcomes.iter().flat_map(|o| o.stored.clone()).collect();
        for o in &outcomes {
            assert!(o.stored[0] < o.stored[1], "a delivery keeps its order");
        }
        seqs.sort();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
        let (batches, _, _) = journal.write_stats();
        assert!((1..=50).contains(&batches));
    }

    #[actix_web::test]
    async fn sequence_numbers_continue_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal =
                Journal::open(sled::open(dir.path()).unwrap(), dir.path(), Durability::Os).unwrap();
            journal
                .append(&demo(), vec![event("E1", "Ua", "x")], 1)
                .await
                .unwrap();
            // As the server stops.
            journal.settle().await.unwrap();
        }
        let journal = Journal::open(
            crate::storage::reopen(dir.path()),
            dir.path(),
            Durability::Os,
        )
        .unwrap();
        assert_eq!(journal.last_seq(), 1);
        let outcome = journal
            .append(&demo(), vec![event("E2", "Ua", "x")], 2)
            .await
            .unwrap();
        assert_eq!(outcome.stored, vec![2]);
    }

    #[actix_web::test]
    async fn after_a_crash_numbers_continue_past_the_lease_even_if_the_log_lost_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal =
                Journal::open(sled::open(dir.path()).unwrap(), dir.path(), Durability::Os).unwrap();
            for id in ["E1", "E2"] {
                journal
                    .append(&demo(), vec![event(id, "Ua", "x")], 1)
                    .await
                    .unwrap();
            }
        }
        // A power cut took events (`durability = "os"`) a snapshot in sled may cover: no later
        // event may get their numbers.
        for entry in std::fs::read_dir(dir.path().join("events")).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let journal = Journal::open(
            crate::storage::reopen(dir.path()),
            dir.path(),
            Durability::Os,
        )
        .unwrap();
        assert!(journal.last_seq() >= LEASE_EVENTS, "{}", journal.last_seq());
        let outcome = journal
            .append(&demo(), vec![event("E3", "Ub", "x")], 2)
            .await
            .unwrap();
        assert_eq!(outcome.stored, vec![journal.last_seq()]);
        assert!(outcome.stored[0] > 2);
    }

    #[actix_web::test]
    async fn the_same_event_id_in_another_account_is_another_event() {
        let (_dir, journal) = journal();
        journal
            .append(&demo(), vec![event("E1", "Ua", "x")], 1)
            .await
            .unwrap();
        let other = AccountId::parse("other").unwrap();
        let outcome = journal
            .append(&other, vec![event("E1", "Ua", "x")], 1)
            .await
            .unwrap();
        assert_eq!(outcome.stored, vec![2]);
    }

    fn keys_with_prefix(journal: &Journal, prefix: &[u8]) -> usize {
        journal.inner.tree.scan_prefix(prefix).count()
    }

    #[actix_web::test]
    async fn after_reopening_only_conversations_no_snapshot_covered_are_pending() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let journal = Journal::open(db, dir.path(), Durability::Os).unwrap();
            for (id, user) in [("E1", "Ub"), ("E2", "Ua"), ("E3", "Ua")] {
                journal
                    .append(&demo(), vec![event(id, user, "x")], 1)
                    .await
                    .unwrap();
            }
            // Ub's snapshot covers its event; Ua's covers only its first.
            journal.clear_pending(&key("Ub"), 1).unwrap();
            journal.clear_pending(&key("Ua"), 2).unwrap();
            assert_eq!(journal.pending_conversations(), [(key("Ua"), 3)]);
            journal
                .append(&demo(), vec![event("E4", "Uc", "c1")], 1)
                .await
                .unwrap();
            // The checkpoint is stored every 50 ms while events come, and when idle.
            journal.settle().await.unwrap();
        }
        let db = crate::storage::reopen(dir.path());
        let journal = Journal::open(db, dir.path(), Durability::Os).unwrap();
        assert_eq!(
            journal.pending_conversations(),
            [(key("Ua"), 3), (key("Uc"), 4)],
            "Ub was covered before the crash"
        );
        assert_eq!(
            keys_with_prefix(&journal, b"r"),
            0,
            "no record per batch: the event log says whose events are past the checkpoint"
        );
        journal.clear_pending(&key("Ua"), 3).unwrap();
        journal.clear_pending(&key("Uc"), 4).unwrap();
        journal
            .append(&demo(), vec![event("E5", "Ud", "d1")], 1)
            .await
            .unwrap();
        assert_eq!(journal.pending_conversations(), [(key("Ud"), 5)]);
    }

    #[actix_web::test]
    async fn a_checkpoint_and_sequence_number_stored_before_a_crash_are_caught_up_from_the_event_log(
    ) {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let journal = Journal::open(db, dir.path(), Durability::Os).unwrap();
            for (id, user) in [("E1", "Ua"), ("E2", "Ub"), ("E3", "Uc")] {
                journal
                    .append(&demo(), vec![event(id, user, "x")], 1)
                    .await
                    .unwrap();
            }
            journal.clear_pending(&key("Ua"), 1).unwrap();
            journal.settle().await.unwrap();
            for (id, user) in [("E4", "Ud"), ("E5", "Ua")] {
                journal
                    .append(&demo(), vec![event(id, user, "x")], 1)
                    .await
                    .unwrap();
            }
            // A crash before the writer stored them again: sled has older ones (and, from an
            // earlier release, no lease).
            let tree = &journal.inner.tree;
            tree.insert(LAST_SEQ, &1u64.to_be_bytes()).unwrap();
            tree.remove(SEQ_LEASE).unwrap();
            tree.insert(super::super::uncovered::CHECKPOINT, &0u64.to_be_bytes())
                .unwrap();
            journal.inner.db.flush().unwrap();
        }
        let db = crate::storage::reopen(dir.path());
        let journal = Journal::open(db, dir.path(), Durability::Os).unwrap();
        assert_eq!(journal.last_seq(), 5, "from the event log");
        assert_eq!(
            journal.pending_conversations(),
            [
                (key("Ua"), 5),
                (key("Ub"), 2),
                (key("Uc"), 3),
                (key("Ud"), 4)
            ],
            "every chat with events past the stored checkpoint"
        );
        let seqs: Vec<u64> = journal
            .events_after(&key("Ua"), 1)
            .map(|e| e.unwrap().seq)
            .collect();
        assert_eq!(seqs, [5]);
        let outcome = journal
            .append(&demo(), vec![event("E6", "Ue", "x")], 1)
            .await
            .unwrap();
        assert_eq!(outcome.stored, [6], "no sequence number handed out twice");
    }

    #[actix_web::test]
    async fn the_batch_records_of_an_earlier_release_are_read_once_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let journal = Journal::open(db, dir.path(), Durability::Os).unwrap();
            journal
                .append(&demo(), vec![event("E1", "Ua", "x")], 1)
                .await
                .unwrap();
            journal.clear_pending(&key("Ua"), 1).unwrap();
            journal.settle().await.unwrap();
            // As an earlier release stored its batch: first seq in the key; last seq, then
            // each chat with its latest event.
            let mut value = 1u64.to_be_bytes().to_vec();
            value.extend_from_slice(format!("{}\t1\n", key("Ub")).as_bytes());
            let tree = &journal.inner.tree;
            tree.insert([&b"r"[..], &1u64.to_be_bytes()].concat(), value)
                .unwrap();
            tree.insert(super::super::uncovered::CHECKPOINT, &0u64.to_be_bytes())
                .unwrap();
            journal.inner.db.flush().unwrap();
        }
        let db = crate::storage::reopen(dir.path());
        let journal = Journal::open(db, dir.path(), Durability::Os).unwrap();
        assert_eq!(
            journal.pending_conversations(),
            [(key("Ua"), 1), (key("Ub"), 1)],
            "the record's chat, and the log's"
        );
        assert_eq!(keys_with_prefix(&journal, b"r"), 0);
    }

    #[actix_web::test]
    async fn a_conversation_left_uncovered_gets_its_own_mark_and_no_longer_holds_the_checkpoint_back(
    ) {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = keeping_events_for(dir.path(), 0);
            journal
                .append(&demo(), vec![event("S1", "Ustuck", "x")], 1)
                .await
                .unwrap();
            for i in 0..40 {
                journal
                    .append(&demo(), vec![event(&format!("E{i}"), "Ua", "a")], 1)
                    .await
                    .unwrap();
                journal.clear_pending(&key("Ua"), i + 2).unwrap();
            }
            assert_eq!(keys_with_prefix(&journal, b"p"), 1);
        }
        let journal = keeping_events_for(dir.path(), 0);
        // Ua's last event was covered after the checkpoint was last stored: it is resumed once
        // more, and its snapshot then clears it.
        assert_eq!(
            journal.pending_conversations(),
            [(key("Ua"), 41), (key("Ustuck"), 1)]
        );
        journal.clear_pending(&key("Ua"), 41).unwrap();
        // Settling (at shutdown, or when idle) stores that without waiting for a batch.
        journal.settle().await.unwrap();
        drop(journal);
        let journal = keeping_events_for(dir.path(), 0);
        assert_eq!(journal.pending_conversations(), [(key("Ustuck"), 1)]);
        assert!(journal.uncovered().stored_checkpoint() >= 30);
        journal.clear_pending(&key("Ustuck"), 1).unwrap();
        assert_eq!(keys_with_prefix(&journal, b"p"), 0);
        assert!(journal.pending_conversations().is_empty());
    }
}
