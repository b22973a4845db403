//! Conversations: one supervised actor per chat ([`Conversation`]), started and passivated by
//! the [`Registry`], persisted through a [`ConversationStore`], with the lifecycle in
//! [`state`].

mod actor;
mod messages;
mod registry;
pub mod state;
mod store;

#[cfg(test)]
mod memory_store;
#[cfg(test)]
mod tests;

pub use actor::now_ms;
pub use actor::{Conversation, ConversationEnv, ConversationLinks, RuntimeSettings};
pub use messages::*;
pub use registry::{LiveConversations, Registry, StoredEventsSink};
pub use state::{
    Author, Cause, ContactState, Conversation as ConversationRecord, ConversationSettings,
    ConversationState, Effect, RoutingInfo, Status, TranscriptEntry, TransferTarget, Transition,
    TransitionError,
};
pub use store::{ConversationStore, DueTimer, StoreError};

/// Ids of conversations, under the name the actor code reads best with.
pub(crate) type ConversationRecordId = crate::domain::ConversationId;
