//! Everything that speaks LINE's language: webhook signatures, the webhook event types, and
//! their translation into the actors' domain events.

pub mod events;
pub mod inbound;
pub mod signature;
