//! Everything that speaks LINE's language: webhook signatures, the webhook event types and
//! their translation into the actors' domain events; and outbound, the Messaging API client,
//! the conversion of content to LINE message objects, and the rate limit and retry policy the
//! outbox applies around the client.

pub mod backoff;
pub mod client;
pub mod events;
pub mod inbound;
pub mod outgoing;
pub mod rate_limit;
pub mod signature;
