//! Ports for talking back to the customer, implemented by the server: the durable outbox
//! (sled) and the contact book (LINE profiles).

use std::time::Duration;

use actix::prelude::*;

use crate::conversation::StoreError;
use crate::domain::{ConversationId, ConversationKey, CustomerProfile, Outgoing};

/// Where conversations put what must reach the customer. Blocking and fast, like the
/// conversation store: the message is durable (with the next flush) when `enqueue` returns.
pub trait Outbox: Send + Sync + 'static {
    /// Stores the message for sending unless one with its id is stored already; answers
    /// whether it was new. `known_new`: the caller knows that none is (a store may then spare
    /// itself the look).
    fn enqueue(&self, outgoing: &Outgoing, known_new: bool) -> Result<bool, StoreError>;
    /// The ids of the messages stored for conversation `conversation`, whatever their status.
    fn stored_for(&self, conversation: &ConversationId) -> Result<Vec<String>, StoreError>;
}

/// Profiles LINE gave for customers, as far as they are known now (no network).
pub trait ContactBook: Send + Sync + 'static {
    fn cached(&self, key: &ConversationKey) -> Option<CustomerProfile>;
}

/// Fetches (or refreshes) a customer's profile from LINE; `None` when LINE has none for them
/// (blocked, not a friend) or it could not be fetched. Sent by conversations before they
/// classify a new conversation.
#[derive(Debug, Message)]
#[rtype(result = "Option<CustomerProfile>")]
pub struct LookupProfile {
    pub key: ConversationKey,
}

/// How conversations send.
#[derive(Clone)]
pub struct OutboundLinks {
    pub outbox: std::sync::Arc<dyn Outbox>,
    pub contacts: std::sync::Arc<dyn ContactBook>,
    pub lookup: Option<Recipient<LookupProfile>>,
    /// Replies are used only with tokens younger than this (LINE: about a minute).
    pub reply_token_ttl: Duration,
    /// How long a new conversation waits for the customer's profile before it is classified
    /// without it.
    pub profile_wait: Duration,
}
