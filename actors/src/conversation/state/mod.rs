//! The conversation state machine: plain data and functions, no actors, no I/O.
//!
//! One [`ConversationState`] per chat (a LINE user, group or room of one account). It holds the
//! contact's standing (blocked or not), the current [`Conversation`] if one is open, and the ids
//! of earlier ones. A conversation moves
//! `open → bot → queued → active ⇄ waiting → wrap_up → closed`; every move is a [`Transition`]
//! with its time and [`Cause`]. Timers are deadlines in the state, fired by [`ConversationState::tick`]
//! with the current time, so they survive restarts and tests drive them with any clock.
//! Every method returns the [`Effect`]s the actor must carry out (archive a closed
//! conversation, ask the router for an agent, release capacity).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{
    AgentId, Content, ConversationId, ConversationKey, Inbound, InboundKind, ReplyToken, Trigger,
};

/// Snapshot format written by this release; older formats are upgraded on load.
///
/// 2: the sled store keeps the open conversation's transcript under keys of its own; a version 1
/// snapshot holds it inline and is read as before.
/// 3: the snapshot carries the deadline the store indexed ([`ConversationState::indexed_deadline_ms`]);
/// before, the sled store kept it under a key of its own.
/// 4: the snapshot says how many transcript entries it covers
/// ([`ConversationState::saved_transcript_len`]): a save may be written key by key.
/// 5: the sled store writes the entries a save adds or changes as one key (a run of entries),
/// where format 4 wrote a key per entry; both are read.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 5;

mod transcript;

/// Pushes without `Vec`'s first allocation of four slots: most conversations are short, and
/// each live one would otherwise carry three empty transcript entries and transitions.
pub(crate) fn push_compact<T>(items: &mut Vec<T>, item: T) {
    if items.len() == items.capacity() && items.len() < 4 {
        items.reserve_exact(1);
    }
    items.push(item);
}
pub use transcript::Transcript;

/// How long each state may last, and the routing switches the state machine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSettings {
    pub queued_timeout: Duration,
    pub active_timeout: Duration,
    pub waiting_timeout: Duration,
    /// How long an ended conversation keeps holding the agent's capacity.
    pub wrap_up_hold: Duration,
    /// When a conversation left in wrap-up closes by itself.
    pub wrap_up_timeout: Duration,
    /// A customer returning to a `waiting` conversation goes back to the same agent.
    pub keep_same_agent: bool,
    /// New conversations go to a bot first (the bot itself arrives later; off until then).
    pub bot_first: bool,
}

impl Default for ConversationSettings {
    /// Dynamics 365's defaults for social channels.
    fn default() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Self {
            queued_timeout: Duration::from_secs(30 * DAY),
            active_timeout: Duration::from_secs(30 * DAY),
            waiting_timeout: Duration::from_secs(30 * DAY),
            wrap_up_hold: Duration::from_secs(60),
            wrap_up_timeout: Duration::from_secs(DAY),
            keep_same_agent: true,
            bot_first: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// New, not yet handled.
    Open,
    /// A bot is answering.
    Bot,
    /// Waiting for an agent.
    Queued,
    /// Assigned to an agent.
    Active,
    /// Set aside by the agent until the customer answers; the agent's capacity is free.
    Waiting,
    /// The agent ended it and is finishing notes; capacity is held for a while.
    WrapUp,
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Bot => "bot",
            Self::Queued => "queued",
            Self::Active => "active",
            Self::Waiting => "waiting",
            Self::WrapUp => "wrap_up",
            Self::Closed => "closed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Open,
            Self::Bot,
            Self::Queued,
            Self::Active,
            Self::Waiting,
            Self::WrapUp,
            Self::Closed,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// Why a conversation moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Cause {
    /// The customer's first message opened it.
    CustomerMessage,
    /// No bot answers this workstream, so it went straight to the queue.
    NoBot,
    /// The bot handed over to a human.
    BotEscalated,
    AgentAssigned {
        agent: AgentId,
    },
    AgentSetWaiting {
        agent: AgentId,
    },
    /// The customer wrote while it was waiting.
    CustomerReturned,
    AgentEnded {
        agent: AgentId,
    },
    WrapUpDone {
        agent: AgentId,
    },
    /// Sent back to the queue (agent gone past the reconnect grace).
    Requeued {
        reason: String,
    },
    /// The agent handed it to a queue or another agent.
    Transferred {
        agent: AgentId,
        to: TransferTarget,
    },
    /// The state's auto-close timer ran out.
    Timeout {
        after_ms: u64,
    },
    /// The customer wrote during wrap-up: this one closes and a new one opens.
    Superseded,
    /// The account left the group or room.
    LeftChat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Option<Status>,
    pub to: Status,
    pub at_ms: i64,
    pub cause: Cause,
}

/// Who wrote a transcript entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Author {
    /// A LINE user; in groups the member who wrote, when LINE names them.
    Customer {
        user_id: Option<String>,
    },
    Agent {
        agent: AgentId,
    },
    Bot,
    /// linedesk itself: joins, leaves, follows, blocks.
    System,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    pub at_ms: i64,
    pub author: Author,
    /// LINE's message id, for customer messages (unsend refers to it).
    pub message_id: Option<String>,
    /// `None` once the customer unsent it: agents no longer see what it said.
    pub content: Option<Content>,
    pub unsent: bool,
    /// Journal sequence of the event this entry came from.
    pub seq: Option<u64>,
    /// The agent client's id for its message: a retried `send` is stored once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// An agent's note: visible to agents, never sent to the customer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// The outbox message carrying this entry to the customer (its delivery status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing: Option<String>,
}

impl TranscriptEntry {
    /// What agents see for this entry.
    pub fn preview(&self) -> String {
        match &self.content {
            Some(content) => content.preview(),
            None if self.unsent => "[message unsent by the customer]".into(),
            None => String::new(),
        }
    }
}

/// One conversation, from the customer's first message to its close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: ConversationId,
    pub status: Status,
    /// The agent it is assigned to (also kept in `waiting` and `wrap_up`).
    pub agent: Option<AgentId>,
    pub opened_at_ms: i64,
    pub updated_at_ms: i64,
    pub closed_at_ms: Option<i64>,
    /// When the current state's timer fires.
    pub deadline_ms: Option<i64>,
    /// In wrap-up: the agent's capacity is still taken.
    pub capacity_held: bool,
    /// Earlier conversations of the same chat, oldest first.
    pub previous: Vec<ConversationId>,
    /// Where classification put it (set when it first queues, kept on re-queues).
    #[serde(default)]
    pub routing: Option<RoutingInfo>,
    pub transitions: Vec<Transition>,
    pub transcript: Transcript,
    /// The monitoring and recording notice went out before the first agent message.
    #[serde(default)]
    pub consent_sent: bool,
}

impl Conversation {
    fn move_to(&mut self, to: Status, at_ms: i64, cause: Cause, settings: &ConversationSettings) {
        push_compact(
            &mut self.transitions,
            Transition {
                from: Some(self.status),
                to,
                at_ms,
                cause,
            },
        );
        self.status = to;
        self.updated_at_ms = at_ms;
        let after = |d: Duration| Some(at_ms.saturating_add(d.as_millis() as i64));
        self.deadline_ms = match to {
            Status::Open | Status::Bot => None,
            Status::Queued => after(settings.queued_timeout),
            Status::Active => after(settings.active_timeout),
            Status::Waiting => after(settings.waiting_timeout),
            Status::WrapUp => after(settings.wrap_up_hold.min(settings.wrap_up_timeout)),
            Status::Closed => None,
        };
        self.capacity_held = to == Status::WrapUp;
        if to == Status::Closed {
            self.closed_at_ms = Some(at_ms);
        }
    }

    fn timeout_of(status: Status, settings: &ConversationSettings) -> Duration {
        match status {
            Status::Queued => settings.queued_timeout,
            Status::Active => settings.active_timeout,
            Status::Waiting => settings.waiting_timeout,
            Status::WrapUp => settings.wrap_up_timeout,
            Status::Open | Status::Bot | Status::Closed => Duration::ZERO,
        }
    }
}

/// The outcome of classification, kept with the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingInfo {
    pub workstream: String,
    pub queue: String,
    pub skills: std::collections::BTreeMap<String, u8>,
    pub priority: i32,
    /// Capacity units the conversation takes from its agent.
    pub units: u32,
    /// The rule that matched, if one did.
    pub rule: Option<String>,
    /// Transferred to this agent: offer it to them first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_to: Option<AgentId>,
}

/// Where an agent transfers a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum TransferTarget {
    Queue(String),
    Agent(AgentId),
}

/// The contact behind a chat, as far as LINE tells us.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactState {
    /// The customer blocked the account (unfollow): nothing may be sent.
    pub blocked: bool,
    /// Friend of the account (follow seen and not undone).
    pub following: bool,
    pub last_seen_ms: Option<i64>,
}

/// What the actor must do after a state change. Replaying the journal produces the same
/// effects again, so each is idempotent where it is carried out.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Store this closed conversation for good (history, API); the state forgets its transcript.
    Archive(Box<Conversation>),
    /// The conversation waits for an agent.
    Enqueue { conversation: ConversationId },
    /// The agent's capacity for this conversation is free again.
    ReleaseCapacity {
        agent: AgentId,
        conversation: ConversationId,
    },
    /// The agent takes this conversation back (customer returned from waiting).
    ReclaimCapacity {
        agent: AgentId,
        conversation: ConversationId,
    },
    /// The customer wrote in a conversation an agent holds: the agent must see it.
    TellAgent {
        agent: AgentId,
        conversation: ConversationId,
        entry: Box<TranscriptEntry>,
    },
    /// Time for an automated message to the customer (if the workstream has it switched on).
    Automated {
        conversation: ConversationId,
        trigger: Trigger,
    },
    /// An unsent message belongs to an archived conversation, which must hide it too.
    HideArchivedMessage {
        conversation: ConversationId,
        message_id: String,
    },
}

/// Why an agent's action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("there is no open conversation")]
    NoConversation,
    #[error("conversation {id} is {status}, so it can't be {action}")]
    InvalidState {
        id: String,
        status: &'static str,
        action: &'static str,
    },
    #[error("conversation {id} is not assigned to agent {agent}")]
    NotYours { id: String, agent: String },
    #[error("bad transfer: {0}")]
    BadTarget(String),
    #[error("the customer blocked the account: LINE would not deliver it")]
    CustomerBlocked,
    #[error("{0}")]
    NotAllowed(String),
}

/// Everything a conversation actor owns; its snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationState {
    /// Snapshot format version ([`SNAPSHOT_FORMAT_VERSION`]).
    pub v: u16,
    pub key: ConversationKey,
    /// Highest journal sequence applied: recovery replays only what comes after it.
    pub applied_seq: u64,
    pub contact: ContactState,
    pub current: Option<Conversation>,
    /// Closed conversations of this chat, oldest first (their records are archived).
    pub history: Vec<ConversationId>,
    /// Events the state did not change on (beacon, membership, unknown types), for operators.
    pub other_events: u64,
    /// The latest reply token LINE gave, until it is used (replies are free, pushes are not).
    #[serde(default)]
    pub reply_token: Option<ReplyToken>,
    /// The deadline the store's timer index holds for this chat, as of the last save: set by
    /// the store, so that moving the index entry needs no read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed_deadline_ms: Option<u64>,
    /// How many entries of the open conversation's transcript the store held as of the last
    /// save: set by the store. A save cut short by a crash may leave entries past it; a load
    /// leaves those out and the journal replays their events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_transcript_len: Option<u32>,
}

impl ConversationState {
    pub fn new(key: ConversationKey) -> Self {
        Self {
            v: SNAPSHOT_FORMAT_VERSION,
            key,
            applied_seq: 0,
            contact: ContactState::default(),
            current: None,
            history: Vec::new(),
            reply_token: None,
            other_events: 0,
            indexed_deadline_ms: None,
            saved_transcript_len: None,
        }
    }

    /// When the next timer fires, if any.
    pub fn deadline_ms(&self) -> Option<i64> {
        self.current.as_ref().and_then(|c| c.deadline_ms)
    }

    /// Applies one journal event. Events at or below `applied_seq` were applied before and are
    /// ignored, which is what makes replay after a crash exactly-once.
    pub fn apply(&mut self, event: &Inbound, settings: &ConversationSettings) -> Vec<Effect> {
        if event.seq <= self.applied_seq {
            return Vec::new();
        }
        self.applied_seq = event.seq;
        let at = event.received_at_ms;
        let mut effects = Vec::new();
        // A redelivered event's token is assumed spent or expired (LINE's advice).
        if let (Some(token), false) = (&event.reply_token, event.redelivery) {
            self.reply_token = Some(ReplyToken {
                token: token.clone(),
                received_at_ms: at,
            });
        }
        match &event.kind {
            InboundKind::Message {
                message_id,
                content,
                ..
            } => {
                self.contact.last_seen_ms = Some(at);
                let entry = TranscriptEntry {
                    at_ms: at,
                    author: Author::Customer {
                        user_id: event.sender.clone(),
                    },
                    message_id: Some(message_id.clone()),
                    content: Some(content.clone()),
                    unsent: false,
                    seq: Some(event.seq),
                    client_msg_id: None,
                    internal: false,
                    outgoing: None,
                };
                self.customer_wrote(entry, at, settings, &mut effects);
            }
            InboundKind::Postback { data, .. } => {
                self.contact.last_seen_ms = Some(at);
                let entry = TranscriptEntry {
                    at_ms: at,
                    author: Author::Customer {
                        user_id: event.sender.clone(),
                    },
                    message_id: None,
                    content: Some(Content::Text {
                        text: format!("[postback: {data}]"),
                    }),
                    unsent: false,
                    seq: Some(event.seq),
                    client_msg_id: None,
                    internal: false,
                    outgoing: None,
                };
                self.customer_wrote(entry, at, settings, &mut effects);
            }
            InboundKind::Follow { unblocked } => {
                self.contact.following = true;
                self.contact.blocked = false;
                let note = if *unblocked {
                    "customer unblocked the account"
                } else {
                    "customer added the account as a friend"
                };
                self.note(note, at, event.seq);
            }
            InboundKind::Unfollow => {
                self.contact.following = false;
                self.contact.blocked = true;
                self.note(
                    "customer blocked the account; nothing more can be sent",
                    at,
                    event.seq,
                );
            }
            InboundKind::Unsend { message_id } => self.unsend(message_id, &mut effects),
            InboundKind::Joined => self.note("the account joined the chat", at, event.seq),
            InboundKind::Left => {
                self.note("the account left the chat", at, event.seq);
                if let Some(conversation) = &mut self.current {
                    if conversation.status != Status::Closed {
                        release_if_held(conversation, &mut effects);
                        conversation.move_to(Status::Closed, at, Cause::LeftChat, settings);
                    }
                }
                self.archive_closed(&mut effects);
            }
            InboundKind::MembersJoined { user_ids } => {
                self.note(&format!("joined: {}", user_ids.join(", ")), at, event.seq)
            }
            InboundKind::MembersLeft { user_ids } => {
                self.note(&format!("left: {}", user_ids.join(", ")), at, event.seq)
            }
            InboundKind::Other { .. } => self.other_events += 1,
        }
        effects
    }

    fn customer_wrote(
        &mut self,
        entry: TranscriptEntry,
        at: i64,
        settings: &ConversationSettings,
        effects: &mut Vec<Effect>,
    ) {
        if let Some(conversation) = &mut self.current {
            if conversation.status == Status::WrapUp {
                release_if_held(conversation, effects);
                conversation.move_to(Status::Closed, at, Cause::Superseded, settings);
                self.archive_closed(effects);
            }
        }
        let conversation = match &mut self.current {
            Some(conversation) => conversation,
            None => self.open(at, settings, effects),
        };
        // Replayed after a store kept its entry: the entry and the update are there already.
        if !entry
            .seq
            .is_some_and(|seq| conversation.transcript.holds_event(seq))
        {
            conversation.transcript.push(entry.clone());
            conversation.updated_at_ms = at;
        }
        if conversation.status == Status::Waiting {
            let agent = conversation.agent.clone();
            match agent {
                Some(agent) if settings.keep_same_agent => {
                    conversation.move_to(Status::Active, at, Cause::CustomerReturned, settings);
                    effects.push(Effect::ReclaimCapacity {
                        agent,
                        conversation: conversation.id.clone(),
                    });
                }
                _ => {
                    conversation.agent = None;
                    conversation.move_to(Status::Queued, at, Cause::CustomerReturned, settings);
                    effects.push(Effect::Enqueue {
                        conversation: conversation.id.clone(),
                    });
                }
            }
        }
        if let (Some(agent), Status::Active) = (&conversation.agent, conversation.status) {
            effects.push(Effect::TellAgent {
                agent: agent.clone(),
                conversation: conversation.id.clone(),
                entry: Box::new(entry),
            });
        }
    }

    /// Records where classification put the current conversation.
    pub fn set_routing(&mut self, routing: RoutingInfo) {
        if let Some(conversation) = &mut self.current {
            conversation.routing = Some(routing);
        }
    }

    /// Opens the next conversation of this chat and routes it (bot or queue).
    fn open(
        &mut self,
        at: i64,
        settings: &ConversationSettings,
        effects: &mut Vec<Effect>,
    ) -> &mut Conversation {
        let number = self.history.len() as u32 + 1;
        let mut conversation = Conversation {
            id: ConversationId::new(self.key.clone(), number),
            status: Status::Open,
            agent: None,
            opened_at_ms: at,
            updated_at_ms: at,
            closed_at_ms: None,
            deadline_ms: None,
            capacity_held: false,
            previous: self.history.clone(),
            routing: None,
            transitions: vec![Transition {
                from: None,
                to: Status::Open,
                at_ms: at,
                cause: Cause::CustomerMessage,
            }],
            transcript: Transcript::default(),
            consent_sent: false,
        };
        if settings.bot_first {
            conversation.move_to(Status::Bot, at, Cause::CustomerMessage, settings);
        } else {
            conversation.move_to(Status::Queued, at, Cause::NoBot, settings);
            effects.push(Effect::Enqueue {
                conversation: conversation.id.clone(),
            });
        }
        self.current.insert(conversation)
    }

    fn note(&mut self, text: &str, at: i64, seq: u64) {
        if let Some(conversation) = &mut self.current {
            if conversation.transcript.holds_event(seq) {
                return;
            }
            conversation.transcript.push(TranscriptEntry {
                at_ms: at,
                author: Author::System,
                message_id: None,
                content: Some(Content::Text { text: text.into() }),
                unsent: false,
                seq: Some(seq),
                client_msg_id: None,
                internal: false,
                outgoing: None,
            });
        }
    }

    fn unsend(&mut self, message_id: &str, effects: &mut Vec<Effect>) {
        let found = self.current.as_mut().and_then(|c| {
            c.transcript
                .find_mut(|e| e.message_id.as_deref() == Some(message_id))
        });
        match found {
            Some(entry) => {
                entry.content = None;
                entry.unsent = true;
            }
            // Not in the open conversation: it may be in a closed one.
            None => {
                if let Some(last) = self.history.last() {
                    effects.push(Effect::HideArchivedMessage {
                        conversation: last.clone(),
                        message_id: message_id.to_owned(),
                    });
                }
            }
        }
    }

    fn archive_closed(&mut self, effects: &mut Vec<Effect>) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.status == Status::Closed)
        {
            // unwrap: checked just above.
            let closed = self.current.take().unwrap();
            let told = closed
                .transitions
                .last()
                .is_some_and(|t| !matches!(t.cause, Cause::Superseded | Cause::LeftChat));
            if told && !self.contact.blocked {
                effects.push(Effect::Automated {
                    conversation: closed.id.clone(),
                    trigger: Trigger::Closed,
                });
            }
            push_compact(&mut self.history, closed.id.clone());
            effects.push(Effect::Archive(Box::new(closed)));
        }
    }

    /// Fires the timer if it is due at `now_ms`.
    pub fn tick(&mut self, now_ms: i64, settings: &ConversationSettings) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(conversation) = &mut self.current else {
            return effects;
        };
        if conversation.deadline_ms.is_none_or(|d| d > now_ms) {
            return effects;
        }
        let status = conversation.status;
        if status == Status::WrapUp && conversation.capacity_held {
            release_if_held(conversation, &mut effects);
            // The hold ran out first; the conversation itself closes at the wrap-up timeout.
            let entered = conversation.transitions.last().map_or(now_ms, |t| t.at_ms);
            let close_at = entered.saturating_add(settings.wrap_up_timeout.as_millis() as i64);
            if close_at > now_ms {
                conversation.deadline_ms = Some(close_at);
                return effects;
            }
        }
        release_if_held(conversation, &mut effects);
        if status == Status::Active {
            if let Some(agent) = conversation.agent.clone() {
                effects.push(Effect::ReleaseCapacity {
                    agent,
                    conversation: conversation.id.clone(),
                });
            }
        }
        let after_ms = Conversation::timeout_of(status, settings).as_millis() as u64;
        conversation.move_to(
            Status::Closed,
            now_ms,
            Cause::Timeout { after_ms },
            settings,
        );
        self.archive_closed(&mut effects);
        effects
    }

    /// The router gave the queued conversation to `agent`.
    pub fn assign(
        &mut self,
        agent: &AgentId,
        at: i64,
        settings: &ConversationSettings,
    ) -> Result<Vec<Effect>, TransitionError> {
        let conversation = self.expect(&[Status::Queued, Status::Bot], "assigned")?;
        conversation.agent = Some(agent.clone());
        if let Some(routing) = &mut conversation.routing {
            routing.direct_to = None;
        }
        conversation.move_to(
            Status::Active,
            at,
            Cause::AgentAssigned {
                agent: agent.clone(),
            },
            settings,
        );
        Ok(vec![Effect::Automated {
            conversation: conversation.id.clone(),
            trigger: Trigger::Assigned,
        }])
    }

    /// The agent sets the conversation aside until the customer answers.
    pub fn set_waiting(
        &mut self,
        agent: &AgentId,
        at: i64,
        settings: &ConversationSettings,
    ) -> Result<Vec<Effect>, TransitionError> {
        let conversation = self.expect_agent(agent, &[Status::Active], "set waiting")?;
        conversation.move_to(
            Status::Waiting,
            at,
            Cause::AgentSetWaiting {
                agent: agent.clone(),
            },
            settings,
        );
        Ok(vec![Effect::ReleaseCapacity {
            agent: agent.clone(),
            conversation: conversation.id.clone(),
        }])
    }

    /// The agent ends the conversation: wrap-up, capacity held for `wrap_up_hold`.
    pub fn end(
        &mut self,
        agent: &AgentId,
        at: i64,
        settings: &ConversationSettings,
    ) -> Result<Vec<Effect>, TransitionError> {
        let conversation = self.expect_agent(agent, &[Status::Active, Status::Waiting], "ended")?;
        let was_waiting = conversation.status == Status::Waiting;
        conversation.move_to(
            Status::WrapUp,
            at,
            Cause::AgentEnded {
                agent: agent.clone(),
            },
            settings,
        );
        if was_waiting {
            // Capacity was already free while waiting; wrap-up does not take it again.
            conversation.capacity_held = false;
            conversation.deadline_ms =
                Some(at.saturating_add(settings.wrap_up_timeout.as_millis() as i64));
        }
        Ok(vec![Effect::Automated {
            conversation: conversation.id.clone(),
            trigger: Trigger::Ended,
        }])
    }

    /// The agent finished wrap-up: the conversation closes.
    pub fn wrap_up_done(
        &mut self,
        agent: &AgentId,
        at: i64,
        settings: &ConversationSettings,
    ) -> Result<Vec<Effect>, TransitionError> {
        let conversation = self.expect_agent(agent, &[Status::WrapUp], "closed")?;
        let mut effects = Vec::new();
        release_if_held(conversation, &mut effects);
        conversation.move_to(
            Status::Closed,
            at,
            Cause::WrapUpDone {
                agent: agent.clone(),
            },
            settings,
        );
        self.archive_closed(&mut effects);
        Ok(effects)
    }

    /// Back to the queue, keeping its age (agent disconnected past grace, transfer to a queue).
    pub fn requeue(
        &mut self,
        reason: &str,
        at: i64,
        settings: &ConversationSettings,
    ) -> Result<Vec<Effect>, TransitionError> {
        let conversation =
            self.expect(&[Status::Active, Status::Waiting, Status::Bot], "requeued")?;
        let mut effects = Vec::new();
        if let (Some(agent), Status::Active) = (conversation.agent.take(), conversation.status) {
            effects.push(Effect::ReleaseCapacity {
                agent,
                conversation: conversation.id.clone(),
            });
        }
        conversation.agent = None;
        conversation.move_to(
            Status::Queued,
            at,
            Cause::Requeued {
                reason: reason.into(),
            },
            settings,
        );
        effects.push(Effect::Enqueue {
            conversation: conversation.id.clone(),
        });
        Ok(effects)
    }

    /// The agent hands the conversation to a queue (it waits there, keeping its age) or to
    /// another agent (offered to them first).
    pub fn transfer(
        &mut self,
        agent: &AgentId,
        to: TransferTarget,
        at: i64,
        settings: &ConversationSettings,
    ) -> Result<Vec<Effect>, TransitionError> {
        if to == TransferTarget::Agent(agent.clone()) {
            return Err(TransitionError::BadTarget(
                "a conversation can't be transferred to its own agent".into(),
            ));
        }
        let conversation =
            self.expect_agent(agent, &[Status::Active, Status::Waiting], "transferred")?;
        let mut effects = Vec::new();
        if conversation.status == Status::Active {
            effects.push(Effect::ReleaseCapacity {
                agent: agent.clone(),
                conversation: conversation.id.clone(),
            });
        }
        if let Some(routing) = &mut conversation.routing {
            match &to {
                TransferTarget::Queue(queue) => {
                    routing.queue = queue.clone();
                    // The destination queue's agents decide; the old queue's skills don't follow.
                    routing.skills.clear();
                    routing.direct_to = None;
                }
                TransferTarget::Agent(target) => routing.direct_to = Some(target.clone()),
            }
        }
        conversation.agent = None;
        conversation.move_to(
            Status::Queued,
            at,
            Cause::Transferred {
                agent: agent.clone(),
                to,
            },
            settings,
        );
        effects.push(Effect::Enqueue {
            conversation: conversation.id.clone(),
        });
        Ok(effects)
    }

    /// The agent wrote to the customer (`internal` false) or left a note (`internal` true).
    /// Returns `false` when a message with this `client_msg_id` is already stored (a retry).
    pub fn agent_wrote(
        &mut self,
        agent: &AgentId,
        content: Content,
        client_msg_id: Option<String>,
        internal: bool,
        at: i64,
    ) -> Result<bool, TransitionError> {
        let conversation = self.expect_agent(
            agent,
            &[Status::Active, Status::Waiting, Status::WrapUp],
            "written to",
        )?;
        if !internal && conversation.status == Status::WrapUp {
            return Err(TransitionError::InvalidState {
                id: conversation.id.to_string(),
                status: "wrap_up",
                action: "written to (only notes during wrap-up)",
            });
        }
        if client_msg_id.is_some()
            && conversation
                .transcript
                .iter()
                .any(|e| e.client_msg_id == client_msg_id)
        {
            return Ok(false);
        }
        let outgoing = match (&client_msg_id, internal) {
            (Some(id), false) => Some(format!("{}/agent/{id}", conversation.id)),
            _ => None,
        };
        conversation.transcript.push(TranscriptEntry {
            at_ms: at,
            author: Author::Agent {
                agent: agent.clone(),
            },
            message_id: None,
            content: Some(content),
            unsent: false,
            seq: None,
            client_msg_id,
            internal,
            outgoing,
        });
        conversation.updated_at_ms = at;
        Ok(true)
    }

    /// The router moved the waiting conversation on because its queue overflowed: to
    /// `to_queue`, or nowhere (it keeps its place; the customer is told it will take a while).
    pub fn overflowed(
        &mut self,
        to_queue: Option<&str>,
        at: i64,
    ) -> Result<Vec<Effect>, TransitionError> {
        let conversation = self.expect(&[Status::Queued], "overflowed")?;
        let text = match (to_queue, conversation.routing.as_mut()) {
            (Some(queue), Some(routing)) => {
                let from = std::mem::replace(&mut routing.queue, queue.to_owned());
                format!("queue `{from}` overflowed: moved to `{queue}`")
            }
            _ => "queue overflowed: the customer was told to expect a wait".to_owned(),
        };
        conversation.transcript.push(TranscriptEntry {
            at_ms: at,
            author: Author::System,
            message_id: None,
            content: Some(Content::Text { text }),
            unsent: false,
            seq: None,
            client_msg_id: None,
            internal: true,
            outgoing: None,
        });
        conversation.updated_at_ms = at;
        Ok(vec![Effect::Automated {
            conversation: conversation.id.clone(),
            trigger: Trigger::Overflow,
        }])
    }

    /// Forgets a reply token that an agent's message sent since it came has taken: after a
    /// recovery from entries stored without the snapshot that would say so (a token works
    /// once). A message sent while the token's event was still on its way to the conversation
    /// may count as having taken it: the next message is then pushed instead of replied.
    pub fn forget_spent_reply_token(&mut self) {
        let (Some(token), Some(conversation)) = (&self.reply_token, &self.current) else {
            return;
        };
        let spent = conversation.transcript.iter().rev().any(|e| {
            e.outgoing.is_some()
                && matches!(e.author, Author::Agent { .. })
                && e.at_ms >= token.received_at_ms
        });
        if spent {
            self.reply_token = None;
        }
    }

    /// Takes the reply token if it is younger than `ttl_ms`: it works once.
    pub fn take_reply_token(&mut self, now_ms: i64, ttl_ms: i64) -> Option<ReplyToken> {
        let token = self.reply_token.take()?;
        (now_ms - token.received_at_ms < ttl_ms).then_some(token)
    }

    /// Whether the open conversation's transcript holds the automated message `outgoing`.
    pub fn has_automated(&self, outgoing: &str) -> bool {
        self.current.as_ref().is_some_and(|c| {
            c.transcript
                .iter()
                .any(|e| e.author == Author::System && e.outgoing.as_deref() == Some(outgoing))
        })
    }

    /// Records an automated message (its texts, in order) in the open conversation's
    /// transcript, once per `outgoing` id; `before_last` puts it ahead of the newest entry (the
    /// consent notice precedes the agent message it goes out with). Returns whether it was new.
    pub fn record_automated(
        &mut self,
        contents: &[Content],
        outgoing: &str,
        at: i64,
        before_last: bool,
    ) -> bool {
        if self.has_automated(outgoing) {
            return false;
        }
        let Some(conversation) = &mut self.current else {
            return false;
        };
        let at_index = match before_last {
            true => conversation.transcript.len().saturating_sub(1),
            false => conversation.transcript.len(),
        };
        let entries = contents.iter().map(|content| TranscriptEntry {
            at_ms: at,
            author: Author::System,
            message_id: None,
            content: Some(content.clone()),
            unsent: false,
            seq: None,
            client_msg_id: None,
            internal: false,
            outgoing: Some(outgoing.to_owned()),
        });
        conversation.transcript.insert_at(at_index, entries);
        conversation.updated_at_ms = at;
        true
    }

    /// Whether the consent notice must precede the agent's next message; marks it sent.
    pub fn consent_due(&mut self) -> bool {
        match &mut self.current {
            Some(conversation) if !conversation.consent_sent => {
                conversation.consent_sent = true;
                true
            }
            _ => false,
        }
    }

    fn expect(
        &mut self,
        allowed: &[Status],
        action: &'static str,
    ) -> Result<&mut Conversation, TransitionError> {
        let conversation = self
            .current
            .as_mut()
            .ok_or(TransitionError::NoConversation)?;
        if !allowed.contains(&conversation.status) {
            return Err(TransitionError::InvalidState {
                id: conversation.id.to_string(),
                status: conversation.status.as_str(),
                action,
            });
        }
        Ok(conversation)
    }

    fn expect_agent(
        &mut self,
        agent: &AgentId,
        allowed: &[Status],
        action: &'static str,
    ) -> Result<&mut Conversation, TransitionError> {
        let conversation = self.expect(allowed, action)?;
        if conversation.agent.as_ref() != Some(agent) {
            return Err(TransitionError::NotYours {
                id: conversation.id.to_string(),
                agent: agent.to_string(),
            });
        }
        Ok(conversation)
    }
}

fn release_if_held(conversation: &mut Conversation, effects: &mut Vec<Effect>) {
    if conversation.capacity_held {
        conversation.capacity_held = false;
        if let Some(agent) = conversation.agent.clone() {
            effects.push(Effect::ReleaseCapacity {
                agent,
                conversation: conversation.id.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
