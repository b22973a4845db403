//! The redelivery check: which events of an account LINE already delivered, by `webhookEventId`,
//! so that a redelivered event is acknowledged and not stored twice.
//!
//! Checks are filed by the event's `timestamp` (ms), which a redelivery keeps (it is the
//! original event time), in one key per account and millisecond holding a fingerprint of every
//! id of that millisecond: a journal batch's events were mostly sent within a millisecond or two
//! of each other, so a batch reads and writes a key or two instead of a lookup and an insert per
//! event (that pair was ~15% of a webhook's CPU). Days older than
//! `storage.redelivery_window_days` are removed in key order.
//!
//! A millisecond's key stays in memory for [`HOLD_FOR`] after the last batch that filed in it,
//! so that the next batches add the rest of that millisecond's ids there: sled copies a whole
//! node for every insert, and rewriting a key per batch as it grew was 11% of the CPU at
//! ingest. Held checks are in the event log already (every event carries its id and
//! timestamp); sled is told how far its checks go ([`CHECKS_THROUGH`]), and after a crash
//! the checks of the events past it are filed again from the log.
//!
//! Keys, in the journal's tree:
//! - `v` timestamp(be u64) account → the ids of that millisecond: a version byte (2), a flags
//!   byte ([`OVERFLOWED`]), then each id's [`fingerprint`] (be u64). At most [`BUCKET_IDS`]
//!   ids; the rest of that millisecond (a replay of old events, a fixture's one timestamp) get
//!   keys of their own. Version 1, written by earlier releases, held each id as length(u8) id.
//! - `mckt` → every event up to this sequence number (be u64) has its check in sled; absent,
//!   the journal's last sequence number (earlier releases wrote checks with each batch).
//! - `w` day(be u32) account `\0` webhookEventId → the last seq(be u64) of the batch that
//!   filed it: one event's check. Releases before the millisecond keys filed every event so;
//!   theirs are consulted until a window after the upgrade.
//! - `d` account `\0` webhookEventId → seq(be u64): as releases before the day were added filed
//!   them. Still consulted, and removed once a window has passed since the upgrade.
//! - `mupg` → when a release first opened a journal holding `d` checks (ms, be u64)
//! - `mupw` → when this release first opened a journal holding `w` checks (ms, be u64)
//! - `mchv` → the checks' layout this journal is in (2: millisecond keys)

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use linedesk_actors::domain::AccountId;
use sha2::{Digest, Sha256};

use super::{corrupt, decode_seq, StorageError};

const BUCKET: u8 = b'v';
const SINGLE: u8 = b'w';
const LEGACY: u8 = b'd';
const UPGRADED_AT: &[u8] = b"mupg";
const SINGLES_UNTIL_UPGRADE_AT: &[u8] = b"mupw";
const LAYOUT: &[u8] = b"mchv";
const LAYOUT_BUCKETS: u8 = 2;
/// Ids as length(u8) id: read, no longer written.
const BUCKET_FORMAT_IDS: u8 = 1;
const BUCKET_FORMAT: u8 = 2;
pub(super) const CHECKS_THROUGH: &[u8] = b"mckt";
/// A millisecond's key holds at most this many ids (512 bytes): it is written whole.
pub(super) const BUCKET_IDS: usize = 64;
/// How long a millisecond's key stays in memory after the last batch that filed in it.
const HOLD_FOR: Duration = Duration::from_millis(100);
/// Most millisecond keys held at once; past it the least recently filed are written.
const MAX_HELD: usize = 4_096;
/// How often at most [`CHECKS_THROUGH`] is stored while events keep coming: a later value only
/// shortens what a crash refiles from the event log.
const STORE_THROUGH_EVERY: Duration = Duration::from_millis(50);
/// Flag: some of the millisecond's checks have keys of their own.
const OVERFLOWED: u8 = 1;
const DAY_MS: i64 = 86_400_000;
const NO_LEGACY: i64 = i64::MIN;

/// Most checks one expiry pass removes: a pass runs on the journal writer, between batches,
/// and holds appends back while it runs (a few milliseconds).
pub(super) const EXPIRE_PER_PASS: usize = 2_000;

#[derive(Debug)]
pub(super) struct RedeliveryChecks {
    /// `storage.redelivery_window_days`; 0 keeps every check.
    window_days: AtomicU32,
    /// When `d` checks were first found, while some remain; else [`NO_LEGACY`].
    legacy_since_ms: AtomicI64,
    /// When `w` checks of an earlier release were first found, until a window has passed;
    /// else [`NO_LEGACY`]. Meanwhile an id not in its millisecond's key is also looked up
    /// under a key of its own.
    singles_since_ms: AtomicI64,
    held: Mutex<Held>,
    /// [`HOLD_FOR`]; tests lengthen it.
    hold_for: Duration,
}

/// The millisecond keys not written to sled yet.
#[derive(Debug, Default)]
struct Held {
    buckets: HashMap<Vec<u8>, HeldBucket>,
    /// Keys in the order they were filed in, with when; an entry whose `filing` is not its
    /// bucket's latest was superseded by a later one.
    order: VecDeque<(Vec<u8>, u64, Instant)>,
    filings: u64,
    /// How many held buckets have each `first_seq`: the smallest bounds what sled has.
    first_seqs: BTreeMap<u64, usize>,
    /// Every event up to this sequence number has its check in sled ([`CHECKS_THROUGH`]).
    through: u64,
    /// When `through` was last stored.
    through_stored_at: Option<Instant>,
    /// The newest millisecond of a key written to sled: a later one needs no read.
    newest_written_ms: u64,
}

#[derive(Debug)]
struct HeldBucket {
    bucket: Bucket,
    /// The first sequence number of the batch that first filed in it since it was written.
    first_seq: u64,
    filing: u64,
}

impl RedeliveryChecks {
    /// Keeps every check until [`RedeliveryChecks::set_window_days`] says otherwise.
    /// `last_seq`: the journal's last sequence number as sled has it.
    pub fn open(tree: &sled::Tree, now_ms: i64, last_seq: u64) -> Result<Self, StorageError> {
        let legacy_since_ms = match tree.scan_prefix([LEGACY]).next().transpose()? {
            None => NO_LEGACY,
            Some(_) => upgraded_at(tree, UPGRADED_AT, now_ms)?,
        };
        let singles_since_ms = if tree.get(LAYOUT)?.is_some() {
            match tree.get(SINGLES_UNTIL_UPGRADE_AT)? {
                Some(v) => decode_seq(SINGLES_UNTIL_UPGRADE_AT, &v)? as i64,
                None => NO_LEGACY,
            }
        } else {
            let since = match tree.scan_prefix([SINGLE]).next().transpose()? {
                None => NO_LEGACY,
                Some(_) => upgraded_at(tree, SINGLES_UNTIL_UPGRADE_AT, now_ms)?,
            };
            tree.insert(LAYOUT, &[LAYOUT_BUCKETS])?;
            since
        };
        let through = match tree.get(CHECKS_THROUGH)? {
            Some(v) => decode_seq(CHECKS_THROUGH, &v)?.min(last_seq),
            None => {
                // Stored now, before any check is held: absent, it would claim the checks of
                // every event sled's sequence number counts, held ones included.
                tree.insert(CHECKS_THROUGH, &last_seq.to_be_bytes())?;
                last_seq
            }
        };
        let newest_written_ms = match tree.range(vec![BUCKET]..vec![BUCKET + 1]).next_back() {
            Some(entry) => {
                let (key, _) = entry?;
                bucket_ms(&key)
                    .ok_or_else(|| corrupt(&key, "a redelivery check's key is cut short"))?
            }
            None => 0,
        };
        Ok(Self {
            window_days: AtomicU32::new(0),
            legacy_since_ms: AtomicI64::new(legacy_since_ms),
            singles_since_ms: AtomicI64::new(singles_since_ms),
            held: Mutex::new(Held {
                through,
                newest_written_ms,
                ..Held::default()
            }),
            hold_for: HOLD_FOR,
        })
    }

    /// Holds millisecond keys for `hold_for` instead of [`HOLD_FOR`].
    #[cfg(test)]
    fn holding_for(mut self, hold_for: Duration) -> Self {
        self.hold_for = hold_for;
        self
    }

    /// Every event up to this sequence number has its check in sled; the event log must keep
    /// the later ones (they are filed again from it after a crash).
    pub fn through(&self) -> u64 {
        self.held().through
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The millisecond's checks: held, or as sled has them.
    fn bucket(&self, tree: &sled::Tree, key: &[u8]) -> Result<Bucket, StorageError> {
        {
            let held = self.held();
            if let Some(held) = held.buckets.get(key) {
                return Ok(held.bucket.unchanged());
            }
            if bucket_ms(key).is_some_and(|ms| ms > held.newest_written_ms) {
                return Ok(Bucket::default());
            }
        }
        // Written to sled before it leaves `held`: a reader on another thread finds it in one.
        Bucket::read(tree, key)
    }

    /// Takes what a stored batch filed in millisecond keys into memory; `first_seq` is the
    /// batch's first sequence number.
    pub fn hold(&self, batch: CheckBatch<'_>, first_seq: u64) {
        let mut held = self.held();
        let now = Instant::now();
        for (key, bucket) in batch.buckets {
            if !bucket.changed {
                continue;
            }
            held.filings += 1;
            let filing = held.filings;
            held.order.push_back((key.clone(), filing, now));
            let first_seq = match held.buckets.get(&key) {
                Some(h) => h.first_seq,
                None => {
                    *held.first_seqs.entry(first_seq).or_default() += 1;
                    first_seq
                }
            };
            held.buckets.insert(
                key,
                HeldBucket {
                    bucket: bucket.unchanged(),
                    first_seq,
                    filing,
                },
            );
        }
    }

    /// Writes the held millisecond keys no batch filed in for [`HOLD_FOR`] (the oldest past
    /// [`MAX_HELD`]), or all of them, then how far sled's checks go. `last_seq`: the journal's
    /// last sequence number, whose check is filed.
    pub fn write_held(
        &self,
        tree: &sled::Tree,
        last_seq: u64,
        all: bool,
    ) -> Result<(), StorageError> {
        let mut held = self.held();
        let now = Instant::now();
        while let Some((key, filing, at)) = held.order.pop_front() {
            if held.buckets.get(&key).map(|h| h.filing) != Some(filing) {
                continue;
            }
            let due =
                all || held.buckets.len() > MAX_HELD || now.duration_since(at) >= self.hold_for;
            if !due {
                held.order.push_front((key, filing, at));
                break;
            }
            let value = held.buckets[&key].bucket.encode();
            if let Err(e) = tree.insert(key.as_slice(), value) {
                held.order.push_front((key, filing, at));
                return Err(e.into());
            }
            held.newest_written_ms = held.newest_written_ms.max(bucket_ms(&key).unwrap_or(0));
            if let Some(written) = held.buckets.remove(&key) {
                if let Some(n) = held.first_seqs.get_mut(&written.first_seq) {
                    *n -= 1;
                    if *n == 0 {
                        held.first_seqs.remove(&written.first_seq);
                    }
                }
            }
        }
        let through = held
            .first_seqs
            .keys()
            .next()
            .map_or(last_seq, |first| first.saturating_sub(1));
        let due = all
            || held
                .through_stored_at
                .is_none_or(|at| now.duration_since(at) >= STORE_THROUGH_EVERY);
        if due && through > held.through {
            tree.insert(CHECKS_THROUGH, &through.to_be_bytes())?;
            held.through = through;
            held.through_stored_at = Some(now);
        }
        Ok(())
    }

    pub fn set_window_days(&self, days: u32) {
        self.window_days.store(days, Ordering::Relaxed);
    }

    /// A batch of checks to file, read from and written to sled once per millisecond key.
    pub fn batch(&self) -> CheckBatch<'_> {
        CheckBatch {
            checks: self,
            buckets: HashMap::new(),
            singles: Vec::new(),
        }
    }

    /// Whether the event was stored before.
    pub fn contains(
        &self,
        tree: &sled::Tree,
        account: &AccountId,
        webhook_event_id: &str,
        timestamp_ms: i64,
    ) -> Result<bool, StorageError> {
        self.batch()
            .look(tree, account, webhook_event_id, timestamp_ms, false)
    }

    /// Whether an id its millisecond's key does not hold has a key of its own (or one an
    /// earlier release filed).
    fn filed_apart(
        &self,
        tree: &sled::Tree,
        bucket: &Bucket,
        account: &AccountId,
        webhook_event_id: &str,
        timestamp_ms: i64,
    ) -> Result<bool, StorageError> {
        let singles = bucket.overflowed
            || !fits(webhook_event_id)
            || self.singles_since_ms.load(Ordering::Relaxed) != NO_LEGACY;
        if singles && tree.contains_key(single_key(account, webhook_event_id, timestamp_ms))? {
            return Ok(true);
        }
        if self.legacy_since_ms.load(Ordering::Relaxed) == NO_LEGACY {
            return Ok(false);
        }
        Ok(tree.contains_key(legacy_key(account, webhook_event_id))?)
    }

    /// Removes up to [`EXPIRE_PER_PASS`] checks of days older than the window (and, a window
    /// after an upgrade, the checks of earlier releases). Returns how many keys it removed: a
    /// full pass means more may be left.
    pub fn expire(&self, tree: &sled::Tree, now_ms: i64) -> Result<usize, StorageError> {
        let window = self.window_days.load(Ordering::Relaxed);
        if window == 0 {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        let oldest_kept = day_of(now_ms).saturating_sub(window);
        let bucket_end = [
            &[BUCKET][..],
            &(u64::from(oldest_kept) * DAY_MS as u64).to_be_bytes(),
        ]
        .concat();
        let single_end = [&[SINGLE][..], &oldest_kept.to_be_bytes()].concat();
        let mut removed = 0;
        for (start, end) in [(BUCKET, bucket_end), (SINGLE, single_end)] {
            for key in tree
                .range(vec![start]..end)
                .keys()
                .take(EXPIRE_PER_PASS - removed)
            {
                batch.remove(key?);
                removed += 1;
            }
        }
        let expired = |since: i64, days: u32| {
            since != NO_LEGACY && now_ms >= since.saturating_add(i64::from(days) * DAY_MS)
        };
        // A day more: the earlier release's `w` checks are then of days past the window.
        let singles_gone = expired(self.singles_since_ms.load(Ordering::Relaxed), window + 1);
        if singles_gone {
            batch.remove(SINGLES_UNTIL_UPGRADE_AT);
        }
        let mut legacy_gone = false;
        if expired(self.legacy_since_ms.load(Ordering::Relaxed), window)
            && removed < EXPIRE_PER_PASS
        {
            let mut legacy = 0;
            for key in tree
                .scan_prefix([LEGACY])
                .keys()
                .take(EXPIRE_PER_PASS - removed)
            {
                batch.remove(key?);
                legacy += 1;
            }
            if legacy < EXPIRE_PER_PASS - removed {
                batch.remove(UPGRADED_AT);
                legacy_gone = true;
            }
            removed += legacy;
        }
        // An empty batch would still make sled write out its I/O buffer.
        if removed > 0 || legacy_gone || singles_gone {
            tree.apply_batch(batch)?;
        }
        if singles_gone {
            self.singles_since_ms.store(NO_LEGACY, Ordering::Relaxed);
        }
        if legacy_gone {
            self.legacy_since_ms.store(NO_LEGACY, Ordering::Relaxed);
        }
        Ok(removed)
    }
}

/// The checks of one journal batch: each millisecond key read once, changed in memory, and
/// written once.
pub(super) struct CheckBatch<'a> {
    checks: &'a RedeliveryChecks,
    buckets: HashMap<Vec<u8>, Bucket>,
    /// Keys of their own filed by this batch.
    singles: Vec<Vec<u8>>,
}

impl CheckBatch<'_> {
    /// Files the event's check, unless it was filed before (by this batch or an earlier one):
    /// returns whether the event is new.
    pub fn file(
        &mut self,
        tree: &sled::Tree,
        account: &AccountId,
        webhook_event_id: &str,
        timestamp_ms: i64,
    ) -> Result<bool, StorageError> {
        Ok(!self.look(tree, account, webhook_event_id, timestamp_ms, true)?)
    }

    /// Whether the event's check was filed, by this batch or an earlier one; with `file`,
    /// files it if it was not. The event's millisecond is read from sled the first time this
    /// batch needs it.
    fn look(
        &mut self,
        tree: &sled::Tree,
        account: &AccountId,
        webhook_event_id: &str,
        timestamp_ms: i64,
        file: bool,
    ) -> Result<bool, StorageError> {
        let bucket = match self.buckets.entry(bucket_key(account, timestamp_ms)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let bucket = self.checks.bucket(tree, e.key())?;
                e.insert(bucket)
            }
        };
        let id = fingerprint(webhook_event_id.as_bytes());
        let mut known = bucket.holds(id)
            || self
                .checks
                .filed_apart(tree, bucket, account, webhook_event_id, timestamp_ms)?;
        // Only an id its bucket had no room for can have been filed apart by this batch.
        if !known && bucket.overflowed {
            known = self
                .singles
                .contains(&single_key(account, webhook_event_id, timestamp_ms));
        }
        if !known && file && !bucket.add(id) {
            self.singles
                .push(single_key(account, webhook_event_id, timestamp_ms));
        }
        Ok(known)
    }

    /// Writes the keys of their own this batch filed. Its millisecond keys go to memory once
    /// the batch is stored ([`RedeliveryChecks::hold`]).
    pub fn write(&self, tree: &sled::Tree, seq: u64) -> Result<(), StorageError> {
        for key in &self.singles {
            tree.insert(key.as_slice(), &seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// Takes back what [`CheckBatch::write`] may have written, for a batch that failed.
    pub fn undo(&self, tree: &sled::Tree) {
        for key in &self.singles {
            let _ = tree.remove(key.as_slice());
        }
    }
}

/// One millisecond's ids, by [`fingerprint`].
#[derive(Debug, Default)]
struct Bucket {
    ids: Vec<u64>,
    overflowed: bool,
    /// Filed in by this batch.
    changed: bool,
}

impl Bucket {
    fn read(tree: &sled::Tree, key: &[u8]) -> Result<Self, StorageError> {
        let Some(value) = tree.get(key)? else {
            return Ok(Self::default());
        };
        let (format, flags, ids) = match value.as_ref() {
            [format, flags, ids @ ..] => (*format, *flags, ids),
            _ => return Err(corrupt(key, "a redelivery check is cut short")),
        };
        let ids: Vec<u64> = match format {
            BUCKET_FORMAT => {
                let chunks = ids.chunks_exact(8);
                if !chunks.remainder().is_empty() {
                    return Err(corrupt(key, "a redelivery check is cut short"));
                }
                chunks
                    .map(|id| u64::from_be_bytes(id.try_into().unwrap_or_default()))
                    .collect()
            }
            BUCKET_FORMAT_IDS => Ids(ids)
                .map(|id| id.map(fingerprint))
                .collect::<Option<_>>()
                .ok_or_else(|| corrupt(key, "a redelivery check is cut short"))?,
            _ => return Err(corrupt(key, "unknown redelivery check format")),
        };
        Ok(Self {
            ids,
            overflowed: flags & OVERFLOWED != 0,
            changed: false,
        })
    }

    /// A copy for another batch.
    fn unchanged(&self) -> Self {
        Self {
            ids: self.ids.clone(),
            overflowed: self.overflowed,
            changed: false,
        }
    }

    fn holds(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    /// Adds an id, or marks the bucket overflowed if it has no room for it: returns whether it
    /// took it.
    fn add(&mut self, id: u64) -> bool {
        if self.ids.len() >= BUCKET_IDS {
            // Marked so that lookups of this millisecond also look for keys of their own;
            // once marked, the bucket is not written again for it.
            self.changed |= !self.overflowed;
            self.overflowed = true;
            return false;
        }
        self.changed = true;
        self.ids.push(id);
        true
    }

    fn encode(&self) -> Vec<u8> {
        let flags = if self.overflowed { OVERFLOWED } else { 0 };
        let mut value = Vec::with_capacity(2 + 8 * self.ids.len());
        value.extend_from_slice(&[BUCKET_FORMAT, flags]);
        for id in &self.ids {
            value.extend_from_slice(&id.to_be_bytes());
        }
        value
    }
}

/// An id as a millisecond's key holds it: the first 8 bytes of its SHA-256. Two ids of one
/// account and millisecond (at most [`BUCKET_IDS`]) share one with a chance below 10⁻¹⁶.
fn fingerprint(webhook_event_id: &[u8]) -> u64 {
    let digest = Sha256::digest(webhook_event_id);
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

/// The millisecond of a `v` key; `None` if the key is cut short.
fn bucket_ms(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

/// The ids of a bucket's value; `None` where it is cut short.
struct Ids<'a>(&'a [u8]);

impl<'a> Iterator for Ids<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&len, rest) = self.0.split_first()?;
        match rest.get(..usize::from(len)) {
            Some(id) => {
                self.0 = &rest[usize::from(len)..];
                Some(Some(id))
            }
            None => {
                self.0 = &[];
                Some(None)
            }
        }
    }
}

/// The time stored under `mark`, storing `now_ms` if there is none yet.
fn upgraded_at(tree: &sled::Tree, mark: &[u8], now_ms: i64) -> Result<i64, StorageError> {
    match tree.get(mark)? {
        Some(v) => Ok(decode_seq(mark, &v)? as i64),
        None => {
            tree.insert(mark, &(now_ms.max(0) as u64).to_be_bytes())?;
            Ok(now_ms)
        }
    }
}

/// Whether an earlier release could hold an id in a bucket (its length is one byte); it gave
/// longer ones keys of their own.
fn fits(webhook_event_id: &str) -> bool {
    webhook_event_id.len() <= usize::from(u8::MAX)
}

fn day_of(timestamp_ms: i64) -> u32 {
    timestamp_ms
        .div_euclid(DAY_MS)
        .clamp(0, i64::from(u32::MAX)) as u32
}

/// `v` timestamp account.
fn bucket_key(account: &AccountId, timestamp_ms: i64) -> Vec<u8> {
    let account = account.as_str().as_bytes();
    let mut key = Vec::with_capacity(9 + account.len());
    key.push(BUCKET);
    key.extend_from_slice(&(timestamp_ms.max(0) as u64).to_be_bytes());
    key.extend_from_slice(account);
    key
}

fn single_key(account: &AccountId, webhook_event_id: &str, timestamp_ms: i64) -> Vec<u8> {
    let [a, b, c, d] = day_of(timestamp_ms).to_be_bytes();
    event_key(&[SINGLE, a, b, c, d], account, webhook_event_id)
}

fn legacy_key(account: &AccountId, webhook_event_id: &str) -> Vec<u8> {
    event_key(&[LEGACY], account, webhook_event_id)
}

/// `prefix` account `\0` webhookEventId.
fn event_key(prefix: &[u8], account: &AccountId, webhook_event_id: &str) -> Vec<u8> {
    let mut key =
        Vec::with_capacity(prefix.len() + account.as_str().len() + 1 + webhook_event_id.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(account.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(webhook_event_id.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path())
            .unwrap()
            .open_tree("journal")
            .unwrap();
        (dir, tree)
    }

    fn demo() -> AccountId {
        AccountId::parse("demo").unwrap()
    }

    /// Files the events as one journal batch would, then writes what it held; returns which
    /// were new.
    fn file(checks: &RedeliveryChecks, tree: &sled::Tree, events: &[(&str, i64)]) -> Vec<bool> {
        let new = file_held(checks, tree, events, 1);
        checks.write_held(tree, 1, true).unwrap();
        new
    }

    /// Files the events as the journal batch starting at `seq` would; its millisecond keys
    /// stay in memory.
    fn file_held(
        checks: &RedeliveryChecks,
        tree: &sled::Tree,
        events: &[(&str, i64)],
        seq: u64,
    ) -> Vec<bool> {
        let mut batch = checks.batch();
        let new = events
            .iter()
            .map(|(id, at)| batch.file(tree, &demo(), id, *at).unwrap())
            .collect();
        batch.write(tree, seq).unwrap();
        checks.hold(batch, seq);
        new
    }

    fn seen(checks: &RedeliveryChecks, tree: &sled::Tree, id: &str, timestamp_ms: i64) -> bool {
        checks.contains(tree, &demo(), id, timestamp_ms).unwrap()
    }

    fn keys(tree: &sled::Tree, prefix: u8) -> usize {
        tree.scan_prefix([prefix]).count()
    }

    #[test]
    fn a_milliseconds_ids_share_one_key_and_those_past_its_room_get_keys_of_their_own() {
        let (_dir, tree) = tree();
        let checks = RedeliveryChecks::open(&tree, NOW, 0).unwrap();
        let ids: Vec<String> = (0..BUCKET_IDS + 3).map(|n| format!("E{n}")).collect();
        let events: Vec<(&str, i64)> = ids.iter().map(|id| (id.as_str(), NOW)).collect();
        assert!(file(&checks, &tree, &events).iter().all(|new| *new));
        assert_eq!((keys(&tree, BUCKET), keys(&tree, SINGLE)), (1, 3));
        for id in &ids {
            assert!(seen(&checks, &tree, id, NOW), "{id}");
        }
        assert!(!seen(&checks, &tree, "E0", NOW + 1), "another millisecond");
        assert!(
            file(&checks, &tree, &events).iter().all(|new| !*new),
            "a later batch finds every one"
        );
        assert_eq!(file(&checks, &tree, &[("late", NOW)]), [true]);
        assert!(seen(&checks, &tree, "late", NOW));
        assert_eq!((keys(&tree, BUCKET), keys(&tree, SINGLE)), (1, 4));
    }

    #[test]
    fn an_id_twice_in_one_batch_is_new_once() {
        let (_dir, tree) = tree();
        let checks = RedeliveryChecks::open(&tree, NOW, 0).unwrap();
        let long = "L".repeat(300);
        assert_eq!(
            file(
                &checks,
                &tree,
                &[("E1", NOW), ("E1", NOW), (&long, NOW), (&long, NOW)]
            ),
            [true, false, true, false]
        );
        assert!(seen(&checks, &tree, &long, NOW), "too long for a bucket");
    }

    #[test]
    fn a_failed_batch_takes_back_what_it_filed_and_keeps_what_was_there() {
        let (_dir, tree) = tree();
        let checks = RedeliveryChecks::open(&tree, NOW, 0).unwrap();
        file(&checks, &tree, &[("E1", NOW)]);
        let mut batch = checks.batch();
        for (id, at) in [("E2", NOW), ("E3", NOW + 1)] {
            assert!(batch.file(&tree, &demo(), id, at).unwrap());
        }
        batch.write(&tree, 2).unwrap();
        batch.undo(&tree);
        assert!(seen(&checks, &tree, "E1", NOW));
        assert!(!seen(&checks, &tree, "E2", NOW));
        assert!(!seen(&checks, &tree, "E3", NOW + 1));
        assert_eq!(keys(&tree, BUCKET), 1);
    }

    #[test]
    fn held_checks_count_at_once_and_sled_learns_how_far_its_own_go() {
        let (_dir, tree) = tree();
        let checks = RedeliveryChecks::open(&tree, NOW, 0)
            .unwrap()
            .holding_for(Duration::from_secs(3_600));
        assert_eq!(file_held(&checks, &tree, &[("E1", NOW)], 1), [true]);
        assert_eq!(
            file_held(
                &checks,
                &tree,
                &[("E1", NOW), ("E2", NOW), ("E3", NOW + 1)],
                2
            ),
            [false, true, true]
        );
        checks.write_held(&tree, 3, false).unwrap();
        assert_eq!(keys(&tree, BUCKET), 0, "held for an hour");
        assert_eq!(
            (
                checks.through(),
                tree.get(CHECKS_THROUGH).unwrap().as_deref()
            ),
            (0, Some(&0u64.to_be_bytes()[..]))
        );
        for (id, at) in [("E1", NOW), ("E2", NOW), ("E3", NOW + 1)] {
            assert!(seen(&checks, &tree, id, at), "{id}");
        }

        checks.write_held(&tree, 3, true).unwrap();
        assert_eq!(keys(&tree, BUCKET), 2);
        assert_eq!(checks.through(), 3);
        let value = tree.get(bucket_key(&demo(), NOW)).unwrap().unwrap();
        assert_eq!(value.len(), 2 + 2 * 8, "each id once, as a fingerprint");
        let reopened = RedeliveryChecks::open(&tree, NOW, 5).unwrap();
        assert_eq!(reopened.through(), 3);
        for (id, at) in [("E1", NOW), ("E2", NOW), ("E3", NOW + 1)] {
            assert!(seen(&reopened, &tree, id, at), "{id}");
        }
        assert_eq!(
            RedeliveryChecks::open(&tree, NOW, 2).unwrap().through(),
            2,
            "never past the journal's last sequence number"
        );
        let (_fresh_dir, fresh) = self::tree();
        assert_eq!(
            RedeliveryChecks::open(&fresh, NOW, 7).unwrap().through(),
            7,
            "an earlier release wrote checks with each batch"
        );
        assert_eq!(
            fresh.get(CHECKS_THROUGH).unwrap().as_deref(),
            Some(&7u64.to_be_bytes()[..]),
            "stored at once: checks held later must not count as written after a crash"
        );
        let (_new_dir, new) = self::tree();
        RedeliveryChecks::open(&new, NOW, 0).unwrap();
        assert!(
            new.get(CHECKS_THROUGH).unwrap().is_some(),
            "a new journal too"
        );
    }

    #[test]
    fn a_millisecond_an_earlier_release_filed_keeps_its_ids_when_rewritten() {
        let (_dir, tree) = tree();
        tree.insert(
            bucket_key(&demo(), NOW),
            &[BUCKET_FORMAT_IDS, 0, 2, b'E', b'1'],
        )
        .unwrap();
        let checks = RedeliveryChecks::open(&tree, NOW, 0).unwrap();
        assert!(seen(&checks, &tree, "E1", NOW));
        assert_eq!(
            file(&checks, &tree, &[("E1", NOW), ("E2", NOW)]),
            [false, true]
        );
        let value = tree.get(bucket_key(&demo(), NOW)).unwrap().unwrap();
        assert_eq!((value[0], value.len()), (BUCKET_FORMAT, 2 + 2 * 8));
        let reopened = RedeliveryChecks::open(&tree, NOW, 0).unwrap();
        assert!(seen(&reopened, &tree, "E1", NOW) && seen(&reopened, &tree, "E2", NOW));
    }

    #[test]
    fn a_damaged_check_is_an_error() {
        let (_dir, tree) = tree();
        tree.insert(bucket_key(&demo(), NOW), &[BUCKET_FORMAT_IDS, 0, 5, b'E'])
            .unwrap();
        let checks = RedeliveryChecks::open(&tree, NOW, 0).unwrap();
        assert!(matches!(
            checks.contains(&tree, &demo(), "E1", NOW),
            Err(StorageError::Corrupt { .. })
        ));
        tree.insert(bucket_key(&demo(), NOW), &[9u8][..]).unwrap();
        assert!(checks.batch().file(&tree, &demo(), "E1", NOW).is_err());
        tree.insert(bucket_key(&demo(), NOW), &[BUCKET_FORMAT, 0, 1, 2, 3])
            .unwrap();
        assert!(checks.contains(&tree, &demo(), "E1", NOW).is_err());
    }

    #[test]
    fn days_past_the_window_go_and_the_others_stay() {
        let (_dir, tree) = tree();
        let checks = RedeliveryChecks::open(&tree, NOW, 0).unwrap();
        for (id, days_ago) in [("old", 8), ("edge", 7), ("recent", 6), ("today", 0)] {
            file(&checks, &tree, &[(id, NOW - days_ago * DAY_MS)]);
        }
        assert_eq!(
            checks.expire(&tree, NOW).unwrap(),
            0,
            "no window: kept forever"
        );
        checks.set_window_days(7);
        assert_eq!(checks.expire(&tree, NOW).unwrap(), 1);
        assert!(!seen(&checks, &tree, "old", NOW - 8 * DAY_MS));
        for (id, days_ago) in [("edge", 7), ("recent", 6), ("today", 0)] {
            assert!(seen(&checks, &tree, id, NOW - days_ago * DAY_MS), "{id}");
        }
        assert!(
            !seen(&checks, &tree, "today", NOW - DAY_MS),
            "filed under the original time, which a redelivery keeps"
        );
        assert_eq!(checks.expire(&tree, NOW).unwrap(), 0);
    }

    #[test]
    fn a_pass_removes_a_bounded_number_and_the_next_goes_on() {
        let (_dir, tree) = tree();
        let checks = RedeliveryChecks::open(&tree, NOW, 0).unwrap();
        checks.set_window_days(1);
        let ids: Vec<String> = (0..EXPIRE_PER_PASS + 5).map(|n| format!("E{n}")).collect();
        let events: Vec<(&str, i64)> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| (id.as_str(), NOW - 3 * DAY_MS + n as i64))
            .collect();
        file(&checks, &tree, &events);
        assert_eq!(checks.expire(&tree, NOW).unwrap(), EXPIRE_PER_PASS);
        assert_eq!(checks.expire(&tree, NOW).unwrap(), 5);
        assert_eq!(keys(&tree, BUCKET), 0);
    }

    #[test]
    fn checks_filed_one_key_each_by_an_earlier_release_count_until_a_window_after_the_upgrade() {
        let (_dir, tree) = tree();
        tree.insert(single_key(&demo(), "E1", NOW), &1u64.to_be_bytes())
            .unwrap();
        let checks = RedeliveryChecks::open(&tree, NOW, 0).unwrap();
        checks.set_window_days(2);
        assert!(seen(&checks, &tree, "E1", NOW));
        assert_eq!(file(&checks, &tree, &[("E1", NOW)]), [false]);

        // Reopened later, the upgrade time is the first one.
        let checks = RedeliveryChecks::open(&tree, NOW + DAY_MS, 0).unwrap();
        checks.set_window_days(2);
        assert_eq!(checks.expire(&tree, NOW + 2 * DAY_MS).unwrap(), 0);
        assert!(seen(&checks, &tree, "E1", NOW));
        assert_eq!(checks.expire(&tree, NOW + 3 * DAY_MS).unwrap(), 1);
        assert!(!seen(&checks, &tree, "E1", NOW));
        assert!(tree.get(SINGLES_UNTIL_UPGRADE_AT).unwrap().is_none());

        // A journal in this layout from the start looks for keys of their own only where a
        // millisecond overflowed.
        let (_fresh_dir, fresh) = self::tree();
        let checks = RedeliveryChecks::open(&fresh, NOW, 0).unwrap();
        fresh
            .insert(single_key(&demo(), "E2", NOW), &1u64.to_be_bytes())
            .unwrap();
        assert!(!seen(&checks, &fresh, "E2", NOW));
        let checks = RedeliveryChecks::open(&fresh, NOW, 0).unwrap();
        assert!(
            !seen(&checks, &fresh, "E2", NOW),
            "not taken for an upgrade"
        );
    }

    #[test]
    fn checks_of_an_earlier_release_count_until_a_window_after_the_upgrade() {
        let (_dir, tree) = tree();
        tree.insert(legacy_key(&demo(), "E1"), &1u64.to_be_bytes())
            .unwrap();
        let checks = RedeliveryChecks::open(&tree, NOW, 0).unwrap();
        checks.set_window_days(2);
        assert!(seen(&checks, &tree, "E1", NOW - 30 * DAY_MS));
        assert!(!seen(&checks, &tree, "E2", NOW));

        // Reopened later, the upgrade time is the first one.
        let checks = RedeliveryChecks::open(&tree, NOW + DAY_MS, 0).unwrap();
        checks.set_window_days(2);
        assert_eq!(checks.expire(&tree, NOW + DAY_MS).unwrap(), 0);
        assert!(seen(&checks, &tree, "E1", NOW));
        assert_eq!(checks.expire(&tree, NOW + 2 * DAY_MS).unwrap(), 1);
        assert!(!seen(&checks, &tree, "E1", NOW));
        assert_eq!(
            tree.scan_prefix([LEGACY]).count() + tree.get(UPGRADED_AT).unwrap().iter().count(),
            0,
            "the upgrade mark went with the last of them"
        );
    }
}
