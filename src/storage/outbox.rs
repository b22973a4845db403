//! The outbox: every message for a customer is stored here before anyone is told it is sent,
//! then sent at least once by the dispatcher (`crate::outbound`). Push retry keys are stored
//! with it, so a retry after a crash or restart is recognised by LINE as the same message.
//!
//! Tree `outbox`:
//! - `q` seq(be u64)        → [`OutboxRecord`] (JSON, versioned) of a message not final yet, in
//!   the order stored: the message, its LINE requests, its progress.
//! - `f` conversation `/` seq(be u64) outgoing-id → the record once final: after delivery,
//!   only its status, for the transcript (see [`Stored`]); kept whole after a failure (see
//!   [`SledOutbox::update`]). The conversation is the part of the message's id before its
//!   first `/` (ids are `{conversation}/...`).
//!
//! Both key in the order messages are stored, so writes go to the last pages of the tree, or
//! of a conversation's part of it: a few pages sled's cache holds, where keys by id would
//! spread them over more pages than it holds once thousands of chats are busy.
//! - `m` outgoing-id        → a record as releases before this one wrote them, final or not;
//!   `q` seq → outgoing-id, their index of records not final. Read, never written: opening the
//!   outbox moves a record not final under its `q` key.
//! - `n`                    → the last `q` sequence number (written by earlier releases)
//!
//! Which messages are not final yet is also kept in memory (id → `q` number), read from the
//! `q` keys at start-up: a message is looked up there first, and a message stored again (a
//! retried `send` after a crash) is found there without a read.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use actix::Recipient;
use linedesk_actors::conversation::StoreError;
use linedesk_actors::domain::{ConversationId, ConversationKey, DeliveryStatus, Outgoing};
use linedesk_actors::outbound::Outbox;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StorageError;

const TREE: &str = "outbox";
const RECORD: u8 = b'm';
const FINAL: u8 = b'f';
const PENDING: u8 = b'q';
const LAST_SEQ: &[u8] = b"n";

/// Record format written by this release.
pub const OUTBOX_FORMAT_VERSION: u16 = 1;

/// One stored outgoing message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub v: u16,
    /// Its place in the send order (`q` index).
    pub seq: u64,
    pub outgoing: Outgoing,
    /// LINE requests (≤ 5 messages each), sent in order.
    pub requests: Vec<PlannedRequest>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub first_attempt_at_ms: Option<i64>,
    /// Not before this time (backoff).
    pub next_attempt_at_ms: i64,
    /// The reply token is not to be used: it was tried (it works once; after that only
    /// push), or it may have been. A record is stored saying so whenever it has a token, and
    /// only the dispatcher it is handed to in that notice ([`OutboxQueued`]) may try the token:
    /// after a restart, or read back from disk, the message is pushed with its retry key.
    /// That costs nothing in practice (a token outlives a restart only by seconds) and spares
    /// a write of the whole record before every reply.
    pub reply_tried: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRequest {
    pub messages: Vec<Value>,
    /// `X-Line-Retry-Key` of this request's push (a UUID made when it was stored).
    pub retry_key: String,
    pub sent: Option<SentVia>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentVia {
    Reply,
    Push,
}

impl OutboxRecord {
    /// The first request not sent yet.
    pub fn next_request(&self) -> Option<usize> {
        self.requests.iter().position(|r| r.sent.is_none())
    }
}

/// Turns an outgoing message into LINE requests, or says why it can't be sent.
pub type Planner = dyn Fn(&Outgoing) -> Result<Vec<Vec<Value>>, String> + Send + Sync;

/// A message stored and waiting to be sent: what the dispatcher is told.
#[derive(Debug, Clone, PartialEq, actix::Message)]
#[rtype(result = "()")]
pub struct OutboxQueued {
    pub seq: u64,
    pub id: String,
    /// The chat it goes to, so the dispatcher need not read the record back to queue it.
    pub key: ConversationKey,
    /// The record as stored, so the dispatcher need not read it back to send it either (the
    /// dispatcher is the only writer after this): a sled read and a JSON decode per message,
    /// often of a page evicted from sled's cache.
    pub record: Box<OutboxRecord>,
}

#[derive(Clone)]
pub struct SledOutbox {
    tree: sled::Tree,
    plan: Arc<Planner>,
    notify: Arc<OnceLock<Recipient<OutboxQueued>>>,
    /// The last send-order number handed out. Kept in memory: a number only has to be above
    /// those of the pending index, so at start-up it continues from the highest there (or
    /// from the counter older releases stored).
    last_seq: Arc<AtomicU64>,
    /// Messages not final yet: id → send-order number (their `q` key).
    pending: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl SledOutbox {
    pub fn open(db: &sled::Db, plan: Arc<Planner>) -> Result<Self, StorageError> {
        let tree = db.open_tree(TREE)?;
        let stored = match tree.get(LAST_SEQ)? {
            Some(bytes) => decode_seq(&bytes)?,
            None => 0,
        };
        let last = match tree.scan_prefix([PENDING]).next_back() {
            Some(entry) => decode_seq(&entry?.0[1..])?,
            None => 0,
        };
        let pending = read_pending(&tree)?;
        Ok(Self {
            tree,
            plan,
            notify: Arc::new(OnceLock::new()),
            last_seq: Arc::new(AtomicU64::new(stored.max(last))),
            pending: Arc::new(Mutex::new(pending)),
        })
    }

    /// Where to announce newly stored messages (the dispatcher, once started).
    pub fn notify(&self, to: Recipient<OutboxQueued>) {
        let _ = self.notify.set(to);
    }

    /// What is stored of message `id`: whole while it waits and after a failure, only its
    /// status once delivered.
    pub fn find(&self, id: &str) -> Result<Option<Stored>, StorageError> {
        let seq = self.pending_seq(id);
        if let Some(seq) = seq {
            // Gone if it just became final: then it is under `f`, written first.
            if let Some(bytes) = self.tree.get(pending_key(seq))? {
                return decode(id, &bytes).map(|r| Some(Stored::Whole(Box::new(r))));
            }
        }
        if let Some(key) = self.final_key_of(id)? {
            if let Some(bytes) = self.tree.get(key)? {
                return decode_final(id, &bytes).map(Some);
            }
        }
        match self.tree.get(record_key(id))? {
            Some(bytes) => decode(id, &bytes).map(|r| Some(Stored::Whole(Box::new(r)))),
            None => Ok(None),
        }
    }

    /// The whole record of message `id`, if it has one: waiting, failed, or stored by an
    /// earlier release. A delivered message has only its status ([`SledOutbox::find`]).
    pub fn get(&self, id: &str) -> Result<Option<OutboxRecord>, StorageError> {
        Ok(match self.find(id)? {
            Some(Stored::Whole(record)) => Some(*record),
            _ => None,
        })
    }

    /// The delivery status of each of a conversation's messages, by id: what its transcript
    /// shows, in one pass over its part of the tree.
    pub fn statuses_of(
        &self,
        conversation: &ConversationId,
    ) -> Result<HashMap<String, DeliveryStatus>, StorageError> {
        let conversation = conversation.to_string();
        let mut statuses = HashMap::new();
        for entry in self.tree.scan_prefix(legacy_prefix(&conversation)) {
            let (_, value) = entry?;
            let record = decode(&conversation, &value)?;
            statuses.insert(record.outgoing.id, record.status);
        }
        let finals = final_prefix(&conversation);
        for entry in self.tree.scan_prefix(&finals) {
            let (key, value) = entry?;
            let id = String::from_utf8_lossy(key.get(finals.len() + 8..).unwrap_or_default());
            let status = decode_final(&id, &value)?.status();
            statuses.insert(id.into_owned(), status);
        }
        for (id, _) in self.pending_of(&conversation) {
            if let Some(record) = self.get(&id)? {
                statuses.insert(id, record.status);
            }
        }
        Ok(statuses)
    }

    /// The `f` key of the final record of `id`, if it has one.
    fn final_key_of(&self, id: &str) -> Result<Option<sled::IVec>, StorageError> {
        let prefix = final_prefix(conversation_of(id));
        for key in self.tree.scan_prefix(&prefix).keys() {
            let key = key?;
            if key.get(prefix.len() + 8..) == Some(id.as_bytes()) {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// The messages of `conversation` not final yet: (id, send-order number).
    fn pending_of(&self, conversation: &str) -> Vec<(String, u64)> {
        let prefix = format!("{conversation}/");
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .range(prefix.clone()..)
            .take_while(|(id, _)| id.starts_with(&prefix))
            .map(|(id, seq)| (id.clone(), *seq))
            .collect()
    }

    /// Messages not delivered yet, in send order.
    pub fn pending(&self) -> Result<Vec<(u64, String)>, StorageError> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(u64, String)> =
            pending.iter().map(|(id, seq)| (*seq, id.clone())).collect();
        all.sort_unstable();
        Ok(all)
    }

    fn pending_seq(&self, id: &str) -> Option<u64> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.get(id).copied()
    }

    /// Writes a record's progress under its `q` key; a final record goes under `f` and leaves
    /// `q`.
    ///
    /// Two single-key writes, not a sled batch: sled 0.34 seals and writes (pwrite +
    /// `sync_file_range`) its I/O buffer twice per `apply_batch`, and every later fsync waits
    /// for those writes. sled recovers a prefix of its log, so the order is what keeps a crash
    /// harmless: the final record first, then the removal; a crash in between leaves both,
    /// and opening the outbox then removes the `q` key (see [`read_pending`]).
    ///
    /// The token mark is stored as [`token_spent_on_disk`] says, whatever the dispatcher's copy
    /// says.
    ///
    /// Of a message LINE accepted only its status is stored ([`Stored::Delivered`], 9 bytes):
    /// the transcript holds what it said, and nothing sends it again. A whole record was
    /// ~500 bytes, and with a thousand busy chats their `f` pages outgrew sled's cache: a
    /// third of the dispatcher's writes read a page back from disk. A failed message keeps
    /// everything, for whoever looks into why.
    pub fn update(&self, record: &OutboxRecord) -> Result<(), StorageError> {
        let value = if let Some(delivered) = encode_delivered(&record.status) {
            delivered
        } else if token_spent_on_disk(record) == record.reply_tried {
            encode(record)
        } else {
            encode(&OutboxRecord {
                reply_tried: true,
                ..record.clone()
            })
        };
        if !record.status.is_final() {
            self.tree.insert(pending_key(record.seq), value)?;
            return Ok(());
        }
        self.tree
            .insert(final_key(&record.outgoing.id, record.seq), value)?;
        self.tree.remove(pending_key(record.seq))?;
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.remove(&record.outgoing.id);
        Ok(())
    }

    /// Stores a message not stored before; returns its record, as the dispatcher may use it,
    /// if it waits to be sent.
    fn store(
        &self,
        outgoing: &Outgoing,
        known_new: bool,
    ) -> Result<Option<OutboxRecord>, StorageError> {
        // Not final yet, or final: in this order, as `update` moves a record the other way.
        let id = &outgoing.id;
        if self.pending_seq(id).is_some()
            || (!known_new
                && (self.final_key_of(id)?.is_some() || self.tree.contains_key(record_key(id))?))
        {
            return Ok(None);
        }
        let seq = self.last_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let (requests, status) = match (self.plan)(outgoing) {
            Ok(requests) => (
                requests
                    .into_iter()
                    .enumerate()
                    .map(|(index, messages)| PlannedRequest {
                        messages,
                        retry_key: retry_key(outgoing, index),
                        sent: None,
                    })
                    .collect(),
                DeliveryStatus::Queued {
                    attempts: 0,
                    last_error: None,
                },
            ),
            Err(reason) => (
                Vec::new(),
                DeliveryStatus::Failed {
                    at_ms: outgoing.created_at_ms,
                    reason,
                },
            ),
        };
        let mut record = OutboxRecord {
            v: OUTBOX_FORMAT_VERSION,
            seq,
            outgoing: outgoing.clone(),
            requests,
            status,
            attempts: 0,
            first_attempt_at_ms: None,
            next_attempt_at_ms: 0,
            reply_tried: false,
        };
        record.reply_tried = token_spent_on_disk(&record);
        if record.status.is_final() {
            self.tree.insert(final_key(id, seq), encode(&record))?;
            return Ok(None);
        }
        self.tree.insert(pending_key(seq), encode(&record))?;
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert(outgoing.id.clone(), seq);
        drop(pending);
        // This dispatcher, and no later one, may try the token (see `reply_tried`).
        record.reply_tried = false;
        Ok(Some(record))
    }
}

impl Outbox for SledOutbox {
    /// Told `known_new`, it does not look for a final record by the id (a page of the tree
    /// that is seldom in sled's cache): the conversation knows from its transcript, and from
    /// [`Outbox::stored_for`] after a recovery, that there is none.
    fn enqueue(&self, outgoing: &Outgoing, known_new: bool) -> Result<bool, StoreError> {
        match self.store(outgoing, known_new) {
            Ok(Some(record)) => {
                if let Some(dispatcher) = self.notify.get() {
                    dispatcher.do_send(OutboxQueued {
                        seq: record.seq,
                        id: outgoing.id.clone(),
                        key: outgoing.key.clone(),
                        record: Box::new(record),
                    });
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(StoreError(e.to_string())),
        }
    }

    fn stored_for(&self, conversation: &ConversationId) -> Result<Vec<String>, StoreError> {
        let conversation = conversation.to_string();
        let mut ids: Vec<String> = self
            .pending_of(&conversation)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let error = |e: sled::Error| StoreError(e.to_string());
        let finals = final_prefix(&conversation);
        for key in self.tree.scan_prefix(&finals).keys() {
            let key = key.map_err(error)?;
            ids.push(String::from_utf8_lossy(&key[finals.len() + 8..]).into_owned());
        }
        for key in self.tree.scan_prefix(legacy_prefix(&conversation)).keys() {
            let key = key.map_err(error)?;
            ids.push(String::from_utf8_lossy(&key[1..]).into_owned());
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}

/// Whether a record is stored saying its reply token is not to be used: always when it has
/// one, so that no later dispatcher tries it (see [`OutboxRecord::reply_tried`]).
fn token_spent_on_disk(record: &OutboxRecord) -> bool {
    record.reply_tried || record.outgoing.reply_token.is_some()
}

/// The `X-Line-Retry-Key` of request `index` of `outgoing`: a UUID derived from the account,
/// the message's id and the index, the same whenever the message is planned. A message is sent
/// as soon as it is stored, before sled's group commit; if a crash loses its record, the agent's
/// retried `send` stores it again with the same keys, and LINE drops the repeated push (409)
/// instead of showing the customer the message twice. (A reply has no such key.)
fn retry_key(outgoing: &Outgoing, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"linedesk retry key\0")
        .chain_update(outgoing.key.account.as_str().as_bytes())
        .chain_update([0])
        .chain_update(outgoing.id.as_bytes())
        .chain_update((index as u64).to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // Shaped as a version 4 UUID, as LINE's examples are; its bits come from the digest.
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The messages not final yet, from the `q` keys. A `q` key an earlier release wrote names its
/// message, whose record is under `m`: moved under the `q` key if it is not final, else (or
/// if the record is gone) removed. A `q` key whose message has a final record too is what a
/// crash left between the two writes of [`SledOutbox::update`]: removed.
fn read_pending(tree: &sled::Tree) -> Result<BTreeMap<String, u64>, StorageError> {
    let mut pending = BTreeMap::new();
    for entry in tree.scan_prefix([PENDING]) {
        let (key, value) = entry?;
        let seq = decode_seq(&key[1..])?;
        let (id, record) = if value.first() == Some(&b'{') {
            let record = decode(&format!("#{seq}"), &value)?;
            (record.outgoing.id.clone(), Some(record))
        } else {
            (String::from_utf8_lossy(&value).into_owned(), None)
        };
        let stored = match tree.get(record_key(&id))? {
            Some(bytes) => Some(decode(&id, &bytes)?),
            None => None,
        };
        match (record, stored) {
            (Some(_), _) if tree.contains_key(final_key(&id, seq))? => {
                tree.remove(&key)?;
            }
            (Some(_), Some(stored)) if stored.status.is_final() => {
                tree.remove(&key)?;
            }
            (Some(_), _) => {
                pending.insert(id, seq);
            }
            (None, Some(stored)) if !stored.status.is_final() => {
                tree.insert(&key, encode(&stored))?;
                pending.insert(id, seq);
            }
            (None, _) => {
                tree.remove(&key)?;
            }
        }
    }
    Ok(pending)
}

/// The conversation of a message: its id up to the first `/`.
fn conversation_of(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

fn final_prefix(conversation: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + conversation.len());
    key.push(FINAL);
    key.extend_from_slice(conversation.as_bytes());
    key.push(b'/');
    key
}

fn final_key(id: &str, seq: u64) -> Vec<u8> {
    let mut key = final_prefix(conversation_of(id));
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// Where an earlier release's records of a conversation's messages are.
fn legacy_prefix(conversation: &str) -> Vec<u8> {
    record_key(&format!("{conversation}/"))
}

fn record_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(RECORD);
    key.extend_from_slice(id.as_bytes());
    key
}

fn pending_key(seq: u64) -> [u8; 9] {
    let mut key = [PENDING; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn decode_seq(bytes: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| StorageError::Corrupt {
        key: format!("outbox/{bytes:?}"),
        reason: "a send-order number is 8 bytes".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn encode(record: &OutboxRecord) -> Vec<u8> {
    // unwrap: plain data serialises to JSON without fail.
    serde_json::to_vec(record).unwrap()
}

fn decode(id: &str, bytes: &[u8]) -> Result<OutboxRecord, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        key: format!("outbox/{id}"),
        reason: e.to_string(),
    })
}

/// What the outbox keeps of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Waiting, failed, or delivered and stored by an earlier release.
    Whole(Box<OutboxRecord>),
    /// Delivered: its status alone.
    Delivered(DeliveryStatus),
}

impl Stored {
    pub fn status(self) -> DeliveryStatus {
        match self {
            Self::Whole(record) => record.status,
            Self::Delivered(status) => status,
        }
    }
}

/// A delivered message's final record: `R` (a reply) or `P` (a push), then when LINE accepted
/// it (be i64). A whole record is JSON, and starts with `{`.
const SENT_REPLY: u8 = b'R';
const SENT_PUSH: u8 = b'P';

fn encode_delivered(status: &DeliveryStatus) -> Option<Vec<u8>> {
    let (tag, at_ms) = match status {
        DeliveryStatus::SentReply { at_ms } => (SENT_REPLY, at_ms),
        DeliveryStatus::SentPush { at_ms } => (SENT_PUSH, at_ms),
        _ => return None,
    };
    let mut value = Vec::with_capacity(9);
    value.push(tag);
    value.extend_from_slice(&at_ms.to_be_bytes());
    Some(value)
}

fn decode_final(id: &str, bytes: &[u8]) -> Result<Stored, StorageError> {
    let at_ms = || -> Result<i64, StorageError> {
        let at: [u8; 8] = bytes
            .get(1..)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| StorageError::Corrupt {
                key: format!("outbox/{id}"),
                reason: "a delivered message's record is 9 bytes".into(),
            })?;
        Ok(i64::from_be_bytes(at))
    };
    match bytes.first() {
        Some(&SENT_REPLY) => Ok(Stored::Delivered(DeliveryStatus::SentReply {
            at_ms: at_ms()?,
        })),
        Some(&SENT_PUSH) => Ok(Stored::Delivered(DeliveryStatus::SentPush {
            at_ms: at_ms()?,
        })),
        _ => decode(id, bytes).map(|r| Stored::Whole(Box::new(r))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linedesk_actors::domain::{
        AccountId, AgentId, Content, ConversationId, ConversationKey, LineSource, Origin,
    };

    fn outgoing(id: &str, text: &str) -> Outgoing {
        let key = ConversationKey {
            account: AccountId::parse("demo").unwrap(),
            source: LineSource::User("U0123456789abcdef0123456789abcdef".into()),
        };
        Outgoing {
            id: id.into(),
            conversation: ConversationId::new(key.clone(), 1),
            key,
            origin: Origin::Agent {
                agent: AgentId::parse("alice").unwrap(),
                client_msg_id: "c1".into(),
            },
            contents: vec![Content::Text { text: text.into() }],
            quick_replies: Vec::new(),
            reply_token: None,
            show_sender: false,
            created_at_ms: 1,
        }
    }

    fn outbox(db: &sled::Db) -> SledOutbox {
        let plan: Arc<Planner> = Arc::new(|o: &Outgoing| match &o.contents[0] {
            Content::Text { text } if text == "unsendable" => Err("no way".into()),
            _ => Ok(vec![vec![serde_json::json!({"type": "text", "text": "x"})]]),
        });
        SledOutbox::open(db, plan).unwrap()
    }

    #[test]
    fn a_message_is_stored_once_with_a_retry_key_and_listed_until_final() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let outbox = outbox(&db);
        assert!(outbox.enqueue(&outgoing("a", "hi"), false).unwrap());
        assert!(
            !outbox.enqueue(&outgoing("a", "hi"), false).unwrap(),
            "stored once"
        );
        assert!(outbox.enqueue(&outgoing("b", "there"), false).unwrap());
        let pending = outbox.pending().unwrap();
        assert_eq!(pending, vec![(1, "a".to_string()), (2, "b".to_string())]);
        let mut a = outbox.get("a").unwrap().unwrap();
        let key = a.requests[0].retry_key.clone();
        assert_eq!(uuid::Uuid::parse_str(&key).unwrap().get_version_num(), 4);
        a.requests[0].sent = Some(SentVia::Push);
        a.status = DeliveryStatus::SentPush { at_ms: 2 };
        outbox.update(&a).unwrap();
        assert_eq!(outbox.pending().unwrap(), vec![(2, "b".to_string())]);
        // Reopened (a restart): delivered, stored once, and the same pending list. Its retry
        // key is not stored once delivered: planned again, the message gets the same one.
        drop(outbox);
        let again = super::SledOutbox::open(&db, Arc::new(|_: &Outgoing| Ok(vec![]))).unwrap();
        assert_eq!(status(&again, "a"), DeliveryStatus::SentPush { at_ms: 2 });
        assert!(!again.enqueue(&outgoing("a", "hi"), false).unwrap());
        assert_eq!(retry_key(&outgoing("a", "hi"), 0), key);
        assert_eq!(again.pending().unwrap().len(), 1);
        // Send order continues after what is still pending.
        assert!(again.enqueue(&outgoing("c", "later"), false).unwrap());
        assert_eq!(
            again.pending().unwrap(),
            vec![(2, "b".to_string()), (3, "c".to_string())]
        );
    }

    /// Collects the dispatcher's notices.
    struct Notices(tokio::sync::mpsc::UnboundedSender<OutboxQueued>);

    impl actix::Actor for Notices {
        type Context = actix::Context<Self>;
    }

    impl actix::Handler<OutboxQueued> for Notices {
        type Result = ();
        fn handle(&mut self, msg: OutboxQueued, _: &mut Self::Context) {
            let _ = self.0.send(msg);
        }
    }

    /// An outbox whose notices go to the returned receiver.
    fn listened_outbox() -> (
        tempfile::TempDir,
        SledOutbox,
        tokio::sync::mpsc::UnboundedReceiver<OutboxQueued>,
    ) {
        use actix::Actor;
        let dir = tempfile::tempdir().unwrap();
        let outbox = outbox(&sled::open(dir.path()).unwrap());
        let (sender, notices) = tokio::sync::mpsc::unbounded_channel();
        outbox.notify(Notices(sender).start().recipient());
        (dir, outbox, notices)
    }

    async fn next_notice(
        notices: &mut tokio::sync::mpsc::UnboundedReceiver<OutboxQueued>,
    ) -> OutboxQueued {
        tokio::time::timeout(std::time::Duration::from_secs(10), notices.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[actix_web::test]
    async fn the_dispatcher_is_handed_the_record_exactly_as_stored() {
        let (_dir, outbox, mut notices) = listened_outbox();
        assert!(outbox.enqueue(&outgoing("a", "hi"), false).unwrap());
        assert!(!outbox.enqueue(&outgoing("x", "unsendable"), false).unwrap());
        assert!(!outbox.enqueue(&outgoing("a", "hi"), false).unwrap());
        assert!(outbox.enqueue(&outgoing("b", "there"), false).unwrap());
        // Notices arrive in order: none came for the failed or the repeated message.
        for (seq, id) in [(1, "a"), (3, "b")] {
            let notice = next_notice(&mut notices).await;
            assert_eq!((notice.seq, notice.id.as_str()), (seq, id));
            assert_eq!(*notice.record, outbox.get(id).unwrap().unwrap());
        }
    }

    #[actix_web::test]
    async fn a_reply_token_may_be_tried_by_the_dispatcher_handed_the_record_and_by_no_later_one() {
        let (_dir, outbox, mut notices) = listened_outbox();
        let mut with_token = outgoing("t", "hi");
        with_token.reply_token = Some(linedesk_actors::domain::ReplyToken {
            token: "r1".into(),
            received_at_ms: 1,
        });
        assert!(outbox.enqueue(&with_token, false).unwrap());
        assert!(outbox.enqueue(&outgoing("p", "no token"), false).unwrap());

        let handed = next_notice(&mut notices).await;
        assert!(!handed.record.reply_tried, "this run may reply");
        let stored = outbox.get("t").unwrap().unwrap();
        assert!(stored.reply_tried, "a restart pushes instead");
        assert_eq!(
            OutboxRecord {
                reply_tried: false,
                ..stored
            },
            *handed.record,
            "otherwise the same record"
        );
        assert!(!outbox.get("p").unwrap().unwrap().reply_tried);
        // Progress saved from the handed copy (a push, its token not tried) keeps the mark.
        let mut progress = *handed.record;
        progress.attempts = 1;
        outbox.update(&progress).unwrap();
        let stored = outbox.get("t").unwrap().unwrap();
        assert_eq!((stored.attempts, stored.reply_tried), (1, true));
    }

    fn status(outbox: &SledOutbox, id: &str) -> DeliveryStatus {
        outbox.find(id).unwrap().unwrap().status()
    }

    fn delivered(mut record: OutboxRecord) -> OutboxRecord {
        record.requests[0].sent = Some(SentVia::Push);
        record.status = DeliveryStatus::SentPush { at_ms: 9 };
        record
    }

    /// A message waits under its send-order key, and only its final record goes by its id; a
    /// crash between the final record's write and the removal of the waiting one leaves it
    /// final after a restart, not sent again.
    #[test]
    fn a_waiting_message_is_kept_in_send_order_and_only_a_final_one_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(TREE).unwrap();
        let outbox = outbox(&db);
        assert!(outbox.enqueue(&outgoing("a", "hi"), false).unwrap());
        assert!(outbox.enqueue(&outgoing("b", "there"), false).unwrap());
        assert!(tree.get(record_key("a")).unwrap().is_none());
        let a = outbox.get("a").unwrap().unwrap();
        assert_eq!(
            decode("a", &tree.get(pending_key(1)).unwrap().unwrap()).unwrap(),
            a
        );
        let mut progress = a.clone();
        progress.attempts = 2;
        outbox.update(&progress).unwrap();
        assert_eq!(outbox.get("a").unwrap().unwrap().attempts, 2);
        assert!(tree.get(record_key("a")).unwrap().is_none());

        outbox.update(&delivered(progress)).unwrap();
        assert!(tree.get(pending_key(1)).unwrap().is_none());
        assert!(tree.get(final_key("a", 1)).unwrap().is_some());
        assert!(tree.get(record_key("a")).unwrap().is_none());
        assert_eq!(
            outbox.find("a").unwrap(),
            Some(Stored::Delivered(DeliveryStatus::SentPush { at_ms: 9 }))
        );
        assert!(
            !outbox.enqueue(&outgoing("a", "hi"), false).unwrap(),
            "stored once"
        );
        assert!(
            !outbox.enqueue(&outgoing("b", "there"), false).unwrap(),
            "stored once"
        );

        // `b` delivered, and a crash before its waiting record went; its final record whole,
        // as the previous release wrote them.
        let b = outbox.get("b").unwrap().unwrap();
        tree.insert(final_key("b", 2), encode(&delivered(b)))
            .unwrap();
        drop(outbox);
        let again = SledOutbox::open(&db, Arc::new(|_: &Outgoing| Ok(vec![]))).unwrap();
        assert!(again.pending().unwrap().is_empty());
        assert!(tree.get(pending_key(2)).unwrap().is_none());
        assert!(status(&again, "b").is_sent());
        assert!(status(&again, "a").is_sent());
    }

    /// A conversation's messages, waiting or final, and no other conversation's; a message
    /// said to be new is not looked for among the final ones, but always among the waiting.
    #[test]
    fn a_conversations_messages_are_listed_and_one_said_to_be_new_is_not_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let outbox = outbox(&db);
        let first = outgoing("x", "").conversation;
        let twelfth = ConversationId::new(first.key.clone(), 12);
        let message = |conversation: &ConversationId, n: u32| Outgoing {
            id: format!("{conversation}/agent/c{n}"),
            conversation: conversation.clone(),
            ..outgoing("", "hi")
        };
        for (conversation, n) in [(&first, 1), (&first, 2), (&twelfth, 3)] {
            assert!(outbox.enqueue(&message(conversation, n), true).unwrap());
        }
        let sent = outbox.get(&message(&first, 1).id).unwrap().unwrap();
        outbox.update(&delivered(sent)).unwrap();
        // And one an earlier release stored by its id.
        let mut old = outbox.get(&message(&twelfth, 3).id).unwrap().unwrap();
        old.outgoing = message(&first, 0);
        let old = delivered(old);
        let tree = db.open_tree(TREE).unwrap();
        tree.insert(record_key(&old.outgoing.id), encode(&old))
            .unwrap();
        let ids = outbox.stored_for(&first).unwrap();
        let expected = [0, 1, 2].map(|n| message(&first, n).id);
        assert_eq!(ids, expected);
        assert_eq!(
            outbox.stored_for(&twelfth).unwrap(),
            [message(&twelfth, 3).id]
        );
        let statuses = outbox.statuses_of(&first).unwrap();
        let sent = |n| statuses[&message(&first, n).id].is_sent();
        assert_eq!(statuses.len(), 3);
        assert!(sent(0) && sent(1) && !sent(2));

        assert!(
            !outbox.enqueue(&message(&first, 2), true).unwrap(),
            "waiting"
        );
        assert!(
            !outbox.enqueue(&message(&first, 1), false).unwrap(),
            "final"
        );
        // Said to be new, a final one is not looked for: the caller vouches.
        assert!(outbox.enqueue(&message(&first, 1), true).unwrap());
    }

    /// What an earlier release left waiting (a `q` key naming its id, the record under `m`)
    /// is waiting after the upgrade, under its `q` key; what it left final, or lost, is not.
    #[test]
    fn messages_an_earlier_release_left_waiting_are_sent_after_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(TREE).unwrap();
        let record = |id: &str, seq: u64| OutboxRecord {
            v: OUTBOX_FORMAT_VERSION,
            seq,
            outgoing: outgoing(id, "hi"),
            requests: vec![PlannedRequest {
                messages: vec![serde_json::json!({"type": "text", "text": "hi"})],
                retry_key: format!("key-{id}"),
                sent: None,
            }],
            status: DeliveryStatus::Queued {
                attempts: 0,
                last_error: None,
            },
            attempts: 0,
            first_attempt_at_ms: None,
            next_attempt_at_ms: 0,
            reply_tried: false,
        };
        let waiting = record("waiting", 4);
        tree.insert(pending_key(4), &b"waiting"[..]).unwrap();
        tree.insert(record_key("waiting"), encode(&waiting))
            .unwrap();
        tree.insert(pending_key(5), &b"done"[..]).unwrap();
        tree.insert(record_key("done"), encode(&delivered(record("done", 5))))
            .unwrap();
        tree.insert(pending_key(6), &b"lost"[..]).unwrap();

        let outbox = outbox(&db);
        assert_eq!(outbox.pending().unwrap(), vec![(4, "waiting".to_string())]);
        assert_eq!(outbox.get("waiting").unwrap().unwrap(), waiting);
        assert_eq!(
            decode("waiting", &tree.get(pending_key(4)).unwrap().unwrap()).unwrap(),
            waiting
        );
        for gone in [5, 6] {
            assert!(tree.get(pending_key(gone)).unwrap().is_none());
        }
        assert!(!outbox.enqueue(&outgoing("waiting", "hi"), false).unwrap());
        assert!(outbox.enqueue(&outgoing("new", "hi"), false).unwrap());
        assert_eq!(outbox.pending().unwrap()[1].0, 7, "numbers go on");
        outbox.update(&delivered(waiting)).unwrap();
        assert!(status(&outbox, "waiting").is_sent());
        assert_eq!(outbox.pending().unwrap(), vec![(7, "new".to_string())]);
    }

    #[test]
    fn a_message_that_cannot_be_sent_is_stored_as_failed_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let outbox = outbox(&db);
        assert!(!outbox.enqueue(&outgoing("x", "unsendable"), false).unwrap());
        let record = outbox.get("x").unwrap().unwrap();
        assert!(
            matches!(record.status, DeliveryStatus::Failed { ref reason, .. } if reason == "no way")
        );
        assert!(outbox.pending().unwrap().is_empty());
    }

    #[test]
    fn a_delivered_message_keeps_only_its_status_and_a_failed_one_everything() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let outbox = outbox(&db);
        for id in ["sent", "failed"] {
            let mut message = outgoing(id, "my card number is XKQ-SECRET");
            message.quick_replies = vec![linedesk_actors::domain::QuickReply {
                label: "yes".into(),
                text: "yes".into(),
            }];
            assert!(outbox.enqueue(&message, false).unwrap());
        }
        let mut sent = outbox.get("sent").unwrap().unwrap();
        assert!(!sent.requests[0].messages.is_empty());
        sent.requests[0].sent = Some(SentVia::Reply);
        sent.attempts = 1;
        sent.status = DeliveryStatus::SentReply { at_ms: 5 };
        outbox.update(&sent).unwrap();
        // Its status alone: what the transcript shows.
        let stored = db
            .open_tree(TREE)
            .unwrap()
            .get(final_key("sent", sent.seq))
            .unwrap()
            .unwrap();
        assert_eq!(stored.len(), 9);
        assert!(!String::from_utf8_lossy(&stored).contains("XKQ-SECRET"));
        assert_eq!(
            outbox.find("sent").unwrap(),
            Some(Stored::Delivered(sent.status.clone()))
        );
        assert_eq!(outbox.get("sent").unwrap(), None, "no whole record");
        assert!(outbox.pending().unwrap().iter().all(|(_, id)| id != "sent"));
        assert!(
            !outbox.enqueue(&outgoing("sent", "again"), false).unwrap(),
            "still stored once"
        );

        let mut failed = outbox.get("failed").unwrap().unwrap();
        failed.status = DeliveryStatus::Failed {
            at_ms: 6,
            reason: "refused".into(),
        };
        outbox.update(&failed).unwrap();
        let kept = outbox.get("failed").unwrap().unwrap();
        assert_eq!(kept.outgoing.contents, failed.outgoing.contents);
        assert_eq!(kept.requests[0].messages, failed.requests[0].messages);
    }

    #[test]
    fn a_message_stored_again_after_its_record_was_lost_gets_the_same_retry_keys() {
        let plan_two: Arc<Planner> = Arc::new(|o: &Outgoing| {
            Ok(vec![
                vec![serde_json::json!({"type": "text", "text": format!("{:?}", o.contents)})],
                vec![serde_json::json!({"type": "text", "text": "second request"})],
            ])
        });
        let keys = |id: &str| {
            // A database of its own each time: as after a crash that lost the first record.
            let dir = tempfile::tempdir().unwrap();
            let db = sled::open(dir.path()).unwrap();
            let outbox = SledOutbox::open(&db, plan_two.clone()).unwrap();
            assert!(outbox.enqueue(&outgoing(id, "hi"), false).unwrap());
            let record = outbox.get(id).unwrap().unwrap();
            record
                .requests
                .iter()
                .map(|r| r.retry_key.clone())
                .collect::<Vec<_>>()
        };
        let first = keys("conv/agent/c1");
        assert_eq!(first, keys("conv/agent/c1"));
        assert_ne!(first[0], first[1], "one key per request");
        let other = keys("conv/agent/c2");
        assert!(
            other.iter().all(|k| !first.contains(k)),
            "another message, other keys"
        );
        for key in first.iter().chain(&other) {
            assert_eq!(uuid::Uuid::parse_str(key).unwrap().get_version_num(), 4);
        }
    }
}
