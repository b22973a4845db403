//! Messages of the agent actor.

use actix::prelude::*;

use crate::conversation::{Author, Status};
use crate::domain::{AgentId, Content, ConversationId, DeliveryStatus};
use crate::router::state::Presence;

/// What an agent's connections are told. Sent by the router and by conversations to the agent
/// actor, which passes it to every connection.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum AgentEvent {
    /// A conversation is offered to this agent until `expires_at_ms`.
    Offer {
        conversation: ConversationId,
        queue: String,
        expires_at_ms: i64,
    },
    /// The offer is gone (taken on another connection, expired, conversation closed).
    OfferRevoked {
        conversation: ConversationId,
        reason: String,
    },
    /// The conversation is now this agent's, with its latest messages as of the assignment
    /// (some may have arrived after the offer was made).
    Assigned {
        conversation: ConversationId,
        recent: Vec<RecentMessage>,
    },
    /// Someone wrote in one of the agent's conversations.
    Message {
        conversation: ConversationId,
        author: Author,
        content: Content,
        preview: String,
        internal: bool,
        at_ms: i64,
    },
    /// One of the agent's conversations changed state.
    ConversationChanged {
        conversation: ConversationId,
        status: Status,
    },
    /// The agent's effective presence changed (chosen, or busy at full capacity).
    PresenceChanged { presence: Presence },
    /// What became of a message this agent sent. Sent by the server's outbound dispatcher.
    Delivery {
        conversation: ConversationId,
        client_msg_id: String,
        status: DeliveryStatus,
    },
}

/// A websocket connection of this agent opened. Answers what `hello` needs.
#[derive(Debug, Message)]
#[rtype(result = "Connected")]
pub struct Connect {
    pub sink: Recipient<AgentEvent>,
}

#[derive(Debug, Clone)]
pub struct Connected {
    pub session: u64,
    pub presence: Presence,
    pub conversations: Vec<ConversationId>,
}

/// A connection closed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub session: u64,
}

/// What one of the agent's connections did, for the others: the `message` an agent sent is
/// echoed to their other connections; the one that sent it has its `ack`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EchoToOthers {
    pub from_session: u64,
    pub event: AgentEvent,
}

/// The agent's identity, for the router's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCard {
    pub id: AgentId,
    pub name: String,
}

/// A transcript line as agents see it in offers and assignments.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentMessage {
    pub at_ms: i64,
    pub author: Author,
    pub preview: String,
}

impl RecentMessage {
    /// How many an `assigned` event carries.
    pub const SHOWN: usize = 20;

    /// The last `n` entries of the open conversation that are not agents' notes.
    pub fn latest(state: &crate::conversation::ConversationState, n: usize) -> Vec<Self> {
        let Some(current) = &state.current else {
            return Vec::new();
        };
        let visible: Vec<_> = current.transcript.iter().filter(|e| !e.internal).collect();
        visible[visible.len().saturating_sub(n)..]
            .iter()
            .map(|e| Self {
                at_ms: e.at_ms,
                author: e.author.clone(),
                preview: e.preview(),
            })
            .collect()
    }
}
