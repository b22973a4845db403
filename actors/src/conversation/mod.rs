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

pub use actor::{Conversation, ConversationEnv, RuntimeSettings};
pub use messages::*;
pub use registry::Registry;
pub use state::{
    Author, Cause, ContactState, Conversation as ConversationRecord, ConversationSettings,
    ConversationState, Effect, Status, TranscriptEntry, Transition, TransitionError,
};
pub use store::{ConversationStore, StoreError};
