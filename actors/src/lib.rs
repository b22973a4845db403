//! `linedesk-actors`: the actors of linedesk, their messages and the domain state machines.
//!
//! This crate knows nothing of HTTP or of the storage engine: the server (`linedesk`) hands the
//! actors their ports (a [`conversation::ConversationStore`] over sled, recipients for outbound
//! traffic) at start-up.

pub mod agent;
pub mod conversation;
pub mod domain;
pub mod outbound;
pub mod router;
pub mod workstream;
