//! Agents: one [`Agent`] actor per configured agent, however many websocket connections
//! (tabs, phone and desktop) it has. Every connection gets every event; when the last one drops,
//! the agent's conversations stay theirs for the reconnect grace, then go back to their queues.

mod actor;
mod messages;

pub use actor::Agent;
pub use messages::*;
