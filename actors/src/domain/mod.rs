//! Domain identifiers and the inbound event model shared by the actors and the server.

pub(crate) mod ids;
mod inbound;
mod outgoing;

pub use ids::{AccountId, AgentId, ConversationId, ConversationKey, IdError, LineSource};
pub use inbound::{Content, Inbound, InboundKind};
pub use outgoing::{
    CustomerProfile, DeliveryStatus, Origin, Outgoing, QuickReply, ReplyToken, Trigger,
};
