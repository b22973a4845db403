//! Which conversations have journal events that no snapshot covers yet: after a crash those
//! conversations must be resumed, or a customer's message would wait until they write again.
//!
//! The marks are kept in memory. The event log already says which conversation each event
//! belongs to, so what a crash must not lose is only how far the log needs reading again:
//! - a checkpoint (`mchk`) says every event at or below it is covered; a start rebuilds the
//!   marks from the log's events past it. It is stored every so often, not per batch: a
//!   stale one only makes a start read a little more of the log;
//! - a conversation that stays uncovered for long (an actor that keeps failing, a chat with
//!   fewer events than `conversation.snapshot_every`) gets a `p` key of its own, so that the
//!   checkpoint can move past it, and the log's older segments can go.
//!
//! A snapshot saved before the checkpoint moved is in sled's log before the checkpoint, and
//! sled recovers a prefix of its log: a recovered checkpoint never claims an unsaved event.
//! Releases before this one also stored one `r` record per journal batch; they are read once
//! and removed (see [`Uncovered::load`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use linedesk_actors::domain::ConversationKey;

use super::{corrupt, decode_seq, StorageError};

pub(super) const RECORD: u8 = b'r';
pub(super) const PROMOTED: u8 = b'p';
pub(super) const CHECKPOINT: &[u8] = b"mchk";

/// Uncovered for this many events behind the newest, a conversation gets its own `p` key.
pub(super) const PROMOTE_AFTER: u64 = 4_096;

/// At most this many `p` keys per batch of webhooks: conversations that answer their customers without a
/// snapshot (appended transcript runs) fall behind together, and a thousand keys at once held
/// up the writer, and with it every webhook, for milliseconds. The rest go with the next
/// batches; the checkpoint waits for them meanwhile.
const PROMOTE_PER_BATCH: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Mark {
    /// No event of the conversation below this one is uncovered.
    first: u64,
    latest: u64,
    /// Has a `p` key, and no longer holds the checkpoint back.
    promoted: bool,
    /// Its uncovered events at or below this were set aside in sled (see the journal's
    /// `set_aside`), so the event log need not keep them; 0: none.
    aside: u64,
}

/// The in-memory marks, shared by the journal writer (which adds) and snapshot saves (which
/// clear).
#[derive(Debug)]
pub(super) struct Uncovered {
    marks: HashMap<ConversationKey, Mark>,
    /// Unpromoted marks by their first uncovered event: the lowest holds the checkpoint.
    by_first: BTreeSet<(u64, ConversationKey)>,
    /// Every event at or below it is covered by a snapshot.
    checkpoint: u64,
    /// The checkpoint sled has: what a start would read the log from.
    stored: u64,
    /// `r` records of an earlier release, to remove once the checkpoint is stored.
    legacy_records: Vec<Vec<u8>>,
    /// [`PROMOTE_AFTER`], smaller in tests.
    promote_after: u64,
}

/// The `p` keys a batch adds to sled.
#[derive(Debug, Default)]
pub(super) struct BatchMarks {
    pub inserts: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Uncovered {
    /// Loads the checkpoint and the `p` keys the last run left in the journal tree; the marks
    /// of the events past the checkpoint come from the event log (see [`Uncovered::add`]).
    pub fn load(tree: &sled::Tree, promote_after: u64) -> Result<Self, StorageError> {
        let mut this = Self {
            marks: HashMap::new(),
            by_first: BTreeSet::new(),
            checkpoint: 0,
            stored: 0,
            legacy_records: Vec::new(),
            promote_after,
        };
        if let Some(v) = tree.get(CHECKPOINT)? {
            this.checkpoint = decode_seq(CHECKPOINT, &v)?;
            this.stored = this.checkpoint;
        }
        for entry in tree.scan_prefix([PROMOTED]) {
            let (key, value) = entry?;
            let conversation = parse_conversation(&key, &key[1..])?;
            let (latest, first, aside) = decode_promoted(&key, &value)?;
            this.marks.insert(
                conversation,
                Mark {
                    first,
                    latest,
                    promoted: true,
                    aside,
                },
            );
        }
        for entry in tree.scan_prefix([RECORD]) {
            let (key, value) = entry?;
            let first = decode_seq(&key, key.get(1..).unwrap_or_default())?;
            let (_, conversations) = decode_record(&key, &value)?;
            this.legacy_records.push(key.to_vec());
            for (conversation, latest) in conversations {
                if latest > this.checkpoint {
                    this.add(conversation, first, latest);
                }
            }
        }
        Ok(this)
    }

    /// The conversations a restart must resume, with their latest event, in key order.
    pub fn pending(&self) -> Vec<(ConversationKey, u64)> {
        let sorted: BTreeMap<String, (&ConversationKey, u64)> = self
            .marks
            .iter()
            .map(|(k, m)| (k.to_string(), (k, m.latest)))
            .collect();
        sorted.into_values().map(|(k, s)| (k.clone(), s)).collect()
    }

    /// Records a batch's events: `latest` lists each conversation with its first and latest
    /// new sequence number, `last` the batch's last. Returns the `p` keys of the conversations
    /// it finds long uncovered, for sled before the checkpoint is next stored.
    pub fn batch(&mut self, last: u64, latest: &[(ConversationKey, u64, u64)]) -> BatchMarks {
        let mut out = BatchMarks::default();
        for (conversation, from, to) in latest {
            self.add(conversation.clone(), *from, *to);
        }
        self.promote(last, PROMOTE_PER_BATCH, &mut out);
        self.advance(last);
        out
    }

    /// Moves the checkpoint as far as the marks allow when no batch comes to carry it (idle,
    /// or shutting down), so that a restart resumes only what is really uncovered.
    pub fn settle(&mut self, last: u64) -> BatchMarks {
        let mut out = BatchMarks::default();
        self.promote(last, usize::MAX, &mut out);
        self.advance(last);
        out
    }

    /// The checkpoint to store, if it moved since it was last stored; the `p` keys the marks
    /// returned must be in sled first.
    pub fn to_store(&self) -> Option<u64> {
        let moved = self.checkpoint != self.stored || !self.legacy_records.is_empty();
        moved.then_some(self.checkpoint)
    }

    /// `checkpoint` is in sled now; so are the marks of earlier releases' records, which may go.
    pub fn stored(&mut self, checkpoint: u64) -> Vec<Vec<u8>> {
        self.stored = checkpoint;
        std::mem::take(&mut self.legacy_records)
    }

    fn promote(&mut self, last: u64, limit: usize, out: &mut BatchMarks) {
        let Some(&(oldest, _)) = self.by_first.first() else {
            return;
        };
        if oldest + self.promote_after >= last {
            return;
        }
        let below = last - self.promote_after / 2;
        for _ in 0..limit {
            let Some((first, conversation)) = self.by_first.pop_first() else {
                break;
            };
            if first >= below {
                self.by_first.insert((first, conversation));
                break;
            }
            let mark = self.marks.get_mut(&conversation).expect("marked");
            mark.promoted = true;
            out.inserts
                .push((promoted_key(&conversation), encode_promoted(mark)));
        }
    }

    fn advance(&mut self, last: u64) {
        self.checkpoint = self.by_first.first().map_or(last, |(first, _)| first - 1);
    }

    /// A snapshot of `conversation` covers its events up to `applied`; `next`, when known, is
    /// its first event after those. Returns the `p` key to remove when the conversation had one
    /// and is now covered.
    pub fn covered(
        &mut self,
        conversation: &ConversationKey,
        applied: u64,
        next: Option<u64>,
    ) -> Option<Vec<u8>> {
        let mark = self.marks.get_mut(conversation)?;
        if !mark.promoted {
            self.by_first.remove(&(mark.first, conversation.clone()));
        }
        if mark.latest <= applied {
            let promoted = mark.promoted;
            self.marks.remove(conversation);
            return promoted.then(|| promoted_key(conversation));
        }
        mark.first = mark.first.max(applied + 1).max(next.unwrap_or(0));
        if !mark.promoted {
            self.by_first.insert((mark.first, conversation.clone()));
        }
        None
    }

    /// `conversation` has events `first..=latest` (some perhaps covered already); at a start,
    /// one call per event of the log past the checkpoint, in order.
    pub fn add(&mut self, conversation: ConversationKey, first: u64, latest: u64) {
        match self.marks.get_mut(&conversation) {
            Some(mark) => mark.latest = mark.latest.max(latest),
            None => {
                // Events at or below the checkpoint are covered whatever a record says.
                let first = first.max(self.checkpoint + 1);
                self.by_first.insert((first, conversation.clone()));
                self.marks.insert(
                    conversation,
                    Mark {
                        first,
                        latest,
                        promoted: false,
                        aside: 0,
                    },
                );
            }
        }
    }

    /// Every event at or below it is covered by a snapshot, as last stored: a start reads
    /// the event log from the next one.
    pub fn stored_checkpoint(&self) -> u64 {
        self.stored
    }

    /// The conversation's first event no snapshot covers, if it has one uncovered.
    pub fn first_uncovered(&self, conversation: &ConversationKey) -> Option<u64> {
        self.marks.get(conversation).map(|m| m.first)
    }

    /// The event log need keep no event below it: those are covered (past the stored
    /// checkpoint, and before the first uncovered event of every conversation with a `p` key,
    /// which the checkpoint has moved past) or set aside in sled.
    pub fn covered_below(&self) -> u64 {
        self.marks
            .values()
            .filter(|m| m.promoted)
            .map(|m| m.first.max(m.aside + 1))
            .fold(self.stored + 1, u64::min)
    }

    /// The conversations with a `p` key whose uncovered events in the event log begin at or
    /// below `seq`: what holds a segment ending at `seq` once the checkpoint is past it.
    pub fn holding(&self, seq: u64) -> Vec<ConversationKey> {
        self.marks
            .iter()
            .filter(|(_, m)| m.promoted && m.first.max(m.aside + 1) <= seq)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// `conversation`'s uncovered events up to `through` are now set aside in sled; returns
    /// its `p` key and value saying so.
    pub fn set_aside(
        &mut self,
        conversation: &ConversationKey,
        through: u64,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let mark = self.marks.get_mut(conversation).filter(|m| m.promoted)?;
        mark.aside = mark.aside.max(through);
        Some((promoted_key(conversation), encode_promoted(mark)))
    }

    /// Up to where `conversation`'s events were set aside (0: none).
    pub fn aside(&self, conversation: &ConversationKey) -> u64 {
        self.marks.get(conversation).map_or(0, |m| m.aside)
    }

    /// Conversations with uncovered events, and how many of them have their own `p` key.
    pub fn counts(&self) -> (usize, usize) {
        let own = self.marks.len() - self.by_first.len();
        (self.marks.len(), own)
    }
}

fn promoted_key(conversation: &ConversationKey) -> Vec<u8> {
    let name = conversation.to_string();
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(PROMOTED);
    key.extend_from_slice(name.as_bytes());
    key
}

/// `last` (8 bytes), then one `conversation \t latest` line per conversation: the `r` records
/// of earlier releases.
fn decode_record(
    key: &[u8],
    value: &[u8],
) -> Result<(u64, Vec<(ConversationKey, u64)>), StorageError> {
    let (last, lines) = value
        .split_at_checked(8)
        .ok_or_else(|| corrupt(key, "too short"))?;
    let last = decode_seq(key, last)?;
    let lines = std::str::from_utf8(lines).map_err(|e| corrupt(key, e))?;
    let conversations = lines
        .lines()
        .map(|line| {
            let (name, latest) = line
                .split_once('\t')
                .ok_or_else(|| corrupt(key, "a line without a tab"))?;
            let conversation = ConversationKey::parse(name).map_err(|e| corrupt(key, e))?;
            let latest = latest.parse().map_err(|e| corrupt(key, e))?;
            Ok((conversation, latest))
        })
        .collect::<Result<_, StorageError>>()?;
    Ok((last, conversations))
}

/// `latest`, then the first uncovered event, then up to where its events are set aside.
fn encode_promoted(mark: &Mark) -> Vec<u8> {
    [
        mark.latest.to_be_bytes(),
        mark.first.to_be_bytes(),
        mark.aside.to_be_bytes(),
    ]
    .concat()
}

/// (latest, first, aside). A `p` key of an older release has only `latest`, and its first is
/// unknown: 0.
fn decode_promoted(key: &[u8], value: &[u8]) -> Result<(u64, u64, u64), StorageError> {
    let part = |i: usize| decode_seq(key, &value[i * 8..(i + 1) * 8]);
    match value.len() {
        8 => Ok((part(0)?, 0, 0)),
        16 => Ok((part(0)?, part(1)?, 0)),
        24 => Ok((part(0)?, part(1)?, part(2)?)),
        _ => Err(corrupt(key, "a promoted mark is 8, 16 or 24 bytes")),
    }
}

fn parse_conversation(key: &[u8], name: &[u8]) -> Result<ConversationKey, StorageError> {
    let name = std::str::from_utf8(name).map_err(|e| corrupt(key, e))?;
    ConversationKey::parse(name).map_err(|e| corrupt(key, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use linedesk_actors::domain::{AccountId, LineSource};

    /// Conversations that fall behind together get their `p` keys over several batches.
    #[test]
    fn a_batch_promotes_a_bounded_number_of_conversations() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("j").unwrap();
        let mut uncovered = Uncovered::load(&tree, 100).unwrap();
        let account = AccountId::parse("demo").unwrap();
        let behind: Vec<_> = (0..200u64)
            .map(|n| {
                let user = LineSource::user(format!("U{n:032x}")).unwrap();
                (ConversationKey::new(account.clone(), user), n + 1, n + 1)
            })
            .collect();
        let promoted = |out: &BatchMarks| {
            let p = |(key, _): &&(Vec<u8>, Vec<u8>)| key[0] == PROMOTED;
            out.inserts.iter().filter(p).count()
        };
        // 149 of them 50 events behind the newest: due.
        let mut counts = vec![promoted(&uncovered.batch(200, &behind))];
        for batch in 0..5u64 {
            let seq = 1_000 + batch;
            let other = LineSource::user(format!("V{batch:032x}")).unwrap();
            let newest = [(ConversationKey::new(account.clone(), other), seq, seq)];
            counts.push(promoted(&uncovered.batch(seq, &newest)));
        }
        assert_eq!(counts, [64, 64, 64, 8, 0, 0]);
        assert_eq!(uncovered.pending().len(), 205, "all still to resume");
    }
}
