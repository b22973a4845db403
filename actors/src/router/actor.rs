//! The router actor: a shell around [`RouterState`]. It re-runs routing whenever a
//! conversation queues, capacity frees, presence changes or an agent connects; sends offers to
//! agents one at a time with a timeout; and on accept assigns the conversation through its
//! actor (so the conversation's state and the router's agree).
//!
//! In: [`ConversationNotice`] (conversations), [`SetPresence`], [`AcceptOffer`], [`RejectOffer`],
//! [`AgentGone`] (agents). Out: [`AgentEvent`] to agents, `AskConversation` to the registry.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;

use super::messages::*;
use super::state::{
    AgentSpec, HoldKind, Offer, Presence, QueueSpec, RouterError, RouterSettings, RouterState,
    WaitingConversation,
};
use crate::agent::{AgentEvent, RecentMessage};

use crate::conversation::{
    AgentAction, ApplyAgentAction, AskConversation, ConversationError, Question, QueueOverflowed,
    Registry,
};
use crate::domain::{AgentId, ConversationId};

/// Per-queue settings the pure state does not need.
#[derive(Debug, Clone)]
pub struct QueuePolicy {
    pub spec: QueueSpec,
    pub offer_timeout: Duration,
    pub auto_accept: bool,
    pub overflow: OverflowPolicy,
}

/// When a queue overflows, and where its conversations go then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverflowPolicy {
    /// A conversation arriving when this many already wait overflows at once.
    pub max_waiting: Option<usize>,
    /// A conversation waiting this long (since it opened) overflows.
    pub max_wait: Option<Duration>,
    /// Where overflowing conversations go; `None`: they stay, and the customer is told to
    /// expect a wait (the workstream's `overflow` message).
    pub to_queue: Option<String>,
}

/// How often waiting conversations are checked against their queue's `max_wait`.
const OVERFLOW_CHECK: Duration = Duration::from_millis(250);

pub struct Router {
    state: RouterState,
    policies: HashMap<String, QueuePolicy>,
    agents: HashMap<AgentId, Recipient<AgentEvent>>,
    /// As configured: an agent who leaves is put back fresh when they return.
    specs: HashMap<AgentId, AgentSpec>,
    registry: Option<Addr<Registry>>,
    /// Outstanding offers: conversation → (agent, offer number), so a late timeout is ignored.
    offers: HashMap<ConversationId, (AgentId, u64)>,
    /// Offers made to one agent by transfer: the units are held directly, and a reject or
    /// timeout sends the conversation to its queue like any other.
    direct: HashMap<ConversationId, WaitingConversation>,
    next_offer: u64,
    stats: RouterStats,
    /// When waiting conversations reach their queue's `max_wait`, soonest first.
    overflow_due: std::collections::BTreeSet<(i64, ConversationId)>,
    /// While the open conversations of the last run are still arriving ([`RestoreRouting`]):
    /// the conversations whose own actors have told the router something since it started.
    /// Their notices are newer than any snapshot a later chunk was read from.
    heard_while_restoring: Option<HashSet<ConversationId>>,
}

impl Router {
    pub fn new(queues: Vec<QueuePolicy>, missed_offers_to_away: u32) -> Self {
        let mut state = RouterState::new(RouterSettings {
            missed_offers_limit: missed_offers_to_away,
        });
        let mut policies = HashMap::new();
        for policy in queues {
            state.upsert_queue(policy.spec.clone());
            policies.insert(policy.spec.id.to_string(), policy);
        }
        Self {
            state,
            policies,
            agents: HashMap::new(),
            specs: HashMap::new(),
            registry: None,
            offers: HashMap::new(),
            direct: HashMap::new(),
            next_offer: 0,
            stats: RouterStats::default(),
            overflow_due: std::collections::BTreeSet::new(),
            heard_while_restoring: None,
        }
    }

    /// A router that will be sent the open conversations of the last run ([`RestoreRouting`]
    /// chunks, the last one marked): until then it remembers which conversations it heard about
    /// from their actors, so that a chunk read before a conversation changed does not undo the
    /// change (queue a conversation that closed, hold capacity an agent released).
    pub fn restoring(mut self) -> Self {
        self.heard_while_restoring = Some(HashSet::new());
        self
    }

    /// Notes a conversation's notice while a restore is under way.
    fn heard(&mut self, conversation: &ConversationId) {
        if let Some(heard) = &mut self.heard_while_restoring {
            heard.insert(conversation.clone());
        }
    }

    /// Whether a restored conversation is already known, or newer news of it came meanwhile.
    fn restore_is_stale(&self, conversation: &ConversationId) -> bool {
        self.state.status(conversation).is_some()
            || self.direct.contains_key(conversation)
            || self
                .heard_while_restoring
                .as_ref()
                .is_some_and(|heard| heard.contains(conversation))
    }

    fn overflow_policy(&self, queue: &super::state::QueueId) -> OverflowPolicy {
        self.policies
            .get(queue.as_str())
            .map(|p| p.overflow.clone())
            .unwrap_or_default()
    }

    /// Queues a conversation, overflowing it at once when its queue is full.
    fn queue_up(&mut self, waiting: WaitingConversation) {
        let policy = self.overflow_policy(&waiting.queue);
        if policy
            .max_waiting
            .is_some_and(|max| self.state.waiting_in(&waiting.queue) >= max)
        {
            return self.overflow(waiting, &policy);
        }
        self.enqueue(waiting, &policy);
    }

    fn enqueue(&mut self, waiting: WaitingConversation, policy: &OverflowPolicy) {
        let (conversation, since_ms) = (waiting.conversation.clone(), waiting.since_ms);
        if let Err(e) = self.state.enqueue(waiting) {
            tracing::error!(conversation_id = %conversation, error.message = %e, "could not queue conversation");
            return;
        }
        if let Some(max_wait) = policy.max_wait {
            let due = since_ms.saturating_add(max_wait.as_millis() as i64);
            self.overflow_due.insert((due, conversation));
        }
    }

    /// Moves an overflowing conversation to the overflow queue (no further overflow checks
    /// there, so overflow can't loop), or keeps it; its conversation tells the customer.
    fn overflow(&mut self, mut waiting: WaitingConversation, policy: &OverflowPolicy) {
        let target = policy
            .to_queue
            .as_deref()
            .filter(|q| *q != waiting.queue.as_str() && self.policies.contains_key(*q))
            .and_then(|q| super::state::QueueId::parse(q).ok());
        tracing::info!(
            conversation_id = %waiting.conversation,
            queue = %waiting.queue,
            to_queue = target.as_ref().map(|q| q.as_str()),
            "queue overflow"
        );
        if let Some(queue) = &target {
            waiting.queue = queue.clone();
        }
        let conversation = waiting.conversation.clone();
        if let Err(e) = self.state.enqueue(waiting) {
            tracing::error!(conversation_id = %conversation, error.message = %e, "could not queue an overflowing conversation");
        }
        if let Some(registry) = &self.registry {
            registry.do_send(AskConversation {
                key: conversation.key.clone(),
                question: Question::Overflowed(QueueOverflowed {
                    to_queue: target.map(|q| q.to_string()),
                }),
            });
        }
    }

    /// Overflows the conversations that waited their queue's `max_wait`.
    fn check_overflow(&mut self, ctx: &mut Context<Self>) {
        let now = crate::conversation::now_ms();
        let mut moved = false;
        while let Some((due, conversation)) = self.overflow_due.first().cloned() {
            if due > now {
                break;
            }
            self.overflow_due.pop_first();
            // Offered, assigned or gone meanwhile: nothing to do.
            let Some(waiting) = self.state.dequeue(&conversation) else {
                continue;
            };
            let policy = self.overflow_policy(&waiting.queue);
            let still_due = policy
                .max_wait
                .is_some_and(|w| waiting.since_ms.saturating_add(w.as_millis() as i64) <= now);
            if still_due {
                self.overflow(waiting, &policy);
                moved = true;
            } else {
                self.enqueue(waiting, &policy);
            }
        }
        if moved {
            self.dispatch(ctx);
        }
    }

    /// Offers waiting conversations to free agents until no pair is left.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let now = crate::conversation::now_ms();
        while let Some(offer) = self.state.next_offer(now) {
            self.stats.offers += 1;
            let Some(policy) = self.policies.get(&offer.queue.to_string()).cloned() else {
                continue;
            };
            if policy.auto_accept {
                self.assign(offer.conversation, offer.agent, ctx);
                continue;
            }
            let Offer {
                conversation,
                agent,
                queue,
                ..
            } = offer;
            self.send_offer(
                conversation,
                agent,
                queue.to_string(),
                policy.offer_timeout,
                ctx,
            );
        }
        self.stats.waiting = self.state.waiting_len();
    }

    /// Tells the agent about the offer and times it out.
    fn send_offer(
        &mut self,
        conversation: ConversationId,
        agent: AgentId,
        queue: String,
        timeout: Duration,
        ctx: &mut Context<Self>,
    ) {
        self.next_offer += 1;
        let number = self.next_offer;
        self.offers
            .insert(conversation.clone(), (agent.clone(), number));
        let expires_at_ms = crate::conversation::now_ms() + timeout.as_millis() as i64;
        self.tell(
            &agent,
            AgentEvent::Offer {
                conversation: conversation.clone(),
                queue,
                expires_at_ms,
            },
        );
        ctx.run_later(timeout, move |act, ctx| {
            if act.offers.get(&conversation) == Some(&(agent.clone(), number)) {
                act.offers.remove(&conversation);
                act.tell(
                    &agent,
                    AgentEvent::OfferRevoked {
                        conversation: conversation.clone(),
                        reason: "offer expired".into(),
                    },
                );
                act.missed(&agent, &conversation, ctx);
            }
        });
    }

    /// A transfer to one agent: offered to them alone if they can take it now, otherwise it
    /// waits in its queue like any other conversation.
    fn offer_directly(
        &mut self,
        waiting: WaitingConversation,
        target: AgentId,
        ctx: &mut Context<Self>,
    ) {
        let free = self
            .state
            .load(&target)
            .is_some_and(|(assigned, offered, capacity)| {
                capacity.saturating_sub(assigned + offered) >= waiting.units
            });
        let available = self.state.effective_presence(&target) == Some(Presence::Available);
        let timeout = self
            .policies
            .get(&waiting.queue.to_string())
            .map_or(Duration::from_secs(120), |p| p.offer_timeout);
        if free
            && available
            && self
                .state
                .reserve_direct(&waiting.conversation, &target, waiting.units)
                .is_ok()
        {
            let (conversation, queue) = (waiting.conversation.clone(), waiting.queue.to_string());
            self.direct.insert(conversation.clone(), waiting);
            self.send_offer(conversation, target, queue, timeout, ctx);
            return;
        }
        tracing::info!(agent_id = %target, conversation_id = %waiting.conversation, "transfer target can't take it now; it waits in its queue");
        if let Err(e) = self.state.enqueue(waiting) {
            tracing::error!(error.message = %e, "could not queue a transferred conversation");
        }
    }

    /// Records a declined or expired offer and routes again.
    fn missed(&mut self, agent: &AgentId, conversation: &ConversationId, ctx: &mut Context<Self>) {
        if let Some(waiting) = self.direct.remove(conversation) {
            let _ = self.state.release(conversation, agent);
            if let Err(e) = self.state.enqueue(waiting) {
                tracing::error!(error.message = %e, "could not queue a declined transfer");
            }
            self.dispatch(ctx);
            return;
        }
        let too_many = match self.state.decline(conversation, agent) {
            Ok(too_many) => too_many,
            Err(e) => {
                tracing::warn!(agent_id = %agent, conversation_id = %conversation, error.message = %e, "declining an offer failed");
                false
            }
        };
        if too_many {
            tracing::info!(agent_id = %agent, "agent missed too many offers in a row; set away");
            if let Ok(presence) = self.state.set_presence(agent, Presence::Away) {
                self.tell(agent, AgentEvent::PresenceChanged { presence });
            }
        }
        self.dispatch(ctx);
    }

    /// Makes the conversation the agent's: the conversation actor first, then the router's books.
    fn assign(&mut self, conversation: ConversationId, agent: AgentId, ctx: &mut Context<Self>) {
        let Some(registry) = self.registry.clone() else {
            tracing::error!("router has no registry; cannot assign");
            return;
        };
        let ask = AskConversation {
            key: conversation.key.clone(),
            question: Question::Agent(ApplyAgentAction {
                agent: agent.clone(),
                action: AgentAction::Assign,
            }),
        };
        registry
            .send(ask)
            .into_actor(self)
            .map(move |answer, act, ctx| act.assigned(conversation, agent, answer, ctx))
            .wait(ctx);
    }

    fn assigned(
        &mut self,
        conversation: ConversationId,
        agent: AgentId,
        answer: Result<
            Result<crate::conversation::ConversationView, ConversationError>,
            MailboxError,
        >,
        ctx: &mut Context<Self>,
    ) {
        let now = crate::conversation::now_ms();
        match answer {
            Ok(Ok(view)) => {
                // Held directly since a transfer: nothing more to book.
                if self.direct.remove(&conversation).is_none() {
                    if let Err(e) = self.state.accept(&conversation, &agent, now) {
                        tracing::error!(agent_id = %agent, conversation_id = %conversation, error.message = %e, "router books disagree with the conversation");
                    }
                }
                self.stats.assignments += 1;
                let recent = RecentMessage::latest(&view.state, RecentMessage::SHOWN);
                self.tell(
                    &agent,
                    AgentEvent::Assigned {
                        conversation,
                        recent,
                    },
                );
                self.report_presence(&agent);
            }
            Ok(Err(e)) => {
                // Closed or changed meanwhile: give the units back and forget it.
                tracing::info!(agent_id = %agent, conversation_id = %conversation, error.message = %e, "conversation could not be assigned");
                if self.direct.remove(&conversation).is_some() {
                    let _ = self.state.release(&conversation, &agent);
                }
                self.withdraw_offer(conversation, &agent, e.to_string());
            }
            Err(e) => {
                tracing::error!(error.message = %e, "registry unreachable; the conversation goes back to waiting");
                match self.direct.remove(&conversation) {
                    Some(waiting) => {
                        let _ = self.state.release(&conversation, &agent);
                        let _ = self.state.enqueue(waiting);
                    }
                    None => {
                        let _ = self.state.decline(&conversation, &agent);
                    }
                }
            }
        }
        self.dispatch(ctx);
    }

    /// Forgets a conversation offered to `agent` that can no longer be assigned, and says why.
    fn withdraw_offer(&mut self, conversation: ConversationId, agent: &AgentId, reason: String) {
        let _ = self.state.decline(&conversation, agent);
        self.state.dequeue(&conversation);
        self.tell(
            agent,
            AgentEvent::OfferRevoked {
                conversation,
                reason,
            },
        );
    }

    /// Ends the outstanding offer of `conversation` to `agent` (the first answer wins).
    fn take_offer(
        &mut self,
        conversation: &ConversationId,
        agent: &AgentId,
    ) -> Result<(), RoutingError> {
        match self.offers.get(conversation) {
            Some((offered_to, _)) if offered_to == agent => {
                self.offers.remove(conversation);
                Ok(())
            }
            _ => Err(not_offered(conversation, agent)),
        }
    }

    fn report_presence(&mut self, agent: &AgentId) {
        if let Some(presence) = self.state.effective_presence(agent) {
            self.tell(agent, AgentEvent::PresenceChanged { presence });
        }
    }

    fn tell(&self, agent: &AgentId, event: AgentEvent) {
        if let Some(sink) = self.agents.get(agent) {
            sink.do_send(event);
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self
            .policies
            .values()
            .any(|p| p.overflow.max_wait.is_some())
        {
            ctx.run_interval(OVERFLOW_CHECK, |act, ctx| act.check_overflow(ctx));
        }
    }
}

/// Wires the router to its agents and to the conversation registry (both start after it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachRouter {
    pub registry: Addr<Registry>,
    pub agents: Vec<(crate::router::state::AgentSpec, Recipient<AgentEvent>)>,
}

impl Handler<AttachRouter> for Router {
    type Result = ();

    fn handle(&mut self, msg: AttachRouter, ctx: &mut Self::Context) {
        self.registry = Some(msg.registry);
        for (spec, sink) in msg.agents {
            self.agents.insert(spec.id.clone(), sink);
            self.specs.insert(spec.id.clone(), spec.clone());
            if let Err(e) = self.state.upsert_agent(spec) {
                tracing::error!(error.message = %e, "agent could not join routing");
            }
        }
        self.dispatch(ctx);
    }
}

impl Handler<ConversationNotice> for Router {
    type Result = ();

    fn handle(&mut self, notice: ConversationNotice, ctx: &mut Self::Context) {
        tracing::debug!(?notice, "routing notice");
        self.heard(notice.conversation());
        match notice {
            ConversationNotice::Queued {
                conversation,
                queue,
                skills,
                priority,
                since_ms,
                units,
                direct_to,
            } => {
                let Ok(queue_id) = super::state::QueueId::parse(&queue) else {
                    tracing::error!(queue, "conversation names a queue that is not configured");
                    return;
                };
                if self.state.status(&conversation).is_some() {
                    // Already waiting, offered or assigned: a resync after recovery.
                    return;
                }
                let waiting = WaitingConversation {
                    conversation: conversation.clone(),
                    queue: queue_id,
                    required_skills: skills,
                    priority,
                    since_ms,
                    units,
                };
                match direct_to {
                    Some(target) => self.offer_directly(waiting, target, ctx),
                    None => self.queue_up(waiting),
                }
            }
            ConversationNotice::Released {
                agent,
                conversation,
            } => {
                if let Err(e) = self.state.release(&conversation, &agent) {
                    tracing::debug!(agent_id = %agent, conversation_id = %conversation, error.message = %e, "release of a conversation the router did not hold");
                }
                self.report_presence(&agent);
            }
            ConversationNotice::Reclaimed {
                agent,
                conversation,
                units,
            } => {
                if let Err(e) = self.state.reserve_direct(&conversation, &agent, units) {
                    // Over capacity: the agent still gets the customer back (affinity), and
                    // routing sends nothing new until capacity frees.
                    tracing::warn!(agent_id = %agent, conversation_id = %conversation, error.message = %e, "returning customer exceeds the agent's capacity");
                }
                self.report_presence(&agent);
            }
            ConversationNotice::Closed { conversation } => {
                self.state.dequeue(&conversation);
                if let Some((agent, _)) = self.offers.remove(&conversation) {
                    self.withdraw_offer(conversation, &agent, "the conversation closed".into());
                }
            }
        }
        self.dispatch(ctx);
    }
}

impl Handler<SetPresence> for Router {
    type Result = Result<Presence, RoutingError>;

    fn handle(&mut self, msg: SetPresence, ctx: &mut Self::Context) -> Self::Result {
        let presence = self.state.set_presence(&msg.agent, msg.presence)?;
        self.tell(&msg.agent, AgentEvent::PresenceChanged { presence });
        self.dispatch(ctx);
        Ok(presence)
    }
}

impl Handler<AcceptOffer> for Router {
    type Result = Result<(), RoutingError>;

    fn handle(&mut self, msg: AcceptOffer, ctx: &mut Self::Context) -> Self::Result {
        self.take_offer(&msg.conversation, &msg.agent)?;
        self.assign(msg.conversation, msg.agent, ctx);
        Ok(())
    }
}

impl Handler<RejectOffer> for Router {
    type Result = Result<(), RoutingError>;

    fn handle(&mut self, msg: RejectOffer, ctx: &mut Self::Context) -> Self::Result {
        self.take_offer(&msg.conversation, &msg.agent)?;
        self.tell(
            &msg.agent,
            AgentEvent::OfferRevoked {
                conversation: msg.conversation.clone(),
                reason: "rejected".into(),
            },
        );
        self.missed(&msg.agent, &msg.conversation, ctx);
        Ok(())
    }
}

impl Handler<AgentGone> for Router {
    type Result = ();

    fn handle(&mut self, msg: AgentGone, ctx: &mut Self::Context) {
        let held = self.state.remove_agent(&msg.agent);
        self.offers.retain(|_, (agent, _)| *agent != msg.agent);
        // The agent stays known, offline and empty-handed, for when they come back.
        if let Some(spec) = self.specs.get(&msg.agent).cloned() {
            let _ = self.state.upsert_agent(spec);
        }
        for conversation in held {
            match (conversation.kind, conversation.queued_as) {
                // Only offered: it waits again with its age.
                (HoldKind::Offered, Some(waiting)) => {
                    let _ = self.state.enqueue(waiting);
                }
                // Theirs: back to the head of its queue through the conversation, which keeps
                // its age and tells the router again.
                _ => {
                    if let Some(registry) = &self.registry {
                        registry.do_send(AskConversation {
                            key: conversation.conversation.key.clone(),
                            question: Question::Agent(ApplyAgentAction {
                                agent: msg.agent.clone(),
                                action: AgentAction::Requeue {
                                    reason: "agent disconnected".into(),
                                },
                            }),
                        });
                    }
                }
            }
        }
        self.dispatch(ctx);
    }
}

fn not_offered(conversation: &ConversationId, agent: &AgentId) -> RoutingError {
    RouterError::NotOffered {
        conversation: conversation.clone(),
        agent: agent.clone(),
    }
    .into()
}

impl Handler<RestoreRouting> for Router {
    type Result = usize;

    fn handle(&mut self, msg: RestoreRouting, ctx: &mut Self::Context) -> usize {
        use crate::conversation::Status;
        let mut restored = 0;
        for open in msg.conversations {
            let Some(routing) = open.routing else {
                continue;
            };
            if self.restore_is_stale(&open.conversation) {
                continue;
            }
            match (open.status, open.agent) {
                (Status::Queued, _) => {
                    let Ok(queue) = super::state::QueueId::parse(routing.queue.as_str()) else {
                        continue;
                    };
                    let waiting = WaitingConversation {
                        conversation: open.conversation,
                        queue,
                        required_skills: routing.skills,
                        priority: routing.priority,
                        since_ms: open.since_ms,
                        units: routing.units,
                    };
                    let policy = self.overflow_policy(&waiting.queue);
                    self.enqueue(waiting, &policy);
                    restored += 1;
                }
                (status, Some(agent)) => {
                    let holds_capacity = status == Status::Active
                        || (status == Status::WrapUp && open.capacity_held);
                    if holds_capacity {
                        if let Err(e) =
                            self.state
                                .reserve_direct(&open.conversation, &agent, routing.units)
                        {
                            tracing::warn!(agent_id = %agent, conversation_id = %open.conversation, error.message = %e, "restored conversation exceeds the agent's capacity");
                        }
                    }
                    self.tell(
                        &agent,
                        AgentEvent::Assigned {
                            recent: Vec::new(),
                            conversation: open.conversation,
                        },
                    );
                    restored += 1;
                }
                _ => {}
            }
        }
        if msg.last {
            self.heard_while_restoring = None;
        }
        tracing::debug!(
            conversations = restored,
            last = msg.last,
            "routing restore chunk applied"
        );
        self.dispatch(ctx);
        restored
    }
}

impl Handler<GetRouterStats> for Router {
    type Result = MessageResult<GetRouterStats>;

    fn handle(&mut self, _: GetRouterStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(RouterStats {
            waiting: self.state.waiting_len(),
            ..self.stats
        })
    }
}

impl Handler<GetQueuePosition> for Router {
    type Result = Option<usize>;

    fn handle(&mut self, msg: GetQueuePosition, _: &mut Self::Context) -> Self::Result {
        self.state.position(&msg.conversation)
    }
}

#[cfg(test)]
mod tests;
