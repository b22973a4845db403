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

/// `events` in sequence order, at least one. Returns the value, and where in it each event is.
pub(super) fn encode_batch(events: &[StoredEvent]) -> (Vec<u8>, Vec<Span>) {
    let last = events.last().map_or(0, |e| e.seq);
    let newest = events.iter().map(|e| e.received_at_ms).max().unwrap_or(0);
    let mut value = Vec::with_capacity(16 + events.len() * 600);
    value.extend_from_slice(&last.to_be_bytes());
    value.extend_from_slice(&newest.to_be_bytes());
    let mut spans = Vec::with_capacity(events.len());
    value.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            value.push(b',');
        }
        let start = value.len();
        // unwrap: serialising strings, integers and already-valid JSON cannot fail.
        serde_json::to_writer(&mut value, event).unwrap();
        spans.push(Span::new(start, value.len()));
    }
    value.push(b']');
    (value, spans)
}

/// Where one event's JSON is in its batch's value (a batch is far below 4 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Self {
        Self {
            start: start as u32,
            end: end as u32,
        }
    }
}

/// The one event of a batch at `span`, which must be `seq`.
pub(super) fn decode_at(
    key: &[u8],
    value: &[u8],
    span: Span,
    seq: u64,
) -> Result<StoredEvent, StorageError> {
    let json = value
        .get(span.start as usize..span.end as usize)
        .ok_or_else(|| corrupt(key, "an indexed event is past the batch's end"))?;
    let event: StoredEvent = serde_json::from_slice(json).map_err(|e| corrupt(key, e))?;
    if event.seq != seq {
        return Err(corrupt(
            key,
            format!("event {} where {seq} was indexed", event.seq),
        ));
    }
    Ok(event)
}

/// Every event of a batch with where it is, for rebuilding the index.
pub(super) fn decode_spans(
    key: &[u8],
    value: &[u8],
) -> Result<Vec<(StoredEvent, Span)>, StorageError> {
    batch_header(key, value)?;
    let raw: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(&value[16..]).map_err(|e| corrupt(key, e))?;
    raw.into_iter()
        .map(|json| {
            let event = serde_json::from_str(json.get()).map_err(|e| corrupt(key, e))?;
            let start = json.get().as_ptr() as usize - value.as_ptr() as usize;
            Ok((event, Span::new(start, start + json.get().len())))
        })
        .collect()
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
        batch.insert(&batch_key(events[0].seq), encode_batch(&events).0);
        for (key, _) in chunk.iter() {
            batch.remove(key.clone());
        }
        tree.apply_batch(batch)?;
        rest = after;
    }
    Ok(rewritten)
}

/// Where one uncovered event is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub seq: u64,
    /// The first sequence number of its batch.
    pub batch: u64,
    pub span: Span,
}

/// Where each uncovered event of each chat is, oldest first: a conversation that starts reads
/// only its own events, not the whole batches they share with other chats.
#[derive(Debug, Default)]
pub(super) struct UncoveredIndex {
    chats: HashMap<ConversationKey, Vec<Place>>,
}

impl UncoveredIndex {
    pub fn add(&mut self, conversation: &ConversationKey, place: Place) {
        match self.chats.get_mut(conversation) {
            Some(events) => events.push(place),
            None => {
                self.chats.insert(conversation.clone(), vec![place]);
            }
        }
    }

    /// A snapshot covers the chat's events up to `applied`.
    pub fn covered(&mut self, conversation: &ConversationKey, applied: u64) {
        if let Some(events) = self.chats.get_mut(conversation) {
            events.retain(|place| place.seq > applied);
            if events.is_empty() {
                self.chats.remove(conversation);
            }
        }
    }

    /// The chat's first uncovered event.
    pub fn first(&self, conversation: &ConversationKey) -> Option<u64> {
        self.chats.get(conversation)?.first().map(|place| place.seq)
    }

    /// Where the chat's events after `after` are, oldest first.
    pub fn after(&self, conversation: &ConversationKey, after: u64) -> Vec<Place> {
        self.chats
            .get(conversation)
            .into_iter()
            .flatten()
            .filter(|place| place.seq > after)
            .copied()
            .collect()
    }

    /// How many events are indexed.
    pub fn events(&self) -> usize {
        self.chats.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linedesk_actors::domain::{AccountId, LineSource};
    use serde_json::value::RawValue;

    fn stored(seq: u64, user: &str, text: &str) -> StoredEvent {
        StoredEvent {
            v: super::super::JOURNAL_FORMAT_VERSION,
            seq,
            conversation: ConversationKey::new(
                AccountId::parse("demo").unwrap(),
                LineSource::user(user).unwrap(),
            ),
            received_at_ms: 1_000 + seq as i64,
            event: RawValue::from_string(format!(r#"{{"text":"{text}, \"quoted\" [1]"}}"#))
                .unwrap(),
        }
    }

    #[test]
    fn each_event_is_read_alone_where_the_batch_says_and_the_spans_are_found_again() {
        let events = [
            stored(7, "Ua", "a"),
            stored(8, "Ub", "b"),
            stored(9, "Ua", "c"),
        ];
        let (value, spans) = encode_batch(&events);
        let key = batch_key(7);
        assert_eq!(batch_header(&key, &value).unwrap(), (9, 1_009));
        for (event, span) in events.iter().zip(&spans) {
            let read = decode_at(&key, &value, *span, event.seq).unwrap();
            assert_eq!(read.event.get(), event.event.get());
            assert_eq!(read.conversation, event.conversation);
        }
        let again = decode_spans(&key, &value).unwrap();
        let found: Vec<Span> = again.iter().map(|(_, span)| *span).collect();
        assert_eq!(found, spans, "rebuilt at open, the same places");
        assert_eq!(decode_batch(&key, &value).unwrap().len(), 3);
        assert!(
            decode_at(&key, &value, spans[1], 7).is_err(),
            "an index pointing at another event is an error, not a wrong event"
        );
    }
}
