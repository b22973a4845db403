//! Everything that speaks LINE's language: webhook signatures and the webhook event types.

pub mod events;
pub mod signature;
