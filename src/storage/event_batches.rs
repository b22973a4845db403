//! How the journal stores its events: each writer batch as one sled value, and an index in
//! memory of the events no snapshot covers yet.
//!
//! - `b` first-seq(be u64) → last seq (8 bytes), newest `received_at_ms` (8 bytes), then the
//!   batch's [`StoredEvent`]s as one JSON array, in sequence order.
//!
//! Why one value per batch: keyed by chat, the events of 1,000 chats landed in 1,000 places of
//! sled's tree, and linking, consolidating and splitting those leaves was ~45% of a webhook's
//! CPU (docs/benchmarks.md, seventh round). A batch is one insert at the end of the tree.
//!
//! What finds a chat's events is then the index: a conversation only ever reads the events
//! after its snapshot, which are uncovered, and those are few per chat (at most
//! `conversation.snapshot_every` while it runs). It is rebuilt at open from the batches after
//! the oldest uncovered event. A batch is removed once every event in it is covered and older
//! than `storage.journal_retention_secs`.

use std::collections::HashMap;

use linedesk_actors::domain::ConversationKey;

use super::journal::StoredEvent;
use super::{corrupt, decode_seq, StorageError};

pub(super) const BATCH: u8 = b'b';

/// Events of the format before batches: `e` conversation `\0` seq → one [`StoredEvent`].
/// Read once, at open, and rewritten as batches.
const LEGACY_EVENT: u8 = b'e';

/// Most events per batch the legacy rewrite writes (a writer batch has no such bound).
const LEGACY_PER_BATCH: usize = 512;

/// Most batches one retention pass removes, so that appends are not held up by a backlog.
pub(super) const PRUNE_PER_PASS: usize = 1_000;

pub(super) fn batch_key(first: u64) -> [u8; 9] {
    let mut key = [BATCH; 9];
    key[1..].copy_from_slice(&first.to_be_bytes());
    key
}

/// `events` in sequence order, at least one.
pub(super) fn encode_batch(events: &[StoredEvent]) -> Vec<u8> {
    let last = events.last().map_or(0, |e| e.seq);
    let newest = events.iter().map(|e| e.received_at_ms).max().unwrap_or(0);
    let mut value = Vec::with_capacity(16 + events.len() * 600);
    value.extend_from_slice(&last.to_be_bytes());
    value.extend_from_slice(&newest.to_be_bytes());
    // unwrap: serialising strings, integers and already-valid JSON cannot fail.
    serde_json::to_writer(&mut value, events).unwrap();
    value
}

/// (last seq, newest `received_at_ms`), without reading the events.
pub(super) fn batch_header(key: &[u8], value: &[u8]) -> Result<(u64, i64), StorageError> {
    let header = value
        .get(..16)
        .ok_or_else(|| corrupt(key, "a batch is at least 16 bytes"))?;
    let last = decode_seq(key, &header[..8])?;
    let newest = i64::from_be_bytes(header[8..].try_into().expect("8 bytes"));
    Ok((last, newest))
}

pub(super) fn decode_batch(key: &[u8], value: &[u8]) -> Result<Vec<StoredEvent>, StorageError> {
    batch_header(key, value)?;
    serde_json::from_slice(&value[16..]).map_err(|e| corrupt(key, e))
}

/// The first sequence number of the batch a key names.
pub(super) fn batch_first(key: &[u8]) -> Result<u64, StorageError> {
    decode_seq(key, key.get(1..).unwrap_or_default())
}

/// The batches holding events at or after `seq`, oldest first: the one `seq` falls in (its
/// key is the greatest at or below `seq`), then every later one.
pub(super) fn batches_from(
    tree: &sled::Tree,
    seq: u64,
) -> Result<impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>, StorageError> {
    let start = match tree.range(batch_key(0)..=batch_key(seq)).next_back() {
        Some(entry) => entry?.0.to_vec(),
        None => batch_key(0).to_vec(),
    };
    Ok(tree.range(start..batch_key(u64::MAX).to_vec()))
}

/// Rewrites events stored one key each (before batches) as batches, a chunk per sled batch:
/// a crash halfway leaves each event in exactly one of the two forms, and the next open goes on.
pub(super) fn rewrite_legacy(tree: &sled::Tree) -> Result<usize, StorageError> {
    let mut legacy: Vec<(sled::IVec, StoredEvent)> = Vec::new();
    for entry in tree.scan_prefix([LEGACY_EVENT]) {
        let (key, value) = entry?;
        let event = serde_json::from_slice(&value).map_err(|e| corrupt(&key, e))?;
        legacy.push((key, event));
    }
    legacy.sort_by_key(|(_, e)| e.seq);
    let rewritten = legacy.len();
    let mut rest = legacy.as_mut_slice();
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at_mut(rest.len().min(LEGACY_PER_BATCH));
        let mut batch = sled::Batch::default();
        let events: Vec<StoredEvent> = chunk.iter().map(|(_, e)| e.clone()).collect();
        batch.insert(&batch_key(events[0].seq), encode_batch(&events));
        for (key, _) in chunk.iter() {
            batch.remove(key.clone());
        }
        tree.apply_batch(batch)?;
        rest = after;
    }
    Ok(rewritten)
}

/// Where each uncovered event of each chat is: (seq, first seq of its batch), oldest first.
#[derive(Debug, Default)]
pub(super) struct UncoveredIndex {
    chats: HashMap<ConversationKey, Vec<(u64, u64)>>,
}

impl UncoveredIndex {
    pub fn add(&mut self, conversation: &ConversationKey, seq: u64, batch: u64) {
        match self.chats.get_mut(conversation) {
            Some(events) => events.push((seq, batch)),
            None => {
                self.chats.insert(conversation.clone(), vec![(seq, batch)]);
            }
        }
    }

    /// A snapshot covers the chat's events up to `applied`.
    pub fn covered(&mut self, conversation: &ConversationKey, applied: u64) {
        if let Some(events) = self.chats.get_mut(conversation) {
            events.retain(|(seq, _)| *seq > applied);
            if events.is_empty() {
                self.chats.remove(conversation);
            }
        }
    }

    /// The chat's first uncovered event.
    pub fn first(&self, conversation: &ConversationKey) -> Option<u64> {
        self.chats.get(conversation)?.first().map(|(seq, _)| *seq)
    }

    /// The batches holding the chat's events after `after`, oldest first, each once.
    pub fn batches_after(&self, conversation: &ConversationKey, after: u64) -> Vec<u64> {
        let mut batches: Vec<u64> = self
            .chats
            .get(conversation)
            .into_iter()
            .flatten()
            .filter(|(seq, _)| *seq > after)
            .map(|(_, batch)| *batch)
            .collect();
        batches.dedup();
        batches
    }

    /// How many events are indexed.
    pub fn events(&self) -> usize {
        self.chats.values().map(Vec::len).sum()
    }
}
