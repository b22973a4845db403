//! Domain identifiers and the inbound event model shared by the actors and the server.

mod ids;
mod inbound;

pub use ids::{AccountId, AgentId, ConversationId, ConversationKey, IdError, LineSource};
pub use inbound::{Content, Inbound, InboundKind};
