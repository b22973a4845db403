//! Workstreams bind a LINE account to routing, and classification rules decide where a new
//! conversation waits: queue, required skills, priority. Plain data and functions; the
//! conversation actor classifies a conversation when it first queues.

mod automated;
mod hours;
mod rules;

pub use automated::{AutomatedMessage, AutomatedMessages, Slots};
pub use hours::OperatingHours;
pub use rules::{classify, Classification, Classified, ClassifyInput, Conditions, Rule, RuleError};

use std::collections::HashMap;

use crate::domain::{AccountId, AgentId};

/// How conversations of one account are routed. Declared in config today; the admin API will
/// create them later, so nothing here assumes a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workstream {
    pub id: String,
    pub account: AccountId,
    /// The language the workstream serves (its automated messages, later).
    pub language: String,
    /// Where a conversation waits when no rule matches.
    pub default_queue: String,
    /// Where a conversation waits when a rule could not be evaluated.
    pub fallback_queue: String,
    /// A customer returning to a `waiting` conversation goes back to the same agent.
    pub keep_same_agent: bool,
    /// Capacity units one LINE conversation of this workstream takes from an agent.
    pub capacity_units: u32,
    /// Agents' messages show their name and icon on the customer's screen.
    pub show_sender: bool,
    /// Customers may send images, video, audio and files (else they are told it is not possible).
    pub customer_attachments: bool,
    /// Agents may send images and files.
    pub agent_attachments: bool,
    /// When agents are there; always, when `None`.
    pub hours: Option<OperatingHours>,
}

/// Every workstream and rule, as the conversation actors use them to classify.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    pub workstreams: Vec<Workstream>,
    pub rules: Vec<Rule>,
    /// Queue ids, to check transfer targets.
    pub queues: Vec<String>,
    /// Queue id → the name customers see (`{queue_name}`).
    pub queue_names: HashMap<String, String>,
    /// Agent id → the name customers see (`{agent_name}`, the sender of their messages).
    pub agent_names: HashMap<AgentId, String>,
    pub automated: AutomatedMessages,
}

impl RoutingTable {
    pub fn workstream_of(&self, account: &AccountId) -> Option<&Workstream> {
        self.workstreams.iter().find(|w| &w.account == account)
    }
}
