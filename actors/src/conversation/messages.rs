//! Messages of the conversation actors and their registry.

use actix::prelude::*;

use crate::domain::{AgentId, Content, ConversationKey, Inbound, QuickReply};

use super::state::{ConversationState, TransitionError};
use super::store::StoreError;

/// Why a conversation could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// Recovering after a restart; the caller may retry.
    #[error("the conversation is recovering")]
    NotReady,
    #[error("the conversation actor is unreachable: {0}")]
    Unreachable(String),
    #[cfg(feature = "fault-injection")]
    #[error("injected fault")]
    Injected,
}

// Messages to one conversation (through the registry).

/// The journal holds events for this chat up to `seq`: apply what is new.
/// Sent by the registry as the journal stored them; the reply is for tests.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ConversationError>")]
pub struct JournalAppended {
    pub seq: u64,
    /// The new events, when the journal handed them over; else (and whenever the actor has
    /// not applied everything up to `after`) it reads them from the journal.
    pub events: Vec<Inbound>,
    /// The latest sequence the registry told this actor about before.
    pub after: u64,
}

/// The chat's state, brought up to date with the journal first, so a caller that saw its
/// webhook acknowledged also sees its effect.
#[derive(Debug, Message)]
#[rtype(result = "Result<ConversationView, ConversationError>")]
pub struct GetConversation;

/// What [`GetConversation`] answers.
#[derive(Debug, Clone)]
pub struct ConversationView {
    /// For an agent action, the transcript holds only the latest entries (see
    /// `transcript_from`): those an assigned agent is shown, none after any other action. The
    /// whole of a conversation open for days was copied at every message an agent sent.
    pub state: ConversationState,
    /// Index in the conversation's transcript of the first entry `state` holds (0: all).
    pub transcript_from: usize,
    /// Times supervision restarted this actor since it was started.
    pub restarts: u32,
    /// Whether the request changed anything (false for a query, or a retried `send`).
    pub changed: bool,
}

/// Fires due timers. Sent by the registry when the timer index says the chat is due.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ConversationError>")]
pub struct Tick {
    pub now_ms: i64,
    /// The deadline of the timer index entry that fired.
    pub indexed_ms: u64,
}

/// What an agent (or the router on its behalf) does to a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentAction {
    Assign,
    SetWaiting,
    End,
    WrapUpDone,
    Requeue {
        reason: String,
    },
    /// A message to the customer; `client_msg_id` makes a retry harmless.
    Send {
        content: Content,
        client_msg_id: String,
        /// Buttons under the message.
        quick_replies: Vec<QuickReply>,
    },
    /// A note for agents only.
    Note {
        text: String,
    },
    /// Hand the conversation to a queue or another agent.
    Transfer {
        to: super::state::TransferTarget,
    },
}

/// Applies an agent's action; the reply is the new state or why it was refused.
#[derive(Debug, Message)]
#[rtype(result = "Result<ConversationView, ConversationError>")]
pub struct ApplyAgentAction {
    pub agent: AgentId,
    pub action: AgentAction,
}

/// The router moved this waiting conversation on because its queue overflowed (`to_queue`),
/// or left it in place (`None`); the customer gets the workstream's overflow message.
#[derive(Debug, Message)]
#[rtype(result = "Result<ConversationView, ConversationError>")]
pub struct QueueOverflowed {
    pub to_queue: Option<String>,
}

/// Writes a snapshot now (shutdown).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ConversationError>")]
pub struct SnapshotNow;

/// Test hook: the next journal notification fails as an unrecoverable error would.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct InjectFault;

// Messages to the registry.

/// Events for `key` up to `seq` are stored in the journal. Sent by the journal's writer, in
/// sequence order, with the events themselves (or none: the conversation reads the journal).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EventsStored {
    pub key: ConversationKey,
    pub seq: u64,
    /// Every new event of `key` up to `seq` that was not told before, oldest first; or empty.
    pub events: Vec<Inbound>,
}

/// A conversation idle for `conversation.idle_passivate_ms` asks to stop. The registry agrees
/// (`true`, and forgets the actor) unless events arrived that the actor has not applied.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct ConversationIdle {
    pub key: ConversationKey,
    pub applied_seq: u64,
}

/// Asks one chat's actor, starting it if it is passivated.
#[derive(Debug, Message)]
#[rtype(result = "Result<ConversationView, ConversationError>")]
pub struct AskConversation {
    pub key: ConversationKey,
    pub question: Question,
}

#[derive(Debug)]
pub enum Question {
    Get,
    Agent(ApplyAgentAction),
    Overflowed(QueueOverflowed),
    #[cfg(feature = "fault-injection")]
    InjectFault,
}

/// Snapshots every live conversation that has unsaved events (shutdown); answers how many
/// conversations confirmed.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct SnapshotAll;

/// Counters of the registry.
#[derive(Debug, Message)]
#[rtype(result = "RegistryStats")]
pub struct GetRegistryStats;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Conversation actors alive now.
    pub live: usize,
    pub started: u64,
    pub passivated: u64,
}
