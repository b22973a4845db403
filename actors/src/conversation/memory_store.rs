//! An in-memory [`ConversationStore`] for actor tests (the server's tests use sled).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::domain::{ConversationId, ConversationKey, Inbound};

use super::state::{Conversation, ConversationState};
use super::store::{ConversationStore, DueTimer, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    journal: BTreeMap<(ConversationKey, u64), Inbound>,
    pending: HashMap<ConversationKey, u64>,
    snapshots: HashMap<ConversationKey, ConversationState>,
    archive: HashMap<ConversationId, Conversation>,
    /// Timer index entries no snapshot names, as a save cut short by a crash leaves them.
    stray_timers: Vec<DueTimer>,
}

impl MemoryStore {
    /// Appends to the journal, as the webhook would.
    pub fn append(&self, key: &ConversationKey, event: Inbound) {
        let mut inner = self.inner.lock().unwrap();
        inner.pending.insert(key.clone(), event.seq);
        inner.journal.insert((key.clone(), event.seq), event);
    }

    pub fn snapshot(&self, key: &ConversationKey) -> Option<ConversationState> {
        self.inner.lock().unwrap().snapshots.get(key).cloned()
    }

    pub fn archived(&self, id: &ConversationId) -> Option<Conversation> {
        self.inner.lock().unwrap().archive.get(id).cloned()
    }

    /// Leaves a timer index entry that no snapshot names.
    pub fn add_stray_timer(&self, timer: DueTimer) {
        self.inner.lock().unwrap().stray_timers.push(timer);
    }

    pub fn stray_timers(&self) -> usize {
        self.inner.lock().unwrap().stray_timers.len()
    }
}

impl ConversationStore for MemoryStore {
    fn load(&self, key: &ConversationKey) -> Result<Option<ConversationState>, StoreError> {
        Ok(self.snapshot(key))
    }

    fn events_after(
        &self,
        key: &ConversationKey,
        after_seq: u64,
    ) -> Result<Vec<Inbound>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .journal
            .range((key.clone(), after_seq + 1)..=(key.clone(), u64::MAX))
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn save(&self, state: &mut ConversationState) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        if inner
            .pending
            .get(&state.key)
            .is_some_and(|seq| *seq <= state.applied_seq)
        {
            inner.pending.remove(&state.key);
        }
        // As the sled store does: the state says which deadline the index holds.
        state.indexed_deadline_ms = state.deadline_ms().map(|d| d.max(0) as u64);
        inner.snapshots.insert(state.key.clone(), state.clone());
        Ok(())
    }

    fn archive(&self, conversation: &Conversation) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        inner
            .archive
            .insert(conversation.id.clone(), conversation.clone());
        Ok(())
    }

    fn hide_archived_message(
        &self,
        id: &ConversationId,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(c) = inner.archive.get_mut(id) {
            for entry in c.transcript.iter_mut() {
                if entry.message_id.as_deref() == Some(message_id) {
                    entry.content = None;
                    entry.unsent = true;
                }
            }
        }
        Ok(())
    }

    fn pending(&self) -> Result<Vec<(ConversationKey, u64)>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.pending.iter().map(|(k, s)| (k.clone(), *s)).collect())
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<DueTimer>, StoreError> {
        let inner = self.inner.lock().unwrap();
        let stray = inner
            .stray_timers
            .iter()
            .filter(|t| t.deadline_ms <= now_ms.max(0) as u64)
            .cloned();
        Ok(inner
            .snapshots
            .values()
            .filter_map(|s| {
                let deadline = s.deadline_ms().filter(|d| *d <= now_ms)?;
                Some(DueTimer {
                    key: s.key.clone(),
                    deadline_ms: deadline.max(0) as u64,
                })
            })
            .chain(stray)
            .take(limit)
            .collect())
    }

    /// Its snapshots' timers are read from the snapshots themselves: only strays can go.
    fn discard_timer(&self, key: &ConversationKey, deadline_ms: u64) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        inner
            .stray_timers
            .retain(|t| (&t.key, t.deadline_ms) != (key, deadline_ms));
        Ok(())
    }
}
