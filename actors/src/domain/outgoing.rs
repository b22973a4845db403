//! What linedesk sends to a customer: an agent's message or an automated one, with the reply
//! token it may use. The server turns it into LINE requests; a bot will send the same type.

use serde::{Deserialize, Serialize};

use super::{AgentId, Content, ConversationId, ConversationKey};

/// One outgoing unit: stored once in the outbox, then sent as one or more LINE requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// Stable across retries and replays ("{conversation}/agent/{client_msg_id}",
    /// "{conversation}/auto/{trigger}/{n}"): storing it twice keeps one copy.
    pub id: String,
    pub key: ConversationKey,
    pub conversation: ConversationId,
    pub origin: Origin,
    /// In order; more than LINE's 5 per request are split into several requests.
    pub contents: Vec<Content>,
    /// Buttons under the last message (LINE shows them on phones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quick_replies: Vec<QuickReply>,
    /// The customer's fresh reply token, if it was not used yet: free to send with.
    pub reply_token: Option<ReplyToken>,
    /// Show the agent's name and icon on the bubble (the workstream's `sender` switch).
    #[serde(default)]
    pub show_sender: bool,
    pub created_at_ms: i64,
}

/// Who a message comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Origin {
    Agent {
        agent: AgentId,
        client_msg_id: String,
    },
    /// linedesk's automated messages (greeting, queue position, ...).
    Automated { trigger: Trigger },
}

/// A LINE reply token and when its webhook arrived: usable once, for about a minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyToken {
    pub token: String,
    pub received_at_ms: i64,
}

/// A quick-reply button that sends `text` as the customer's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickReply {
    pub label: String,
    pub text: String,
}

/// When an automated message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The first conversation of a customer opened.
    Greeting,
    /// The conversation waits for an agent (`{position}` in its queue).
    Queued,
    /// An agent took the conversation.
    Assigned,
    /// The agent ended the conversation.
    Ended,
    /// The conversation closed.
    Closed,
    /// The customer wrote outside the workstream's operating hours.
    OutsideHours,
    /// The queue overflowed.
    Overflow,
    /// An agent transferred the conversation.
    Transfer,
    /// "This conversation may be monitored and recorded", before the first agent message.
    Consent,
    /// The customer sent an attachment the workstream does not accept.
    AttachmentRefused,
}

impl Trigger {
    pub const ALL: [Trigger; 10] = [
        Self::Greeting,
        Self::Queued,
        Self::Assigned,
        Self::Ended,
        Self::Closed,
        Self::OutsideHours,
        Self::Overflow,
        Self::Transfer,
        Self::Consent,
        Self::AttachmentRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Greeting => "greeting",
            Self::Queued => "queued",
            Self::Assigned => "assigned",
            Self::Ended => "ended",
            Self::Closed => "closed",
            Self::OutsideHours => "outside_hours",
            Self::Overflow => "overflow",
            Self::Transfer => "transfer",
            Self::Consent => "consent",
            Self::AttachmentRefused => "attachment_refused",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }
}

/// What LINE tells about a customer (their profile), as linedesk keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerProfile {
    pub display_name: Option<String>,
    pub picture_url: Option<String>,
    /// BCP 47, when the customer agreed to share it.
    pub language: Option<String>,
    pub status_message: Option<String>,
}

/// Where an outgoing message stands: shown to agents and in the transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Stored, not yet accepted by LINE (waiting for its turn, or retrying).
    Queued {
        #[serde(default)]
        attempts: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    },
    /// LINE accepted it with the customer's reply token (free).
    SentReply { at_ms: i64 },
    /// LINE accepted it as a push (counts against the monthly quota).
    SentPush { at_ms: i64 },
    /// It will not be sent: LINE refused it for good, or the monthly quota is used up.
    Failed { at_ms: i64, reason: String },
}

impl DeliveryStatus {
    /// LINE accepted it (as a reply or a push).
    pub fn is_sent(&self) -> bool {
        matches!(self, Self::SentReply { .. } | Self::SentPush { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued { .. } => "queued",
            Self::SentReply { .. } => "sent_reply",
            Self::SentPush { .. } => "sent_push",
            Self::Failed { .. } => "failed",
        }
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Queued { .. })
    }
}
