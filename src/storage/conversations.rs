//! Conversation persistence on sled: the actors' [`ConversationStore`].
//!
//! Tree `conversations`, one prefix per concern:
//! - `s` chat-key                  → the chat's latest snapshot ([`ConversationState`], JSON, versioned)
//! - `i` chat `\0` number(be u32)  → every conversation, for listing: a [`ConversationSummary`]
//!   (JSON) while it is open; once closed, the summary and the archived conversation, framed
//!   (see [`encode_archived`]). One key per closed conversation, not two: sled 0.34 keeps
//!   bookkeeping in memory for every page, and a node keeps every closed conversation.
//! - `a` conversation-id           → an archived conversation, as releases before the framed `i`
//!   entry wrote it: read, never written
//! - `t` deadline(be u64) chat-key → a chat whose timer fires then
//! - `k` chat-key                  → that chat's deadline, as snapshots before format 3 kept
//!   it: read once and removed (the snapshot now says which `t` entry to move)
//! - `o` conversation-id           → [`ConversationSummary`] of every conversation not closed,
//!   read at start-up to rebuild routing (queues and agents' loads); a save written key by key
//!   leaves it as it is (routing reads nothing that such a save changes), so its counts lag
//! - `x` chat `\0` number(be u32) index(be u32) → a run of [`TranscriptEntry`]s of the open
//!   conversation starting at `index`, as a JSON array (snapshot format 5; format 4 wrote one
//!   entry, a JSON object, per key). The snapshot (format 2) leaves the transcript out, so a
//!   save writes only the entries that changed, not the whole of a conversation open for days,
//!   and writes them as one key: a conversation saved every `snapshot_every` customer messages
//!   writes one key, not fifty, into its chat's part of the tree. A later run overrides the
//!   entries of an earlier one from its index on. Dropped when the conversation closes: its
//!   archive holds them. A run whose JSON ends with a newline was *appended*: an agent's
//!   message or note, with the customer's messages the snapshot does not count yet, stored
//!   without the snapshot (one key, not three) and counted past the snapshot's entries (see
//!   [`SledConversationStore::append`]).
//!
//! A save that changes routing, status or an existing entry writes the snapshot and its index
//! entries in one batch; a save that only adds entries writes them key by key, in an order a
//! crash may cut (see [`SledConversationStore::plan_save`]). A saved snapshot tells the
//! journal which events it covers (they may then leave it after `storage.journal_retention_secs`).
//! Journal events are read from the [`Journal`] and decoded with the LINE types.

use linedesk_actors::conversation::state::{Author, Transcript, TranscriptEntry};
use linedesk_actors::conversation::{
    ConversationRecord, ConversationState, ConversationStore, DueTimer, Status, StoreError,
};
use linedesk_actors::domain::{
    AccountId, ConversationId, ConversationKey, Inbound, InboundKind, LineSource,
};
use serde::{Deserialize, Serialize};

use super::Journal;
use crate::line::{events, inbound};

const TREE: &str = "conversations";
const SNAPSHOT: u8 = b's';
const ARCHIVE: u8 = b'a';
const INDEX: u8 = b'i';
const TIMER: u8 = b't';
const DEADLINE: u8 = b'k';
const OPEN: u8 = b'o';
const TRANSCRIPT: u8 = b'x';

/// Archive record format written by this release.
pub const ARCHIVE_FORMAT_VERSION: u16 = 1;

/// One line of the conversation list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub v: u16,
    pub id: ConversationId,
    pub account: AccountId,
    /// The LINE user of a one-to-one chat.
    pub user_id: Option<String>,
    pub chat: LineSource,
    pub status: Status,
    pub agent: Option<String>,
    pub opened_at_ms: i64,
    pub updated_at_ms: i64,
    pub closed_at_ms: Option<i64>,
    pub messages: usize,
    /// Where classification put it; routing is rebuilt from this after a restart.
    #[serde(default)]
    pub routing: Option<linedesk_actors::conversation::RoutingInfo>,
    /// In wrap-up, the agent's capacity is still taken.
    #[serde(default)]
    pub capacity_held: bool,
}

impl ConversationSummary {
    fn of(conversation: &ConversationRecord) -> Self {
        let key = &conversation.id.key;
        Self {
            v: ARCHIVE_FORMAT_VERSION,
            id: conversation.id.clone(),
            account: key.account.clone(),
            user_id: match &key.source {
                LineSource::User(id) => Some(id.to_string()),
                _ => None,
            },
            chat: key.source.clone(),
            status: conversation.status,
            agent: conversation.agent.as_ref().map(|a| a.to_string()),
            opened_at_ms: conversation.opened_at_ms,
            updated_at_ms: conversation.updated_at_ms,
            closed_at_ms: conversation.closed_at_ms,
            messages: conversation.transcript.len(),
            routing: conversation.routing.clone(),
            capacity_held: conversation.capacity_held,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ArchiveRecord {
    v: u16,
    conversation: ConversationRecord,
}

/// [`ArchiveRecord`] as written, without copying the conversation.
#[derive(Serialize)]
struct ArchiveRecordRef<'a> {
    v: u16,
    conversation: &'a ConversationRecord,
}

/// First byte of a closed conversation's `i` entry; a JSON summary starts with `{`.
const ARCHIVED_ENTRY: u8 = 0x01;

/// A closed conversation's `i` entry: [`ARCHIVED_ENTRY`], the summary's length (be u32), the
/// summary, then the [`ArchiveRecord`]: the list reads the summary without parsing the transcript.
fn encode_archived(conversation: &ConversationRecord) -> Vec<u8> {
    let summary = encode(&ConversationSummary::of(conversation));
    let record = encode(&ArchiveRecordRef {
        v: ARCHIVE_FORMAT_VERSION,
        conversation,
    });
    let mut value = Vec::with_capacity(5 + summary.len() + record.len());
    value.push(ARCHIVED_ENTRY);
    // The summary is a few hundred bytes: its length always fits.
    value.extend_from_slice(&(summary.len() as u32).to_be_bytes());
    value.extend_from_slice(&summary);
    value.extend_from_slice(&record);
    value
}

/// An `i` entry's two parts: the summary and, for a closed conversation, its archive record.
fn split_entry(bytes: &[u8]) -> Result<(&[u8], Option<&[u8]>), StoreError> {
    if bytes.first() != Some(&ARCHIVED_ENTRY) {
        return Ok((bytes, None));
    }
    let framed = bytes
        .get(1..5)
        .and_then(|len| len.try_into().ok())
        .map(|len| 5 + u32::from_be_bytes(len) as usize)
        .filter(|end| *end <= bytes.len());
    match framed {
        Some(end) => Ok((&bytes[5..end], Some(&bytes[end..]))),
        None => Err(StoreError(
            "archived list entry unreadable: bad framing".into(),
        )),
    }
}

/// What the list endpoint asks for.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub account: Option<AccountId>,
    /// A LINE user id; with `account` it narrows the scan to that chat.
    pub user: Option<String>,
    pub status: Option<Status>,
    /// Continue after this conversation (the `next` of the previous page).
    pub after: Option<ConversationId>,
    pub limit: usize,
    /// Most index entries one page may read, so a rare filter can't scan everything at once.
    pub scan_budget: usize,
}

/// A page of the list.
#[derive(Debug, Default)]
pub struct ListPage {
    pub items: Vec<ConversationSummary>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<ConversationId>,
}

#[derive(Clone)]
pub struct SledConversationStore {
    tree: sled::Tree,
    journal: Journal,
}

impl SledConversationStore {
    pub fn open(db: &sled::Db, journal: Journal) -> Result<Self, super::StorageError> {
        Ok(Self {
            tree: db.open_tree(TREE)?,
            journal,
        })
    }

    /// The saved transcript of an open conversation: its first `len` entries, if the snapshot
    /// counts them, and the appended runs right after them (see [`SledConversationStore::append`]).
    /// Other entries past those are from a save a crash cut short.
    fn transcript(&self, id: &ConversationId, len: Option<u32>) -> Result<Transcript, StoreError> {
        let start = transcript_key(id, 0);
        let end = transcript_key(id, u32::MAX as usize);
        let mut entries: Vec<TranscriptEntry> = Vec::new();
        let mut counted = len.map(|len| len as usize);
        // Runs in key order, that is by the index they start at.
        for run in self.tree.range(start..end) {
            let (key, value) = run.map_err(sled_error)?;
            let at = transcript_index(&key);
            let appended = match counted {
                Some(upto) if at >= upto => {
                    if at != upto || !is_appended(&value) {
                        break;
                    }
                    true
                }
                _ => false,
            };
            if at > entries.len() {
                return Err(StoreError(format!(
                    "transcript of {id} has no entry {} before a run at {at}",
                    entries.len()
                )));
            }
            entries.truncate(at);
            if value.first() == Some(&b'[') {
                entries.extend(decode::<Vec<TranscriptEntry>>(
                    &value,
                    "transcript entries",
                )?);
            } else {
                entries.push(decode(&value, "transcript entry")?);
            }
            if appended {
                // It counts up to its end; only another appended run may follow it.
                counted = Some(entries.len());
            }
        }
        if let Some(upto) = counted {
            entries.truncate(upto);
        }
        Ok(Transcript::saved(entries))
    }

    /// Removes the runs of `id` starting after `from`: a save rewriting the entries from `from`
    /// on supersedes them.
    fn drop_runs_after(
        &self,
        id: &ConversationId,
        from: usize,
        writes: &mut Vec<Write>,
    ) -> Result<(), StoreError> {
        let start = transcript_key(id, from + 1);
        let end = transcript_key(id, u32::MAX as usize);
        for key in self.tree.range(start..=end).keys() {
            writes.push(Write::Delete(key.map_err(sled_error)?.to_vec()));
        }
        Ok(())
    }

    /// Removes the transcript entries of the chat's conversations other than number `keep`.
    fn drop_transcripts(
        &self,
        chat: &ConversationKey,
        keep: Option<u32>,
        writes: &mut Vec<Write>,
    ) -> Result<(), StoreError> {
        let prefix = transcript_chat_prefix(chat);
        for key in self.tree.scan_prefix(&prefix).keys() {
            let key = key.map_err(sled_error)?;
            let number = key
                .get(prefix.len()..prefix.len() + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes);
            if number.is_none() || number != keep {
                writes.push(Write::Delete(key.to_vec()));
            }
        }
        Ok(())
    }

    /// An archived conversation.
    pub fn archived(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError> {
        if let Some(entry) = self.tree.get(index_key(id)).map_err(sled_error)? {
            if let (_, Some(record)) = split_entry(&entry)? {
                let record: ArchiveRecord = decode(record, "archived conversation")?;
                return Ok(Some(record.conversation));
            }
        }
        let Some(bytes) = self.tree.get(archive_key(id)).map_err(sled_error)? else {
            return Ok(None);
        };
        let record: ArchiveRecord = decode(&bytes, "archived conversation")?;
        Ok(Some(record.conversation))
    }

    /// Up to `limit` conversations not closed, as last snapshotted, in id order and strictly
    /// after `after`: what routing must know at start-up, read a chunk at a time so that a
    /// restart never holds every open conversation in memory at once. An empty chunk is the end.
    pub fn open_conversations_after(
        &self,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(open_key(id)),
            None => Bound::Included(vec![OPEN]),
        };
        let end = Bound::Excluded(vec![OPEN + 1]);
        self.tree
            .range::<Vec<u8>, _>((start, end))
            .take(limit)
            .map(|entry| {
                let (_, value) = entry.map_err(sled_error)?;
                decode(&value, "open conversation")
            })
            .collect()
    }

    /// Whether linedesk has seen this chat at all (a snapshot, or journal events not yet applied).
    pub fn knows(&self, key: &ConversationKey) -> Result<bool, StoreError> {
        // The journal first: a save writes the snapshot before the journal lets go of the
        // events it covers, so in this order one of the two is seen, whatever runs meanwhile.
        Ok(self.journal.holds_events(key)
            || self
                .tree
                .contains_key(snapshot_key(key))
                .map_err(sled_error)?)
    }

    pub fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let prefix = match (&query.account, &query.user) {
            (Some(account), Some(user)) => {
                let mut p = chat_prefix(&ConversationKey::new(
                    account.clone(),
                    LineSource::User(user.as_str().into()),
                ));
                p.push(0);
                p
            }
            (Some(account), None) => [&[INDEX][..], account.as_str().as_bytes(), b"."].concat(),
            (None, _) => vec![INDEX],
        };
        let start = match &query.after {
            Some(after) => {
                let mut k = index_key(after);
                k.push(0); // strictly after
                k.max(prefix.clone())
            }
            None => prefix.clone(),
        };
        let mut page = ListPage::default();
        let mut scanned = 0;
        for entry in self.tree.range(start..) {
            let (key, value) = entry.map_err(sled_error)?;
            if !key.starts_with(&prefix) {
                return Ok(page);
            }
            scanned += 1;
            let summary: ConversationSummary =
                decode(split_entry(&value)?.0, "conversation summary")?;
            let id = summary.id.clone();
            let wanted = query.status.is_none_or(|s| s == summary.status)
                && query
                    .user
                    .as_ref()
                    .is_none_or(|u| summary.user_id.as_ref() == Some(u));
            if wanted {
                page.items.push(summary);
            }
            if page.items.len() >= query.limit || scanned >= query.scan_budget {
                page.next = Some(id);
                return Ok(page);
            }
        }
        Ok(page)
    }

    fn decode_event(&self, stored: super::StoredEvent) -> Inbound {
        match events::parse_event(stored.event.get()) {
            Ok(event) => inbound::to_inbound(
                stored.conversation.account.as_str(),
                &event,
                stored.seq,
                stored.received_at_ms,
            ),
            Err(e) => {
                // Checked before it was stored, so this is damage or a format change: record it
                // and go on, rather than block the conversation for good.
                tracing::error!(
                    conversation_id = %stored.conversation,
                    seq = stored.seq,
                    error.message = %e,
                    "journal event unreadable; recorded as such"
                );
                Inbound {
                    seq: stored.seq,
                    webhook_event_id: String::new(),
                    at_ms: stored.received_at_ms,
                    received_at_ms: stored.received_at_ms,
                    sender: None,
                    reply_token: None,
                    redelivery: false,
                    kind: InboundKind::Other {
                        type_name: "unreadable".into(),
                    },
                }
            }
        }
    }
}

/// One write of a save.
#[derive(Debug)]
enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// A save's writes, in the order they may be cut when written key by key.
struct SavePlan {
    writes: Vec<Write>,
    /// One key at a time rather than one batch: in sled 0.34 every multi-key batch first writes
    /// out the log's current buffer, which held a busy conversation thread up for milliseconds.
    key_by_key: bool,
}

impl SledConversationStore {
    /// What saving `state` writes; sets the fields of `state` that say what the store holds.
    ///
    /// A save that only adds transcript entries and leaves routing as it was (the common case:
    /// a message more) goes key by key, ordered so that a crash between two keys loses nothing
    /// a load cannot make up:
    /// 1. the new transcript entries: a load reads only as many as the snapshot counts, and the
    ///    journal replays the events they came from;
    /// 2. the new timer entry, then the snapshot naming it, then the removal of the old one: a
    ///    cut leaves an entry no snapshot names, which the conversation discards when it fires;
    /// 3. the list entry, which a cut leaves one save behind until the next save.
    ///
    /// The open summary (`o`) is not rewritten: what routing reads from it did not change.
    /// Every other save (a new conversation, a status or agent change, a changed entry, an
    /// older format) is one batch, as all of them once were.
    fn plan_save(&self, state: &mut ConversationState) -> Result<SavePlan, StoreError> {
        let format = state.v;
        state.v = linedesk_actors::conversation::state::SNAPSHOT_FORMAT_VERSION;
        let mut writes = Vec::new();
        let mut key_by_key = false;
        let mut summary_writes = Vec::new();
        match &mut state.current {
            Some(conversation) => {
                let summary = ConversationSummary::of(conversation);
                let (from, changed) = conversation.transcript.changed();
                key_by_key = format >= 3
                    && state.saved_transcript_len == Some(from as u32)
                    && self.routing_unchanged(&summary)?;
                let summary = encode(&summary);
                if !key_by_key {
                    summary_writes.push(Write::Put(open_key(&conversation.id), summary.clone()));
                }
                summary_writes.push(Write::Put(index_key(&conversation.id), summary));
                if from == 0 {
                    // A new conversation (or a format 1 snapshot): no entries of an earlier one
                    // may stay behind.
                    self.drop_transcripts(&state.key, Some(conversation.id.number), &mut writes)?;
                }
                if !key_by_key {
                    // Entries may have changed: runs after `from` hold older copies of them.
                    self.drop_runs_after(&conversation.id, from, &mut writes)?;
                }
                if !changed.is_empty() {
                    writes.push(Write::Put(
                        transcript_key(&conversation.id, from),
                        encode(&changed),
                    ));
                }
                state.saved_transcript_len = Some(conversation.transcript.len() as u32);
            }
            None => {
                self.drop_transcripts(&state.key, None, &mut writes)?;
                state.saved_transcript_len = None;
            }
        }
        let key = state.key.clone();
        let old_deadline = if format < 3 {
            // Earlier formats kept the indexed deadline under a key of its own.
            writes.push(Write::Delete(deadline_key(&key)));
            self.tree
                .get(deadline_key(&key))
                .map_err(sled_error)?
                .map(|v| decode_u64(&v))
                .transpose()?
        } else {
            state.indexed_deadline_ms
        };
        let new_deadline = state.deadline_ms().map(|d| d.max(0) as u64);
        let moved = old_deadline != new_deadline;
        if moved {
            if let Some(new) = new_deadline {
                writes.push(Write::Put(timer_key(new, &key), Vec::new()));
            }
        }
        state.indexed_deadline_ms = new_deadline;
        writes.push(Write::Put(snapshot_key(&key), encode_snapshot(state)));
        writes.append(&mut summary_writes);
        if moved {
            if let Some(old) = old_deadline {
                writes.push(Write::Delete(timer_key(old, &key)));
            }
        }
        Ok(SavePlan { writes, key_by_key })
    }

    /// Whether the stored open summary already says what routing would rebuild from `summary`.
    fn routing_unchanged(&self, summary: &ConversationSummary) -> Result<bool, StoreError> {
        let Some(stored) = self.tree.get(open_key(&summary.id)).map_err(sled_error)? else {
            return Ok(false);
        };
        let stored: ConversationSummary = decode(&stored, "open conversation")?;
        Ok(stored.status == summary.status
            && stored.agent == summary.agent
            && stored.routing == summary.routing
            && stored.capacity_held == summary.capacity_held
            && stored.opened_at_ms == summary.opened_at_ms)
    }

    fn write(&self, writes: Vec<Write>, key_by_key: bool) -> sled::Result<()> {
        if key_by_key {
            for write in writes {
                match write {
                    Write::Put(key, value) => self.tree.insert(key, value)?,
                    Write::Delete(key) => self.tree.remove(key)?,
                };
            }
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for write in writes {
            match write {
                Write::Put(key, value) => batch.insert(key, value),
                Write::Delete(key) => batch.remove(key),
            }
        }
        self.tree.apply_batch(batch)
    }
}

impl ConversationStore for SledConversationStore {
    fn load(&self, key: &ConversationKey) -> Result<Option<ConversationState>, StoreError> {
        let Some(bytes) = self.tree.get(snapshot_key(key)).map_err(sled_error)? else {
            return Ok(None);
        };
        let mut state: ConversationState = decode(&bytes, "conversation snapshot")?;
        if state.v > linedesk_actors::conversation::state::SNAPSHOT_FORMAT_VERSION {
            return Err(StoreError(format!(
                "snapshot of {key} has format {} from a newer linedesk",
                state.v
            )));
        }
        // Format 1 held the transcript inline: it stays, unsaved, until the next save writes it
        // apart.
        if state.v >= 2 {
            if let Some(conversation) = &mut state.current {
                conversation.transcript =
                    self.transcript(&conversation.id, state.saved_transcript_len)?;
            }
            count_appended(&mut state);
        }
        // A stored snapshot covers its events: a conversation resumed after a restart whose
        // snapshot was saved just before the crash is not marked uncovered for ever.
        self.journal
            .clear_pending(key, state.applied_seq)
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(Some(state))
    }

    fn events_after(
        &self,
        key: &ConversationKey,
        after_seq: u64,
    ) -> Result<Vec<Inbound>, StoreError> {
        self.journal
            .events_after(key, after_seq)
            .map(|stored| Ok(self.decode_event(stored.map_err(|e| StoreError(e.to_string()))?)))
            .collect()
    }

    fn save(&self, state: &mut ConversationState) -> Result<(), StoreError> {
        let before = (
            state.v,
            state.indexed_deadline_ms,
            state.saved_transcript_len,
        );
        let plan = self.plan_save(state)?;
        if let Err(e) = self.write(plan.writes, plan.key_by_key) {
            // The next save must start from what the snapshot stored says.
            (
                state.v,
                state.indexed_deadline_ms,
                state.saved_transcript_len,
            ) = before;
            return Err(sled_error(e));
        }
        if let Some(conversation) = &mut state.current {
            conversation.transcript.mark_saved();
        }
        self.journal
            .clear_pending(&state.key, state.applied_seq)
            .map_err(|e| StoreError(e.to_string()))
    }

    /// One key: the new entries as a run of their own, marked appended (see [`is_appended`]),
    /// which a load counts past the snapshot's entries. The snapshot and the list entry wait
    /// for the next save, and so do the journal's events: they stay until a snapshot covers
    /// them. Saves instead when an entry is neither an agent's nor an event's, or the snapshot
    /// does not end where the entries start.
    fn append(&self, state: &mut ConversationState) -> Result<(), StoreError> {
        let format = linedesk_actors::conversation::state::SNAPSHOT_FORMAT_VERSION;
        let saved = state.saved_transcript_len;
        let Some(conversation) = state.current.as_mut() else {
            return self.save(state);
        };
        let (from, added) = conversation.transcript.changed();
        // Agents' entries, and entries of journal events the snapshot does not count yet
        // (their replay makes up the rest of what those events did, and skips the entries).
        let appendable = state.v == format
            && saved == Some(from as u32)
            && !added.is_empty()
            && added
                .iter()
                .all(|e| e.seq.is_some() || matches!(e.author, Author::Agent { .. }));
        if !appendable {
            return self.save(state);
        }
        let mut run = encode(&added);
        run.push(b'\n');
        self.tree
            .insert(transcript_key(&conversation.id, from), run)
            .map_err(sled_error)?;
        conversation.transcript.mark_saved();
        state.saved_transcript_len = Some(conversation.transcript.len() as u32);
        Ok(())
    }

    fn archive(&self, conversation: &ConversationRecord) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(index_key(&conversation.id), encode_archived(conversation));
        batch.remove(open_key(&conversation.id));
        self.tree.apply_batch(batch).map_err(sled_error)
    }

    fn hide_archived_message(
        &self,
        id: &ConversationId,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let Some(mut conversation) = self.archived(id)? else {
            return Ok(());
        };
        for entry in conversation.transcript.iter_mut() {
            if entry.message_id.as_deref() == Some(message_id) {
                entry.content = None;
                entry.unsent = true;
            }
        }
        // An archive from an earlier release goes: it still holds the message.
        let mut batch = sled::Batch::default();
        batch.insert(index_key(&conversation.id), encode_archived(&conversation));
        batch.remove(archive_key(&conversation.id));
        self.tree.apply_batch(batch).map_err(sled_error)
    }

    fn pending(&self) -> Result<Vec<(ConversationKey, u64)>, StoreError> {
        Ok(self.journal.pending_conversations())
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<DueTimer>, StoreError> {
        let end = [&[TIMER][..], &(now_ms.max(0) as u64 + 1).to_be_bytes()].concat();
        self.tree
            .range(vec![TIMER]..end)
            .keys()
            .take(limit)
            .map(|k| {
                let k = k.map_err(sled_error)?;
                let deadline_ms = decode_u64(&k[1..9])?;
                let name = std::str::from_utf8(&k[9..])
                    .map_err(|e| StoreError(format!("timer index: {e}")))?;
                let key = ConversationKey::parse(name)
                    .map_err(|e| StoreError(format!("timer index: {e}")))?;
                Ok(DueTimer { key, deadline_ms })
            })
            .collect()
    }

    fn discard_timer(&self, key: &ConversationKey, deadline_ms: u64) -> Result<(), StoreError> {
        self.tree
            .remove(timer_key(deadline_ms, key))
            .map(drop)
            .map_err(sled_error)
    }
}

fn snapshot_key(key: &ConversationKey) -> Vec<u8> {
    [&[SNAPSHOT][..], key.to_string().as_bytes()].concat()
}

/// The snapshot, without the open conversation's transcript (its entries have keys of their own).
fn encode_snapshot(state: &mut ConversationState) -> Vec<u8> {
    let transcript = state
        .current
        .as_mut()
        .map(|c| std::mem::take(&mut c.transcript));
    let snapshot = encode(&*state);
    if let (Some(conversation), Some(transcript)) = (&mut state.current, transcript) {
        conversation.transcript = transcript;
    }
    snapshot
}

fn deadline_key(key: &ConversationKey) -> Vec<u8> {
    [&[DEADLINE][..], key.to_string().as_bytes()].concat()
}

fn timer_key(deadline: u64, key: &ConversationKey) -> Vec<u8> {
    [
        &[TIMER][..],
        &deadline.to_be_bytes(),
        key.to_string().as_bytes(),
    ]
    .concat()
}

fn open_key(id: &ConversationId) -> Vec<u8> {
    [&[OPEN][..], id.to_string().as_bytes()].concat()
}

fn archive_key(id: &ConversationId) -> Vec<u8> {
    [&[ARCHIVE][..], id.to_string().as_bytes()].concat()
}

/// `i` + `{account}.{kind}.{chat}`: every conversation of a chat shares it.
fn chat_prefix(key: &ConversationKey) -> Vec<u8> {
    let id = ConversationId::new(key.clone(), 0).to_string();
    // Drop the trailing ".0": the number is appended in binary so that 10 sorts after 9.
    let chat = &id[..id.len() - 2];
    [&[INDEX][..], chat.as_bytes()].concat()
}

/// `x` + chat + `\0`: the transcript entries of every conversation of a chat.
fn transcript_chat_prefix(key: &ConversationKey) -> Vec<u8> {
    let mut k = chat_prefix(key);
    k[0] = TRANSCRIPT;
    k.push(0);
    k
}

fn transcript_key(id: &ConversationId, index: usize) -> Vec<u8> {
    let mut k = transcript_chat_prefix(&id.key);
    k.extend_from_slice(&id.number.to_be_bytes());
    k.extend_from_slice(&(index.min(u32::MAX as usize) as u32).to_be_bytes());
    k
}

/// Whether a transcript run was written by [`SledConversationStore::append`]: its JSON ends
/// with a newline, which releases before it read as the JSON they wrote.
fn is_appended(run: &[u8]) -> bool {
    run.last() == Some(&b'\n')
}

/// Makes a loaded state what it was when its appended runs were written (see
/// [`SledConversationStore::append`]) but for the journal's events they hold, which the
/// conversation replays: the snapshot counts their entries, the conversation was updated when
/// the last was written, and an agent's message to the customer took the reply token the
/// snapshot holds.
fn count_appended(state: &mut ConversationState) {
    let (Some(saved), Some(conversation)) = (state.saved_transcript_len, &mut state.current) else {
        return;
    };
    let Some(appended) = conversation.transcript.get(saved as usize..) else {
        return;
    };
    if let Some(last) = appended.iter().map(|e| e.at_ms).max() {
        conversation.updated_at_ms = conversation.updated_at_ms.max(last);
    }
    state.saved_transcript_len = Some(conversation.transcript.len() as u32);
    state.forget_spent_reply_token();
}

/// The entry index a transcript key ends with.
fn transcript_index(key: &[u8]) -> usize {
    let tail: [u8; 4] = key[key.len().saturating_sub(4)..]
        .try_into()
        .unwrap_or_default();
    u32::from_be_bytes(tail) as usize
}

fn index_key(id: &ConversationId) -> Vec<u8> {
    let mut k = chat_prefix(&id.key);
    k.push(0);
    k.extend_from_slice(&id.number.to_be_bytes());
    k
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // unwrap: these types serialise to JSON without fail (string keys, finite numbers).
    serde_json::to_vec(value).unwrap()
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError(format!("{what} unreadable: {e}")))
}

fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError("deadline is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(array))
}

fn sled_error(e: sled::Error) -> StoreError {
    StoreError(format!("database: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use linedesk_actors::conversation::{ConversationSettings, Effect};
    use linedesk_actors::domain::{Content, Inbound};

    use super::*;
    use crate::settings::Durability;

    const T0: i64 = 1_700_000_000_000;

    fn store() -> (tempfile::TempDir, SledConversationStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let journal = Journal::open(db.clone(), dir.path(), Durability::Os).unwrap();
        (dir, SledConversationStore::open(&db, journal).unwrap())
    }

    fn settings() -> ConversationSettings {
        ConversationSettings {
            queued_timeout: Duration::from_secs(1),
            active_timeout: Duration::from_secs(1),
            waiting_timeout: Duration::from_secs(1),
            wrap_up_hold: Duration::from_secs(1),
            wrap_up_timeout: Duration::from_secs(1),
            keep_same_agent: true,
            bot_first: false,
        }
    }

    fn key() -> ConversationKey {
        ConversationKey::new(
            AccountId::parse("demo").unwrap(),
            LineSource::user("Ucustomer").unwrap(),
        )
    }

    fn text(seq: u64, text: &str) -> Inbound {
        Inbound {
            seq,
            webhook_event_id: format!("E{seq}"),
            at_ms: T0 + seq as i64,
            received_at_ms: T0 + seq as i64,
            sender: Some("Ucustomer".into()),
            reply_token: None,
            redelivery: false,
            kind: InboundKind::Message {
                message_id: format!("m{seq}"),
                content: Content::Text { text: text.into() },
                quote_token: None,
            },
        }
    }

    fn previews(state: &ConversationState) -> Vec<String> {
        let transcript = &state.current.as_ref().unwrap().transcript;
        transcript.iter().map(|e| e.preview()).collect()
    }

    fn transcript_keys(store: &SledConversationStore) -> usize {
        store.tree.scan_prefix([TRANSCRIPT]).count()
    }

    /// The operators' API asks `knows` while the chat's actor may be saving: the save writes
    /// the snapshot, then the journal lets go of the events it covers. At no moment in between
    /// may the chat look unknown (a 404 right after LINE's delivery was answered).
    #[actix_web::test]
    async fn a_chat_stays_known_while_a_save_covers_its_events() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let (_dir, store) = store();
        let store = Arc::new(store);
        let account = AccountId::parse("demo").unwrap();
        for round in 0..200 {
            let user = format!("U{round:032x}");
            let key = ConversationKey::new(account.clone(), LineSource::user(&user).unwrap());
            let incoming = super::super::journal::IncomingEvent {
                webhook_event_id: format!("E{round}"),
                timestamp_ms: T0,
                conversation: key.clone(),
                raw: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
                inbound: None,
            };
            store
                .journal
                .append(&account, vec![incoming], T0)
                .await
                .unwrap();
            let seq = store
                .journal
                .events_after(&key, 0)
                .next()
                .unwrap()
                .unwrap()
                .seq;
            let mut state = ConversationState::new(key.clone());
            state.apply(&text(seq, "hi"), &settings());

            let saved = Arc::new(AtomicBool::new(false));
            let asking = Arc::new(std::sync::Barrier::new(2));
            let asker = {
                let (store, key, saved) = (store.clone(), key.clone(), saved.clone());
                let asking = asking.clone();
                std::thread::spawn(move || {
                    asking.wait();
                    let mut unknown = 0;
                    // Bounded: the save below ends the loop long before.
                    for _ in 0..1_000_000 {
                        if !store.knows(&key).unwrap() {
                            unknown += 1;
                        }
                        if saved.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                    unknown
                })
            };
            asking.wait();
            store.save(&mut state).unwrap();
            saved.store(true, Ordering::SeqCst);
            assert_eq!(asker.join().unwrap(), 0, "round {round}: seen as unknown");
            assert!(
                !store.journal.holds_events(&key),
                "the save covered the event"
            );
            assert!(store.knows(&key).unwrap());
        }
    }

    #[test]
    fn a_save_writes_the_changed_entries_apart_and_a_load_gets_them_all_back() {
        let (_dir, store) = store();
        let mut state = ConversationState::new(key());
        for seq in 1..=3 {
            state.apply(&text(seq, &format!("message {seq}")), &settings());
        }
        store.save(&mut state).unwrap();
        let snapshot = store.tree.get(snapshot_key(&key())).unwrap().unwrap();
        assert!(
            !String::from_utf8_lossy(&snapshot).contains("message 1"),
            "the snapshot leaves the transcript out"
        );
        assert_eq!(transcript_keys(&store), 1, "one run of three entries");
        let current = state.current.as_ref().unwrap();
        assert_eq!(current.transcript.changed().0, 3, "all saved");

        state.apply(&text(4, "message 4"), &settings());
        assert_eq!(state.current.as_ref().unwrap().transcript.changed().0, 3);
        store.save(&mut state).unwrap();
        assert_eq!(
            transcript_keys(&store),
            2,
            "the added entry is a run of its own"
        );
        let mut loaded = store.load(&key()).unwrap().unwrap();
        assert_eq!(loaded, state);
        assert_eq!(previews(&loaded)[3], "message 4");

        // A change to an old entry is saved too.
        let unsend = Inbound {
            kind: InboundKind::Unsend {
                message_id: "m2".into(),
            },
            ..text(5, "")
        };
        loaded.apply(&unsend, &settings());
        store.save(&mut loaded).unwrap();
        let again = store.load(&key()).unwrap().unwrap();
        let entry = &again.current.as_ref().unwrap().transcript[1];
        assert!(entry.unsent && entry.content.is_none());
        assert_eq!(again, loaded);
        // The entries from the changed one on are one run; the run after it went.
        assert_eq!(transcript_keys(&store), 2);
    }

    #[test]
    fn entries_of_a_format_4_snapshot_one_key_each_are_read_and_a_run_overrides_them() {
        let (_dir, store) = store();
        let mut state = ConversationState::new(key());
        for seq in 1..=3 {
            state.apply(&text(seq, &format!("message {seq}")), &settings());
        }
        store.save(&mut state).unwrap();
        let id = state.current.as_ref().unwrap().id.clone();
        // As format 4 stored them: one JSON object per key.
        let entries: Vec<TranscriptEntry> = state.current.as_ref().unwrap().transcript.to_vec();
        store.tree.remove(transcript_key(&id, 0)).unwrap();
        for (index, entry) in entries.iter().enumerate() {
            store
                .tree
                .insert(transcript_key(&id, index), encode(entry))
                .unwrap();
        }
        let mut loaded = store.load(&key()).unwrap().unwrap();
        assert_eq!(loaded, state);

        let unsend = Inbound {
            kind: InboundKind::Unsend {
                message_id: "m2".into(),
            },
            ..text(4, "")
        };
        loaded.apply(&unsend, &settings());
        store.save(&mut loaded).unwrap();
        assert_eq!(store.load(&key()).unwrap().unwrap(), loaded);
        assert_eq!(transcript_keys(&store), 2, "entry 0, then a run from 1");
    }

    #[test]
    fn a_format_1_snapshot_is_read_with_its_inline_transcript_and_written_apart_next() {
        let (_dir, store) = store();
        let mut state = ConversationState::new(key());
        state.apply(&text(1, "from an older release"), &settings());
        let mut old = serde_json::to_value(&state).unwrap();
        old["v"] = 1.into();
        store
            .tree
            .insert(snapshot_key(&key()), serde_json::to_vec(&old).unwrap())
            .unwrap();

        let mut loaded = store.load(&key()).unwrap().unwrap();
        assert_eq!(previews(&loaded), ["from an older release"]);
        store.save(&mut loaded).unwrap();
        assert_eq!(transcript_keys(&store), 1);
        let again = store.load(&key()).unwrap().unwrap();
        assert_eq!(previews(&again), ["from an older release"]);
        assert_eq!(
            again.v,
            linedesk_actors::conversation::state::SNAPSHOT_FORMAT_VERSION
        );
    }

    #[test]
    fn a_closed_conversations_entries_leave_and_its_archive_keeps_them() {
        let (_dir, store) = store();
        let mut state = ConversationState::new(key());
        state.apply(&text(1, "hello"), &settings());
        state.apply(&text(2, "anyone?"), &settings());
        store.save(&mut state).unwrap();
        assert_eq!(transcript_keys(&store), 1);

        let effects = state.tick(T0 + 60_000, &settings());
        let archived = effects
            .iter()
            .find_map(|e| match e {
                Effect::Archive(c) => Some(c.clone()),
                _ => None,
            })
            .expect("the queued timer closes it");
        store.archive(&archived).unwrap();
        store.save(&mut state).unwrap();
        assert_eq!(transcript_keys(&store), 0);
        let kept = store.archived(&archived.id).unwrap().unwrap();
        assert_eq!(kept.transcript.len(), 2);

        // The chat's next conversation starts its own entries.
        state.apply(&text(3, "back again"), &settings());
        store.save(&mut state).unwrap();
        assert_eq!(transcript_keys(&store), 1);
        let loaded = store.load(&key()).unwrap().unwrap();
        assert_eq!(previews(&loaded), ["back again"]);
    }

    fn closed_conversation(
        store: &SledConversationStore,
    ) -> (ConversationState, ConversationRecord) {
        let mut state = ConversationState::new(key());
        state.apply(&text(1, "hello"), &settings());
        state.apply(&text(2, "anyone?"), &settings());
        store.save(&mut state).unwrap();
        let closed = state
            .tick(T0 + 60_000, &settings())
            .into_iter()
            .find_map(|e| match e {
                Effect::Archive(c) => Some(*c),
                _ => None,
            })
            .expect("the queued timer closes it");
        (state, closed)
    }

    fn list_all(store: &SledConversationStore) -> Vec<ConversationSummary> {
        let query = ListQuery {
            limit: 10,
            scan_budget: 100,
            ..ListQuery::default()
        };
        store.list(&query).unwrap().items
    }

    fn values_holding(store: &SledConversationStore, text: &str) -> usize {
        store
            .tree
            .iter()
            .values()
            .filter(|v| String::from_utf8_lossy(&v.as_ref().unwrap()[..]).contains(text))
            .count()
    }

    #[test]
    fn a_closed_conversation_is_one_list_entry_holding_its_archive() {
        let (_dir, store) = store();
        let (mut state, closed) = closed_conversation(&store);
        store.archive(&closed).unwrap();
        store.save(&mut state).unwrap();

        assert_eq!(store.tree.scan_prefix([ARCHIVE]).count(), 0);
        assert_eq!(store.tree.scan_prefix([OPEN]).count(), 0);
        assert_eq!(store.archived(&closed.id).unwrap().unwrap(), closed);
        let listed = list_all(&store);
        assert_eq!(listed, [ConversationSummary::of(&closed)]);
        assert_eq!((listed[0].status, listed[0].messages), (Status::Closed, 2));
    }

    #[test]
    fn an_archive_from_an_earlier_release_is_read_and_hiding_a_message_leaves_no_copy() {
        let (_dir, store) = store();
        let (mut state, closed) = closed_conversation(&store);
        // As releases before the framed list entry stored it.
        let mut batch = sled::Batch::default();
        batch.insert(
            index_key(&closed.id),
            encode(&ConversationSummary::of(&closed)),
        );
        batch.insert(
            archive_key(&closed.id),
            encode(&ArchiveRecordRef {
                v: ARCHIVE_FORMAT_VERSION,
                conversation: &closed,
            }),
        );
        batch.remove(open_key(&closed.id));
        store.tree.apply_batch(batch).unwrap();
        store.save(&mut state).unwrap();

        assert_eq!(store.archived(&closed.id).unwrap().unwrap(), closed);
        assert_eq!(list_all(&store), [ConversationSummary::of(&closed)]);
        assert_eq!(values_holding(&store, "anyone?"), 1);

        let message_id = closed.transcript[1].message_id.clone().unwrap();
        store
            .hide_archived_message(&closed.id, &message_id)
            .unwrap();
        let hidden = store.archived(&closed.id).unwrap().unwrap();
        assert!(hidden.transcript[1].unsent && hidden.transcript[1].content.is_none());
        assert_eq!(store.tree.scan_prefix([ARCHIVE]).count(), 0);
        assert_eq!(
            values_holding(&store, "anyone?"),
            0,
            "no copy keeps the message"
        );
        assert_eq!(list_all(&store).len(), 1);
    }

    #[test]
    fn the_snapshot_says_which_timer_entry_to_move_and_a_format_2_deadline_key_is_read_once() {
        let (_dir, store) = store();
        let mut state = ConversationState::new(key());
        state.apply(&text(1, "hello"), &settings());
        let deadline = state
            .deadline_ms()
            .expect("a queued conversation times out");
        store.save(&mut state).unwrap();
        assert_eq!(store.tree.scan_prefix([TIMER]).count(), 1);
        assert_eq!(store.tree.scan_prefix([DEADLINE]).count(), 0);
        let due = DueTimer {
            key: key(),
            deadline_ms: deadline as u64,
        };
        assert_eq!(store.due(deadline, 10).unwrap(), [due]);
        let mut loaded = store.load(&key()).unwrap().unwrap();
        assert_eq!(loaded.indexed_deadline_ms, Some(deadline as u64));

        // As format 2 stored it: the deadline under a key of its own, none in the snapshot.
        loaded.v = 2;
        loaded.indexed_deadline_ms = None;
        store
            .tree
            .insert(snapshot_key(&key()), encode_snapshot(&mut loaded))
            .unwrap();
        store
            .tree
            .insert(deadline_key(&key()), &(deadline as u64).to_be_bytes())
            .unwrap();
        let mut old = store.load(&key()).unwrap().unwrap();
        assert_eq!((old.v, old.indexed_deadline_ms), (2, None));
        old.tick(T0 + 60_000, &settings());
        assert_eq!(old.deadline_ms(), None, "closed");
        store.save(&mut old).unwrap();
        assert_eq!(
            store.tree.scan_prefix([TIMER]).count(),
            0,
            "the entry `k` named went"
        );
        assert_eq!(store.tree.scan_prefix([DEADLINE]).count(), 0);
        assert!(store.due(i64::MAX / 2, 10).unwrap().is_empty());
    }

    /// A queued conversation with two messages, saved (in one batch: it is new).
    fn saved_twice_asked() -> (tempfile::TempDir, SledConversationStore, ConversationState) {
        let (dir, store) = store();
        let mut state = ConversationState::new(key());
        state.apply(&text(1, "hello"), &settings());
        state.apply(&text(2, "anyone?"), &settings());
        assert!(!store.plan_save(&mut state.clone()).unwrap().key_by_key);
        store.save(&mut state).unwrap();
        (dir, store, state)
    }

    fn write_first(store: &SledConversationStore, plan: SavePlan, count: usize) {
        assert!(plan.key_by_key);
        let writes = plan.writes.into_iter().take(count).collect();
        store.write(writes, true).unwrap();
    }

    #[test]
    fn a_save_that_only_adds_entries_goes_key_by_key_and_a_cut_anywhere_loads_before_or_after() {
        let (_dir, store, saved) = saved_twice_asked();
        let open_before = store.open_conversations_after(None, 10).unwrap();
        let mut next = saved.clone();
        next.apply(&text(3, "hello??"), &settings());
        next.apply(&text(4, "still there?"), &settings());
        // Not something a message does, but a save may move the deadline with routing as it was:
        // the timer entry moves key by key too.
        let moved = saved.deadline_ms().unwrap() + 5_000;
        next.current.as_mut().unwrap().deadline_ms = Some(moved);
        let plan = store.plan_save(&mut next.clone()).unwrap();
        assert!(plan.key_by_key, "{:?}", plan.writes);
        // The two entries as one run, the new timer entry, the snapshot, the list entry, the old
        // timer entry.
        let writes = plan.writes.len();
        assert_eq!(writes, 5, "{:?}", plan.writes);
        let mut after = next.clone();
        {
            let (_dir, full) = store_with(&saved);
            full.save(&mut after).unwrap();
            assert_eq!(full.load(&key()).unwrap().unwrap(), after);
        }

        for cut in 0..=writes {
            let (_dir, store) = store_with(&saved);
            write_first(&store, store.plan_save(&mut next.clone()).unwrap(), cut);
            let loaded = store.load(&key()).unwrap().unwrap();
            let expected = if cut >= 3 { &after } else { &saved };
            assert_eq!(&loaded, expected, "cut after {cut} writes");
            assert_eq!(
                store.open_conversations_after(None, 10).unwrap(),
                open_before,
                "routing's summary is untouched (cut after {cut})"
            );
            // A timer entry the snapshot does not name is discarded when it fires.
            let indexed = loaded.indexed_deadline_ms.unwrap();
            for timer in store.due(i64::MAX / 2, 10).unwrap() {
                if timer.deadline_ms != indexed {
                    store.discard_timer(&timer.key, timer.deadline_ms).unwrap();
                }
            }
            let due = store.due(i64::MAX / 2, 10).unwrap();
            let deadlines: Vec<u64> = due.iter().map(|t| t.deadline_ms).collect();
            assert_eq!(deadlines, [indexed], "cut after {cut}");

            // Whatever the cut, the next save leaves the store as a whole save would have.
            let mut resumed = loaded;
            if cut < 3 {
                resumed.apply(&text(3, "hello??"), &settings());
                resumed.apply(&text(4, "still there?"), &settings());
                resumed.current.as_mut().unwrap().deadline_ms = Some(moved);
            }
            store.save(&mut resumed).unwrap();
            assert_eq!(
                store.load(&key()).unwrap().unwrap(),
                after,
                "cut after {cut}"
            );
            assert_eq!(transcript_keys(&store), 2);
        }
    }

    /// A fresh store holding `state` as saved.
    fn store_with(state: &ConversationState) -> (tempfile::TempDir, SledConversationStore) {
        let (dir, store) = store();
        let mut first = ConversationState::new(key());
        first.apply(&text(1, "hello"), &settings());
        first.apply(&text(2, "anyone?"), &settings());
        store.save(&mut first).unwrap();
        assert_eq!(&first, state, "the same saved state");
        (dir, store)
    }

    /// Alice answers the customer at `at` with the reply token they left, and it is appended.
    fn replies(
        store: &SledConversationStore,
        state: &mut ConversationState,
        client_msg_id: &str,
        text: &str,
        at: i64,
    ) {
        let alice = linedesk_actors::domain::AgentId::parse("alice").unwrap();
        let reply = Content::Text { text: text.into() };
        let id = Some(client_msg_id.into());
        assert!(state.agent_wrote(&alice, reply, id, false, at).unwrap());
        assert!(state.take_reply_token(at, 60_000).is_some());
        store.append(state).unwrap();
    }

    /// An agent's messages and notes are one key each, the snapshot left as it was; a load
    /// counts them past the snapshot with what they changed, and a later save that a crash cut
    /// after its run still loads as before it.
    #[test]
    fn agents_entries_are_appended_and_load_past_the_snapshot_and_a_cut_after_them_does_not() {
        let (_dir, store, saved) = saved_twice_asked();
        let alice = linedesk_actors::domain::AgentId::parse("alice").unwrap();
        let mut state = saved.clone();
        state.assign(&alice, T0 + 10, &settings()).unwrap();
        let asks = Inbound {
            reply_token: Some("token-3".into()),
            ..text(3, "where is my order?")
        };
        state.apply(&asks, &settings());
        store.save(&mut state).unwrap();
        assert!(state.reply_token.is_some());
        let snapshot = store.tree.get(snapshot_key(&key())).unwrap();
        let (keys, list) = (transcript_keys(&store), list_all(&store));

        replies(&store, &mut state, "c1", "on it", T0 + 20);
        let note = Content::Text { text: "VIP".into() };
        assert!(state
            .agent_wrote(&alice, note, None, true, T0 + 30)
            .unwrap());
        store.append(&mut state).unwrap();
        assert_eq!(transcript_keys(&store), keys + 2, "one key each");
        assert_eq!(store.tree.get(snapshot_key(&key())).unwrap(), snapshot);
        assert_eq!(list_all(&store), list, "the list entry waits");
        let appended = store.load(&key()).unwrap().unwrap();
        assert_eq!(appended, state);
        assert_eq!(appended.reply_token, None, "the reply took the token");
        assert_eq!(appended.current.as_ref().unwrap().updated_at_ms, T0 + 30);

        // A customer's message after them: a save whose run is all a crash left.
        let mut next = appended.clone();
        next.apply(&text(4, "thanks"), &settings());
        let plan = store.plan_save(&mut next.clone()).unwrap();
        write_first(&store, plan, 1);
        assert_eq!(store.load(&key()).unwrap().unwrap(), appended);
        store.save(&mut next).unwrap();
        assert_eq!(store.load(&key()).unwrap().unwrap(), next);
        assert_eq!(
            previews(&next)[3..],
            ["on it", "VIP", "thanks"],
            "{:?}",
            previews(&next)
        );

        // A customer's message the snapshot does not count yet is appended with the reply; the
        // journal's replay makes up the rest of what it did, and skips its entry.
        let snapshot = store.tree.get(snapshot_key(&key())).unwrap();
        let more = Inbound {
            reply_token: Some("token-5".into()),
            ..text(5, "one more thing")
        };
        let mut asked = next.clone();
        asked.apply(&more, &settings());
        replies(&store, &mut asked, "c2", "sure", T0 + 40);
        assert_eq!(store.tree.get(snapshot_key(&key())).unwrap(), snapshot);
        let mut replayed = store.load(&key()).unwrap().unwrap();
        assert_eq!(replayed.applied_seq, 4);
        replayed.apply(&more, &settings());
        replayed.forget_spent_reply_token();
        assert_eq!(replayed, asked);

        // An entry neither an agent's nor an event's is a whole save.
        let overflow = [Content::Text {
            text: "busy".into(),
        }];
        asked.record_automated(&overflow, "demo.user.Ucustomer.1/auto/busy", T0 + 50, false);
        store.append(&mut asked).unwrap();
        assert_ne!(store.tree.get(snapshot_key(&key())).unwrap(), snapshot);
        assert_eq!(store.load(&key()).unwrap().unwrap(), asked);
    }

    /// A run past the snapshot's entries counts only if appended and where they end.
    #[test]
    fn runs_past_the_snapshot_count_only_if_appended_and_in_line() {
        let (_dir, store, saved) = saved_twice_asked();
        let id = saved.current.as_ref().unwrap().id.clone();
        let entry = |says: &str| {
            let mut state = saved.clone();
            state.apply(&text(9, says), &settings());
            state.current.unwrap().transcript[2].clone()
        };
        let mut gap = encode(&[entry("gap")]);
        gap.push(b'\n');
        store.tree.insert(transcript_key(&id, 3), gap).unwrap();
        assert_eq!(
            previews(&store.load(&key()).unwrap().unwrap()),
            ["hello", "anyone?"]
        );
        let cut = encode(&[entry("cut")]);
        store.tree.insert(transcript_key(&id, 2), cut).unwrap();
        assert_eq!(
            previews(&store.load(&key()).unwrap().unwrap()),
            ["hello", "anyone?"]
        );
        let mut appended = encode(&[entry("appended")]);
        appended.push(b'\n');
        store.tree.insert(transcript_key(&id, 2), appended).unwrap();
        let loaded = store.load(&key()).unwrap().unwrap();
        assert_eq!(previews(&loaded), ["hello", "anyone?", "appended", "gap"]);
        assert_eq!(loaded.saved_transcript_len, Some(4));
    }

    #[test]
    fn a_save_that_changes_routing_or_an_entry_is_one_batch() {
        let (_dir, store, saved) = saved_twice_asked();
        let agent = linedesk_actors::domain::AgentId::parse("alice").unwrap();
        let mut assigned = saved.clone();
        assigned.assign(&agent, T0 + 10, &settings()).unwrap();
        assert!(!store.plan_save(&mut assigned).unwrap().key_by_key);

        let mut unsent = saved.clone();
        let unsend = Inbound {
            kind: InboundKind::Unsend {
                message_id: "m1".into(),
            },
            ..text(3, "")
        };
        unsent.apply(&unsend, &settings());
        assert!(!store.plan_save(&mut unsent).unwrap().key_by_key);

        // A format 3 snapshot does not count its entries: they are all its own, and its next
        // save is one batch.
        let mut old = saved.clone();
        old.v = 3;
        old.saved_transcript_len = None;
        store
            .tree
            .insert(snapshot_key(&key()), encode_snapshot(&mut old))
            .unwrap();
        let mut loaded = store.load(&key()).unwrap().unwrap();
        assert_eq!(previews(&loaded), ["hello", "anyone?"]);
        loaded.apply(&text(3, "hello??"), &settings());
        assert!(!store.plan_save(&mut loaded).unwrap().key_by_key);
    }

    #[test]
    fn a_list_entry_with_broken_framing_is_an_error_not_a_panic() {
        assert!(split_entry(&[ARCHIVED_ENTRY, 0, 0]).is_err());
        assert!(split_entry(&[ARCHIVED_ENTRY, 0, 0, 1, 0, b'{']).is_err());
        assert_eq!(split_entry(b"{}").unwrap(), (&b"{}"[..], None));
    }
}
