//! The router: which waiting conversation is offered to which agent next.
//!
//! [`state::RouterState`] is the whole decision as plain data: queues, agents with their skills,
//! capacity and presence, waiting conversations, outstanding offers and assignments. It does no
//! I/O and reads no clock (methods that need time take `now_ms`), so the router actor can stay a
//! thin shell around it and tests and benches drive it directly.

pub mod actor;
pub mod messages;
pub mod state;

pub use state::{
    AgentSpec, Assignment, HeldConversation, HoldKind, Offer, Presence, QueueId, QueueSpec,
    RouterError, RouterSettings, RouterState, RoutingStatus, SkillMatch, Skills,
    WaitingConversation, MAX_PROFICIENCY, MIN_PROFICIENCY,
};
