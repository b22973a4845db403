//! The port through which conversations persist. The server implements it over sled; actor
//! tests use an in-memory one.

use crate::domain::{ConversationId, ConversationKey, Inbound};

use super::state::{Conversation, ConversationState};

/// A storage failure, described for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Blocking calls: implementations must be fast (an embedded database), since actors call them
/// from their handlers.
pub trait ConversationStore: Send + Sync + 'static {
    /// The latest snapshot of a chat, if it has one.
    fn load(&self, key: &ConversationKey) -> Result<Option<ConversationState>, StoreError>;
    /// Journal events of a chat after `after_seq`, in order.
    fn events_after(
        &self,
        key: &ConversationKey,
        after_seq: u64,
    ) -> Result<Vec<Inbound>, StoreError>;
    /// Writes a snapshot; also keeps the listing and timer indexes current and forgets the
    /// chat's pending mark when the snapshot covers its journal. `&mut`: a store that keeps the
    /// open conversation's transcript apart marks what it saved ([`super::state::Transcript`]).
    fn save(&self, state: &mut ConversationState) -> Result<(), StoreError>;
    /// Stores the transcript entries agents added since the last save, and nothing else, for a
    /// state that changed in nothing but what loading those entries makes up for (the
    /// conversation's last update, the reply token an agent's message took). Cheaper than
    /// [`ConversationStore::save`], which a store may do instead.
    fn append(&self, state: &mut ConversationState) -> Result<(), StoreError> {
        self.save(state)
    }
    /// Stores a closed conversation for good. Idempotent: replay may archive it again.
    fn archive(&self, conversation: &Conversation) -> Result<(), StoreError>;
    /// Hides an unsent message in an archived conversation.
    fn hide_archived_message(
        &self,
        id: &ConversationId,
        message_id: &str,
    ) -> Result<(), StoreError>;
    /// Chats whose journal has events no snapshot covers yet (to resume at start-up).
    fn pending(&self) -> Result<Vec<(ConversationKey, u64)>, StoreError>;
    /// Timer index entries due at `now_ms`, at most `limit`.
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<DueTimer>, StoreError>;
    /// Removes a timer index entry that the chat's snapshot does not name (left by a save a
    /// crash cut short): else it would fire at every sweep.
    fn discard_timer(&self, key: &ConversationKey, deadline_ms: u64) -> Result<(), StoreError>;
}

/// A timer index entry that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub key: ConversationKey,
    pub deadline_ms: u64,
}
