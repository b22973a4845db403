//! Domain identifiers shared by the actors and the server.

mod ids;

pub use ids::{AccountId, ConversationKey, IdError, LineSource};
