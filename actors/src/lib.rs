//! `linedesk-actors`: the actors of linedesk, their messages and the domain state machines.
//!
//! This crate knows nothing of HTTP or of the storage engine: the server (`linedesk`) hands the
//! actors their ports (recipients for outbound traffic, a snapshot store) at start-up.

pub mod domain;
