//! The journal: every webhook event LINE delivered, stored once, in arrival order per
//! conversation. It is the conversation actors' journal: an actor rebuilds its state from its
//! latest snapshot plus the journal entries after the snapshot's sequence number.
//!
//! Layout (one sled tree, so that one `apply_batch` writes an event and its indexes atomically):
//! - `e` conversation-key `\0` seq(be u64) → [`StoredEvent`] as JSON (the event exactly as received)
//! - `d` account `\0` webhookEventId          → seq(be u64): the redelivery check
//! - `p` conversation-key                     → seq(be u64): conversations whose latest events
//!   are not yet covered by a snapshot (read at start-up to resume them)
//! - `m` `seq`                                → the last sequence number handed out
//!
//! Sequence numbers are global and increase with every stored event, so ordering within a
//! conversation is the order of its keys.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use linedesk_actors::domain::{AccountId, ConversationKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{GroupCommit, StorageError};
use crate::settings::Durability;

/// Written into every record so that a later release can read (and upgrade) older ones.
pub const JOURNAL_FORMAT_VERSION: u16 = 1;

const TREE: &str = "journal";
const EVENT: u8 = b'e';
const DEDUP: u8 = b'd';
const PENDING: u8 = b'p';
const LAST_SEQ: &[u8] = b"mseq";

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

/// An event to store, already verified and parsed by the webhook.
#[derive(Debug)]
pub struct IncomingEvent<'a> {
    pub webhook_event_id: &'a str,
    pub conversation: ConversationKey,
    pub raw: &'a RawValue,
}

/// What `append` did with a batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Sequence numbers of the newly stored events, in input order.
    pub stored: Vec<u64>,
    /// Events seen before (same account and `webhookEventId`): acknowledged, not stored again.
    pub duplicates: usize,
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
    /// Serialises appends: the redelivery check and the sequence numbers need one writer.
    append_lock: Mutex<()>,
    last_seq: AtomicU64,
    group_commit: GroupCommit,
}

impl Journal {
    pub fn open(db: sled::Db, durability: Durability) -> Result<Self, StorageError> {
        let tree = db.open_tree(TREE)?;
        let last_seq = match tree.get(LAST_SEQ)? {
            Some(v) => decode_seq(LAST_SEQ, &v)?,
            None => 0,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tree,
                durability,
                append_lock: Mutex::new(()),
                last_seq: AtomicU64::new(last_seq),
                group_commit: GroupCommit::default(),
            }),
        })
    }

    /// Stores the events that were not stored before, atomically, in order. They are in sled's
    /// memory when this returns; call [`Journal::commit`] before acknowledging them.
    pub fn append(
        &self,
        account: &AccountId,
        events: &[IncomingEvent<'_>],
        received_at_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        let inner = &self.inner;
        // unwrap: a poisoned lock means a panic mid-append; sled's batch was not applied then.
        let _guard = inner.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut outcome = AppendOutcome::default();
        let mut batch = sled::Batch::default();
        let mut seen_in_batch = HashSet::new();
        let mut seq = inner.last_seq.load(Ordering::SeqCst);
        for incoming in events {
            let dedup_key = dedup_key(account, incoming.webhook_event_id);
            if !seen_in_batch.insert(incoming.webhook_event_id)
                || inner.tree.contains_key(&dedup_key)?
            {
                outcome.duplicates += 1;
                continue;
            }
            seq += 1;
            let record = StoredEvent {
                v: JOURNAL_FORMAT_VERSION,
                seq,
                conversation: incoming.conversation.clone(),
                received_at_ms,
                event: incoming.raw.to_owned(),
            };
            // unwrap: serialising a struct of strings, integers and already-valid JSON cannot fail.
            let value = serde_json::to_vec(&record).unwrap();
            let conversation = incoming.conversation.to_string();
            batch.insert(event_key(&conversation, seq), value);
            batch.insert(dedup_key, &seq.to_be_bytes());
            batch.insert(pending_key(&conversation), &seq.to_be_bytes());
            outcome.stored.push(seq);
        }
        if !outcome.stored.is_empty() {
            batch.insert(LAST_SEQ, &seq.to_be_bytes());
            inner.tree.apply_batch(batch)?;
            inner.last_seq.store(seq, Ordering::SeqCst);
        }
        Ok(outcome)
    }

    /// Returns once everything appended before the call is as durable as `storage.durability`
    /// asks: on disk (`flush`, sharing the fsync with concurrent callers) or handed to sled (`os`).
    pub async fn commit(&self) -> Result<(), StorageError> {
        match self.inner.durability {
            Durability::Flush => Ok(self.inner.group_commit.commit(&self.inner.db).await?),
            Durability::Os => Ok(()),
        }
    }

    /// Flushes everything to disk; used at shutdown.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// The events of one conversation with a sequence number above `after`, oldest first.
    pub fn events_after(
        &self,
        conversation: &ConversationKey,
        after: u64,
    ) -> impl Iterator<Item = Result<StoredEvent, StorageError>> + '_ {
        let conversation = conversation.to_string();
        let start = event_key(&conversation, after.saturating_add(1));
        let end = event_key(&conversation, u64::MAX);
        self.inner
            .tree
            .range(start..=end)
            .map(|entry| decode_event(entry?))
    }

    /// Every stored event, in key order (by conversation, then sequence). For tools and tests;
    /// it reads the whole journal.
    pub fn all_events(&self) -> impl Iterator<Item = Result<StoredEvent, StorageError>> + '_ {
        self.inner
            .tree
            .scan_prefix([EVENT])
            .map(|entry| decode_event(entry?))
    }

    /// Whether the event with this `webhookEventId` has been stored for `account`.
    pub fn contains(
        &self,
        account: &AccountId,
        webhook_event_id: &str,
    ) -> Result<bool, StorageError> {
        Ok(self
            .inner
            .tree
            .contains_key(dedup_key(account, webhook_event_id))?)
    }

    /// The conversations with events not yet covered by a snapshot, with their latest sequence.
    pub fn pending_conversations(
        &self,
    ) -> impl Iterator<Item = Result<(ConversationKey, u64), StorageError>> + '_ {
        self.inner.tree.scan_prefix([PENDING]).map(|entry| {
            let (key, value) = entry?;
            let name = std::str::from_utf8(&key[1..]).map_err(|e| corrupt(&key, e))?;
            let conversation = ConversationKey::parse(name).map_err(|e| corrupt(&key, e))?;
            Ok((conversation, decode_seq(&key, &value)?))
        })
    }

    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::SeqCst)
    }

    /// (commits, flushes) of the group commit, for metrics.
    pub fn commit_stats(&self) -> (u64, u64) {
        let gc = &self.inner.group_commit;
        (gc.commits(), gc.flushes())
    }
}

fn event_key(conversation: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + conversation.len() + 1 + 8);
    key.push(EVENT);
    key.extend_from_slice(conversation.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn dedup_key(account: &AccountId, webhook_event_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + account.as_str().len() + webhook_event_id.len());
    key.push(DEDUP);
    key.extend_from_slice(account.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(webhook_event_id.as_bytes());
    key
}

fn pending_key(conversation: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + conversation.len());
    key.push(PENDING);
    key.extend_from_slice(conversation.as_bytes());
    key
}

fn decode_event((key, value): (sled::IVec, sled::IVec)) -> Result<StoredEvent, StorageError> {
    serde_json::from_slice(&value).map_err(|e| corrupt(&key, e))
}

fn decode_seq(key: &[u8], value: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| corrupt(key, "a sequence number is 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn corrupt(key: &[u8], reason: impl ToString) -> StorageError {
    StorageError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linedesk_actors::domain::LineSource;

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        (dir, Journal::open(db, Durability::Os).unwrap())
    }

    fn key(user: &str) -> ConversationKey {
        ConversationKey::new(
            AccountId::parse("demo").unwrap(),
            LineSource::user(user).unwrap(),
        )
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(format!(r#"{{"text":"{text}"}}"#)).unwrap()
    }

    #[test]
    fn events_are_stored_once_in_order_per_conversation() {
        let (_dir, journal) = journal();
        let account = AccountId::parse("demo").unwrap();
        let (a1, a2, b1) = (raw("a1"), raw("a2"), raw("b1"));
        let batch = [
            IncomingEvent {
                webhook_event_id: "E1",
                conversation: key("Ua"),
                raw: &a1,
            },
            IncomingEvent {
                webhook_event_id: "E2",
                conversation: key("Ub"),
                raw: &b1,
            },
            IncomingEvent {
                webhook_event_id: "E3",
                conversation: key("Ua"),
                raw: &a2,
            },
            IncomingEvent {
                webhook_event_id: "E3",
                conversation: key("Ua"),
                raw: &a2,
            },
        ];
        let outcome = journal.append(&account, &batch, 1).unwrap();
        assert_eq!(
            outcome,
            AppendOutcome {
                stored: vec![1, 2, 3],
                duplicates: 1
            }
        );

        let again = journal.append(&account, &batch[..2], 2).unwrap();
        assert_eq!(
            again,
            AppendOutcome {
                stored: vec![],
                duplicates: 2
            }
        );

        let texts: Vec<String> = journal
            .events_after(&key("Ua"), 0)
            .map(|e| e.unwrap().event.get().to_owned())
            .collect();
        assert_eq!(texts, [r#"{"text":"a1"}"#, r#"{"text":"a2"}"#]);
        assert_eq!(journal.events_after(&key("Ua"), 1).count(), 1);
        assert_eq!(journal.all_events().count(), 3);
        assert!(journal.contains(&account, "E2").unwrap());
        let pending: Vec<_> = journal
            .pending_conversations()
            .map(Result::unwrap)
            .collect();
        assert_eq!(pending, [(key("Ua"), 3), (key("Ub"), 2)]);
    }

    #[test]
    fn sequence_numbers_continue_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountId::parse("demo").unwrap();
        let r = raw("x");
        {
            let journal = Journal::open(sled::open(dir.path()).unwrap(), Durability::Os).unwrap();
            let e = [IncomingEvent {
                webhook_event_id: "E1",
                conversation: key("Ua"),
                raw: &r,
            }];
            journal.append(&account, &e, 1).unwrap();
        }
        let journal = Journal::open(sled::open(dir.path()).unwrap(), Durability::Os).unwrap();
        assert_eq!(journal.last_seq(), 1);
        let e = [IncomingEvent {
            webhook_event_id: "E2",
            conversation: key("Ua"),
            raw: &r,
        }];
        assert_eq!(journal.append(&account, &e, 2).unwrap().stored, vec![2]);
    }

    #[test]
    fn the_same_event_id_in_another_account_is_another_event() {
        let (_dir, journal) = journal();
        let r = raw("x");
        let e = [IncomingEvent {
            webhook_event_id: "E1",
            conversation: key("Ua"),
            raw: &r,
        }];
        journal
            .append(&AccountId::parse("demo").unwrap(), &e, 1)
            .unwrap();
        let other = journal
            .append(&AccountId::parse("other").unwrap(), &e, 1)
            .unwrap();
        assert_eq!(other.stored, vec![2]);
    }
}
