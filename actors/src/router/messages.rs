//! Messages of the router actor.

use std::collections::BTreeMap;

use actix::prelude::*;

use super::state::{Presence, RouterError};
use crate::domain::{AgentId, ConversationId};

/// From conversations: what routing must know about them. Sent with `do_send`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum ConversationNotice {
    /// The conversation waits for an agent (first time, or again: it keeps `since_ms`).
    Queued {
        conversation: ConversationId,
        queue: String,
        skills: BTreeMap<String, u8>,
        priority: i32,
        since_ms: i64,
        units: u32,
        /// Transferred to this agent: offer it to them before anyone else.
        direct_to: Option<AgentId>,
    },
    /// The agent's capacity for this conversation is free again.
    Released {
        agent: AgentId,
        conversation: ConversationId,
    },
    /// The customer came back to a waiting conversation: the same agent takes it again.
    Reclaimed {
        agent: AgentId,
        conversation: ConversationId,
        units: u32,
    },
    /// Closed while waiting or offered: forget it.
    Closed { conversation: ConversationId },
}

impl ConversationNotice {
    /// The conversation the notice is about.
    pub fn conversation(&self) -> &ConversationId {
        match self {
            Self::Queued { conversation, .. }
            | Self::Released { conversation, .. }
            | Self::Reclaimed { conversation, .. }
            | Self::Closed { conversation } => conversation,
        }
    }
}

/// Why the router refused an agent's request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error("the conversation could not be assigned: {0}")]
    Conversation(String),
    #[error("unknown presence `{0}` (available, busy, do_not_disturb, away, offline)")]
    BadPresence(String),
}

/// An agent chose a presence.
#[derive(Debug, Message)]
#[rtype(result = "Result<Presence, RoutingError>")]
pub struct SetPresence {
    pub agent: AgentId,
    pub presence: Presence,
}

/// An agent accepts an offer; the first accept wins.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), RoutingError>")]
pub struct AcceptOffer {
    pub agent: AgentId,
    pub conversation: ConversationId,
}

/// An agent rejects an offer: it goes to the next agent.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), RoutingError>")]
pub struct RejectOffer {
    pub agent: AgentId,
    pub conversation: ConversationId,
}

/// The agent's last connection closed and the reconnect grace ran out.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AgentGone {
    pub agent: AgentId,
}

/// A conversation that was open when linedesk stopped, as its last snapshot has it.
#[derive(Debug, Clone)]
pub struct OpenConversation {
    pub conversation: ConversationId,
    pub status: crate::conversation::Status,
    pub agent: Option<AgentId>,
    pub routing: Option<crate::conversation::RoutingInfo>,
    pub since_ms: i64,
    pub capacity_held: bool,
}

/// After a restart, sent by start-up once the server listens: one chunk of the open
/// conversations of the last run, to rebuild the queues and the agents' loads, so nothing
/// waiting is forgotten and agents get their conversations back. The open conversations come in
/// several chunks, with other messages handled between them; a conversation the router heard
/// about from its own actor since it started (see [`Router::restoring`]) is newer than its
/// chunk and is skipped. The reply is how many of the chunk were restored.
///
/// [`Router::restoring`]: super::actor::Router::restoring
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct RestoreRouting {
    pub conversations: Vec<OpenConversation>,
    /// The last chunk: the router stops remembering which conversations it heard about.
    pub last: bool,
}

/// Router counters.
#[derive(Debug, Message)]
#[rtype(result = "RouterStats")]
pub struct GetRouterStats;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub waiting: usize,
    pub offers: u64,
    pub assignments: u64,
}

/// A waiting conversation's 1-based place in its queue (`None` if it is not waiting: offered,
/// assigned or unknown). Sent by a conversation for its "you are number N" message.
#[derive(Debug, Message)]
#[rtype(result = "Option<usize>")]
pub struct GetQueuePosition {
    pub conversation: crate::domain::ConversationId,
}
