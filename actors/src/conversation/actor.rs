//! The conversation actor: owns one chat's [`ConversationState`], applies its journal events in
//! order, snapshots, fires timers, and passivates when idle.
//!
//! In: [`JournalAppended`], [`GetConversation`], [`Tick`], [`ApplyAgentAction`], [`SnapshotNow`]
//! (all through the registry). Out: [`ConversationIdle`] to the registry, and the store.
//!
//! Recovery is the same path at first start, after passivation and after a supervised restart:
//! latest snapshot, then the journal after it. A handler that hits an error it can't handle logs
//! it and stops the actor; the Supervisor restarts it from storage, so in-memory state that may
//! be wrong is thrown away. Panics are not caught by actix, so handlers return errors instead.

use std::sync::Arc;
use std::time::Duration;

use actix::clock::Instant;
use actix::prelude::*;
use tracing::Instrument;

use std::collections::HashMap;

mod sending;

use super::messages::*;
use super::state::{
    ConversationSettings, ConversationState, Effect, RoutingInfo, Status, TransferTarget,
    TransitionError,
};
use super::store::ConversationStore;
use crate::agent::{AgentEvent, RecentMessage};
use crate::domain::{AgentId, Content, ConversationKey};
use crate::outbound::OutboundLinks;
use crate::router::messages::{ConversationNotice, GetQueuePosition};
use crate::workstream::RoutingTable;

/// Persistence and lifetime knobs of conversation actors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// Snapshot after this many applied events (and on every state change).
    pub snapshot_every: u32,
    /// Stop an actor idle this long; its next event starts it again from storage.
    pub idle_passivate: Duration,
    /// How often the registry looks for due timers.
    pub timer_resolution: Duration,
    /// Threads the conversation actors run on; 0 = one per CPU core.
    pub arbiters: usize,
}

/// What every conversation actor shares.
pub struct ConversationEnv {
    pub store: Arc<dyn ConversationStore>,
    pub settings: ConversationSettings,
    pub runtime: RuntimeSettings,
    pub registry: Recipient<ConversationIdle>,
    pub links: ConversationLinks,
}

/// Where conversations report to routing and agents. Empty by default: conversations then
/// keep their state without being routed or sending anything (tests of the conversation
/// alone, benches).
#[derive(Clone, Default)]
pub struct ConversationLinks {
    pub routing: Arc<RoutingTable>,
    pub router: Option<Recipient<ConversationNotice>>,
    pub positions: Option<Recipient<GetQueuePosition>>,
    pub agents: Arc<HashMap<AgentId, Recipient<AgentEvent>>>,
    pub outbound: Option<OutboundLinks>,
}

pub struct Conversation {
    key: ConversationKey,
    env: Arc<ConversationEnv>,
    /// `None` until recovered (and again while restarting).
    state: Option<ConversationState>,
    /// Events applied since the last snapshot.
    unsaved: u32,
    last_active: Instant,
    /// Set once the registry let this actor go: it must not write anything any more.
    passivated: bool,
    /// Replaying the journal during recovery: only storage effects are carried out.
    replaying: bool,
    restarts: u32,
    /// Conversations to route once the current handler is done.
    deferred: Vec<super::ConversationRecordId>,
    /// The router is being asked for the queue position, to tell the customer: automated
    /// messages triggered meanwhile wait in `held`, so the customer reads them in order.
    position_pending: bool,
    held: Vec<(super::ConversationRecordId, crate::domain::Trigger)>,
    /// Messages of the open conversation that the outbox holds and its transcript lacks (a
    /// crash or failure cut the save after the outbox's write). Any other message not in the
    /// transcript is new to the outbox: told so, it is stored without a look.
    unrecorded: std::collections::HashSet<String>,
    #[cfg(feature = "fault-injection")]
    fail_next: bool,
}

impl Conversation {
    pub fn new(key: ConversationKey, env: Arc<ConversationEnv>) -> Self {
        Self {
            key,
            env,
            state: None,
            unsaved: 0,
            last_active: Instant::now(),
            passivated: false,
            replaying: false,
            restarts: 0,
            deferred: Vec::new(),
            position_pending: false,
            held: Vec::new(),
            unrecorded: Default::default(),
            #[cfg(feature = "fault-injection")]
            fail_next: false,
        }
    }

    fn span(&self) -> tracing::Span {
        tracing::info_span!("conversation", conversation_id = %self.key)
    }

    /// Latest snapshot plus the journal after it.
    fn recover(&mut self) -> Result<(), ConversationError> {
        let state = self
            .env
            .store
            .load(&self.key)?
            .unwrap_or_else(|| ConversationState::new(self.key.clone()));
        self.state = Some(state);
        self.unsaved = 0;
        self.replaying = true;
        let applied = self.catch_up();
        self.replaying = false;
        let applied = applied?;
        if let Some(state) = self.state.as_mut() {
            state.forget_spent_reply_token();
        }
        self.unrecorded = self.unrecorded_messages()?;
        if self.unsaved > 0 {
            // Replayed events are not replayed again after the next restart.
            self.save()?;
        }
        self.resync_routing();
        tracing::debug!(replayed = applied, "conversation recovered");
        Ok(())
    }

    /// What the outbox holds for the open conversation that its transcript does not name.
    fn unrecorded_messages(&self) -> Result<std::collections::HashSet<String>, ConversationError> {
        let (Some(outbound), Some(current)) = (
            &self.env.links.outbound,
            self.state.as_ref().and_then(|s| s.current.as_ref()),
        ) else {
            return Ok(Default::default());
        };
        let mut stored: std::collections::HashSet<String> = outbound
            .outbox
            .stored_for(&current.id)?
            .into_iter()
            .collect();
        for entry in current.transcript.iter() {
            if let Some(id) = &entry.outgoing {
                stored.remove(id);
            }
        }
        Ok(stored)
    }

    /// After recovery the router may not know this conversation: tell it what it needs.
    /// The router ignores what it already has.
    fn resync_routing(&mut self) {
        let queued = self
            .state
            .as_ref()
            .and_then(|s| s.current.as_ref())
            .filter(|c| c.status == Status::Queued)
            .map(|c| c.id.clone());
        if let Some(conversation) = queued {
            let unclassified = self.routing().is_none();
            let _ = self.carry_out(vec![Effect::Enqueue { conversation }]);
            if unclassified && self.routing().is_some() {
                // Routing is rebuilt from snapshots after a restart: keep the classification.
                if let Err(e) = self.save() {
                    tracing::warn!(error.message = %e, "could not save the classification");
                }
            }
        }
    }

    /// Applies every journal event not applied yet, read from the journal; returns how many.
    fn catch_up(&mut self) -> Result<usize, ConversationError> {
        let state = self.state.as_ref().ok_or(ConversationError::NotReady)?;
        let events = self.env.store.events_after(&self.key, state.applied_seq)?;
        self.apply_events(events)
    }

    /// Applies events handed over with their notice, or reads the journal when they may not be
    /// all: after a gap the registry saw, or when none were handed over.
    fn journal_appended(&mut self, msg: JournalAppended) -> Result<usize, ConversationError> {
        let applied = self
            .state
            .as_ref()
            .ok_or(ConversationError::NotReady)?
            .applied_seq;
        if msg.events.is_empty() || applied < msg.after {
            return self.catch_up();
        }
        let events: Vec<_> = msg.events.into_iter().filter(|e| e.seq > applied).collect();
        self.apply_events(events)
    }

    /// Applies new events, in order; returns how many.
    fn apply_events(
        &mut self,
        events: Vec<crate::domain::Inbound>,
    ) -> Result<usize, ConversationError> {
        let state = self.state.as_mut().ok_or(ConversationError::NotReady)?;
        if events.is_empty() {
            return Ok(0);
        }
        let before = shape(state);
        let agent_before = agent_view(state);
        let mut effects = Vec::new();
        let refuse_media = self
            .env
            .links
            .routing
            .workstream_of(&self.key.account)
            .is_some_and(|w| !w.customer_attachments);
        for event in &events {
            effects.extend(state.apply(event, &self.env.settings));
            if refuse_media && is_media(event) {
                if let Some(current) = &state.current {
                    effects.push(Effect::Automated {
                        conversation: current.id.clone(),
                        trigger: crate::domain::Trigger::AttachmentRefused,
                    });
                }
            }
        }
        self.unsaved += events.len() as u32;
        let changed = shape(state) != before;
        self.carry_out(effects)?;
        self.tell_status(agent_before);
        if changed || self.unsaved >= self.env.runtime.snapshot_every {
            self.save()?;
        }
        Ok(events.len())
    }

    fn save(&mut self) -> Result<(), ConversationError> {
        if self.passivated {
            return Ok(());
        }
        let state = self.state.as_mut().ok_or(ConversationError::NotReady)?;
        self.env.store.save(state)?;
        self.unsaved = 0;
        Ok(())
    }

    /// Stores what agents added since the last save, when nothing else changed.
    fn append(&mut self) -> Result<(), ConversationError> {
        if self.passivated {
            return Ok(());
        }
        let state = self.state.as_mut().ok_or(ConversationError::NotReady)?;
        self.env.store.append(state)?;
        Ok(())
    }

    /// Carries out the state machine's effects. While replaying the journal only storage
    /// effects run: routing and agents heard about those events the first time.
    fn carry_out(&mut self, effects: Vec<Effect>) -> Result<(), ConversationError> {
        for effect in effects {
            match effect {
                Effect::Archive(conversation) => {
                    self.env.store.archive(&conversation)?;
                    if !self.replaying {
                        self.notify_router(ConversationNotice::Closed {
                            conversation: conversation.id.clone(),
                        });
                        if let Some(agent) = &conversation.agent {
                            self.tell_agent(
                                agent,
                                AgentEvent::ConversationChanged {
                                    conversation: conversation.id.clone(),
                                    status: Status::Closed,
                                },
                            );
                        }
                    }
                }
                Effect::HideArchivedMessage {
                    conversation,
                    message_id,
                } => self
                    .env
                    .store
                    .hide_archived_message(&conversation, &message_id)?,
                // Replayed too: its outbox id is stable, so a message stored before a crash is
                // not stored twice, and one that was not is sent now.
                Effect::Automated {
                    conversation,
                    trigger,
                } if self.position_pending && !self.replaying => {
                    self.held.push((conversation, trigger));
                }
                Effect::Automated {
                    conversation,
                    trigger,
                } => {
                    self.send_automated(&conversation, &[trigger], None)?;
                }
                _ if self.replaying => {}
                Effect::Enqueue { conversation } => self.enqueue(conversation),
                Effect::ReleaseCapacity {
                    agent,
                    conversation,
                } => self.notify_router(ConversationNotice::Released {
                    agent,
                    conversation,
                }),
                Effect::ReclaimCapacity {
                    agent,
                    conversation,
                } => {
                    let units = self.routing().map_or(1, |r| r.units);
                    self.notify_router(ConversationNotice::Reclaimed {
                        agent,
                        conversation,
                        units,
                    })
                }
                Effect::TellAgent {
                    agent,
                    conversation,
                    entry,
                } => self.tell_agent(
                    &agent,
                    AgentEvent::Message {
                        conversation,
                        author: entry.author.clone(),
                        preview: entry.preview(),
                        content: entry.content.clone().unwrap_or(Content::Text {
                            text: String::new(),
                        }),
                        internal: entry.internal,
                        at_ms: entry.at_ms,
                    },
                ),
            }
        }
        Ok(())
    }

    fn routing(&self) -> Option<&RoutingInfo> {
        self.state
            .as_ref()
            .and_then(|s| s.current.as_ref())
            .and_then(|c| c.routing.as_ref())
    }

    /// Classifying may need the customer's profile (a network call) and the queued message
    /// the queue position, so routing runs after the handler, in [`Self::run_deferred`].
    fn enqueue(&mut self, conversation: super::ConversationRecordId) {
        if !self.deferred.contains(&conversation) {
            self.deferred.push(conversation);
        }
    }

    fn notify_router(&self, notice: ConversationNotice) {
        if let Some(router) = &self.env.links.router {
            router.do_send(notice);
        }
    }

    fn tell_agent(&self, agent: &AgentId, event: AgentEvent) {
        if let Some(sink) = self.env.links.agents.get(agent) {
            sink.do_send(event);
        }
    }

    /// Tells the agents concerned when the current conversation's status changed.
    fn tell_status(&self, before: Option<(super::ConversationRecordId, Status, Option<AgentId>)>) {
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let after = agent_view(state);
        if after == before || self.replaying {
            return;
        }
        if let Some((conversation, status, Some(agent))) = after {
            self.tell_agent(
                &agent,
                AgentEvent::ConversationChanged {
                    conversation,
                    status,
                },
            );
        }
    }

    fn view(&self, changed: bool) -> Result<ConversationView, ConversationError> {
        Ok(ConversationView {
            state: self.state.clone().ok_or(ConversationError::NotReady)?,
            transcript_from: 0,
            restarts: self.restarts,
            changed,
        })
    }

    /// The answer to an agent action: the state with the latest `entries` that agents are
    /// shown, and the notes among them.
    fn action_view(
        &mut self,
        changed: bool,
        entries: usize,
    ) -> Result<ConversationView, ConversationError> {
        let state = self.state.as_mut().ok_or(ConversationError::NotReady)?;
        let whole = state
            .current
            .as_mut()
            .map(|current| std::mem::take(&mut current.transcript));
        let mut view = ConversationView {
            state: state.clone(),
            transcript_from: 0,
            restarts: self.restarts,
            changed,
        };
        if let (Some(current), Some(whole)) = (&mut state.current, whole) {
            let (from, latest) = whole.latest_visible(entries);
            if let Some(shown) = &mut view.state.current {
                shown.transcript = latest;
            }
            view.transcript_from = from;
            current.transcript = whole;
        }
        Ok(view)
    }

    /// Ends the actor after an error it cannot handle; the Supervisor restarts it from storage.
    fn fail(&mut self, error: &ConversationError, ctx: &mut Context<Self>) {
        tracing::error!(
            parent: &self.span(),
            error.message = %error,
            "conversation failed; restarting it from its snapshot and journal"
        );
        ctx.stop();
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        if self.passivated || self.last_active.elapsed() < self.env.runtime.idle_passivate {
            return;
        }
        let Some(applied_seq) = self.state.as_ref().map(|s| s.applied_seq) else {
            return;
        };
        if self.unsaved > 0 {
            if let Err(e) = self.save() {
                return self.fail(&e, ctx);
            }
        }
        let ask = ConversationIdle {
            key: self.key.clone(),
            applied_seq,
        };
        // Freeze the mailbox until the registry answers: nothing may be applied in between.
        self.env
            .registry
            .send(ask)
            .into_actor(self)
            .map(|answer, act, ctx| match answer {
                Ok(true) => {
                    act.passivated = true;
                    ctx.stop();
                }
                Ok(false) => act.last_active = Instant::now(),
                Err(e) => tracing::warn!(error.message = %e, "registry did not answer"),
            })
            .wait(ctx);
    }

    fn handle_result<T>(
        &mut self,
        result: Result<T, ConversationError>,
        ctx: &mut Context<Self>,
    ) -> Result<T, ConversationError> {
        match &result {
            // A refused agent action is the caller's mistake, not a broken conversation.
            Err(ConversationError::Transition(_)) | Ok(_) => self.run_deferred(ctx),
            Err(e) => self.fail(e, ctx),
        }
        result
    }
}

/// The handlers' bodies, where `?` may end them early.
impl Conversation {
    fn tick(&mut self, msg: &Tick) -> Result<(), ConversationError> {
        let state = self.state.as_mut().ok_or(ConversationError::NotReady)?;
        let before = state.deadline_ms();
        let agent_before = agent_view(state);
        let effects = state.tick(msg.now_ms, &self.env.settings);
        let after = state.deadline_ms();
        // The index may hold another deadline than the state (a change not saved yet): saving
        // moves the entry rather than let it fire at every sweep.
        let index_behind = state.indexed_deadline_ms != after.map(|d| d.max(0) as u64);
        self.carry_out(effects)?;
        self.tell_status(agent_before);
        if before != after || index_behind {
            self.save()?;
        }
        let state = self.state.as_ref().ok_or(ConversationError::NotReady)?;
        if state.indexed_deadline_ms != Some(msg.indexed_ms) {
            // Left behind by a save a crash cut short: the snapshot names another entry.
            self.env.store.discard_timer(&self.key, msg.indexed_ms)?;
        }
        Ok(())
    }

    fn act(&mut self, msg: &ApplyAgentAction) -> Result<ConversationView, ConversationError> {
        let state = self.state.as_mut().ok_or(ConversationError::NotReady)?;
        let agent_before = agent_view(state);
        let (agent, settings, now) = (&msg.agent, &self.env.settings, now_ms());
        let mut to_customer = None;
        // A message or note adds to the transcript and changes nothing else the snapshot holds
        // but what a recovery makes up (unless it is the conversation's first message, with
        // the consent notice): it is appended.
        let mut appended = false;
        let (effects, changed) = match &msg.action {
            AgentAction::Assign => (state.assign(agent, now, settings)?, true),
            AgentAction::SetWaiting => (state.set_waiting(agent, now, settings)?, true),
            AgentAction::End => (state.end(agent, now, settings)?, true),
            AgentAction::WrapUpDone => (state.wrap_up_done(agent, now, settings)?, true),
            AgentAction::Requeue { reason } => (state.requeue(reason, now, settings)?, true),
            AgentAction::Send {
                content,
                client_msg_id,
                quick_replies,
            } => {
                if state.contact.blocked {
                    return Err(TransitionError::CustomerBlocked.into());
                }
                let attachments = self
                    .env
                    .links
                    .routing
                    .workstream_of(&self.key.account)
                    .is_none_or(|w| w.agent_attachments);
                if !attachments
                    && !matches!(content, Content::Text { .. } | Content::Sticker { .. })
                {
                    let why = "this workstream does not let agents send attachments";
                    return Err(TransitionError::NotAllowed(why.into()).into());
                }
                let id = Some(client_msg_id.clone());
                let stored = state.agent_wrote(agent, content.clone(), id, false, now)?;
                appended = true;
                if stored {
                    to_customer = Some((
                        content.clone(),
                        client_msg_id.clone(),
                        quick_replies.clone(),
                    ));
                }
                (Vec::new(), stored)
            }
            AgentAction::Transfer { to } => {
                let known = match to {
                    TransferTarget::Queue(queue) => {
                        self.env.links.routing.queues.iter().any(|q| q == queue)
                    }
                    TransferTarget::Agent(target) => self.env.links.agents.contains_key(target),
                };
                if !known {
                    return Err(TransitionError::BadTarget(format!("no such {to:?}")).into());
                }
                (state.transfer(agent, to.clone(), now, settings)?, true)
            }
            AgentAction::Note { text } => {
                let note = Content::Text { text: text.clone() };
                appended = true;
                (Vec::new(), state.agent_wrote(agent, note, None, true, now)?)
            }
        };
        if let Some((content, client_msg_id, quick_replies)) = to_customer {
            let consent_sent = |s: &ConversationState| s.current.as_ref().map(|c| c.consent_sent);
            let before = self.state.as_ref().and_then(consent_sent);
            self.send_agent_message(&msg.agent, content, client_msg_id, quick_replies)?;
            appended &= self.state.as_ref().and_then(consent_sent) == before;
        }
        self.carry_out(effects)?;
        self.tell_status(agent_before);
        if changed {
            // Written before the caller is answered: an agent's `ack` means stored.
            match appended {
                true => self.append()?,
                false => self.save()?,
            }
        }
        // Only a new assignee is shown the conversation so far.
        let shown = match msg.action {
            AgentAction::Assign => RecentMessage::SHOWN,
            _ => 0,
        };
        self.action_view(changed, shown)
    }

    fn overflow(&mut self, msg: &QueueOverflowed) -> Result<ConversationView, ConversationError> {
        let state = self.state.as_mut().ok_or(ConversationError::NotReady)?;
        let effects = state.overflowed(msg.to_queue.as_deref(), now_ms())?;
        self.carry_out(effects)?;
        self.save()?;
        self.view(true)
    }
}

/// A customer's image, video, audio or file.
fn is_media(event: &crate::domain::Inbound) -> bool {
    matches!(
        &event.kind,
        crate::domain::InboundKind::Message {
            content: Content::Image { .. }
                | Content::Video { .. }
                | Content::Audio { .. }
                | Content::File { .. },
            ..
        }
    )
}

/// The current conversation as its agent sees it.
fn agent_view(
    state: &ConversationState,
) -> Option<(super::ConversationRecordId, Status, Option<AgentId>)> {
    state
        .current
        .as_ref()
        .map(|c| (c.id.clone(), c.status, c.agent.clone()))
}

/// What a snapshot must follow at once: status changes and conversation turnover.
fn shape(state: &ConversationState) -> (Option<(u32, super::state::Status)>, usize) {
    (
        state.current.as_ref().map(|c| (c.id.number, c.status)),
        state.history.len(),
    )
}

impl Actor for Conversation {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.passivated {
            // Restarted by a stray address after passivating: stay down.
            ctx.stop();
            return;
        }
        self.last_active = Instant::now();
        let span = self.span();
        let recovered = span.in_scope(|| self.recover());
        if let Err(e) = recovered {
            // Retry later rather than in a tight restart loop on a persistent fault.
            tracing::error!(parent: &span, error.message = %e, "conversation could not recover; retrying");
            ctx.run_later(Duration::from_secs(1), |_, ctx| ctx.stop());
            return;
        }
        self.run_deferred(ctx);
        let every = (self.env.runtime.idle_passivate / 4).max(Duration::from_millis(10));
        ctx.run_interval(every, |act, ctx| act.check_idle(ctx));
    }
}

impl Supervised for Conversation {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.state = None;
        self.deferred.clear();
        // Lost with the actor: at worst the customer misses an "assigned" notice.
        self.position_pending = false;
        self.held.clear();
        self.unrecorded.clear();
        self.unsaved = 0;
        self.restarts += 1;
    }
}

impl Handler<JournalAppended> for Conversation {
    type Result = Result<(), ConversationError>;

    fn handle(&mut self, msg: JournalAppended, ctx: &mut Self::Context) -> Self::Result {
        if self.passivated {
            return Ok(());
        }
        self.last_active = Instant::now();
        #[cfg(feature = "fault-injection")]
        if std::mem::take(&mut self.fail_next) {
            let result = Err(ConversationError::Injected);
            return self.handle_result(result, ctx);
        }
        let span = tracing::debug_span!(parent: &self.span(), "journal_appended", seq = msg.seq);
        let result = span.in_scope(|| self.journal_appended(msg).map(|_| ()));
        self.handle_result(result, ctx)
    }
}

impl Handler<GetConversation> for Conversation {
    type Result = Result<ConversationView, ConversationError>;

    fn handle(&mut self, _: GetConversation, ctx: &mut Self::Context) -> Self::Result {
        let result = self.catch_up().and_then(|_| self.view(false));
        self.handle_result(result, ctx)
    }
}

impl Handler<Tick> for Conversation {
    type Result = Result<(), ConversationError>;

    fn handle(&mut self, msg: Tick, ctx: &mut Self::Context) -> Self::Result {
        // No journal read first: the journal's notices reach this actor in order anyway.
        let result = self.tick(&msg);
        self.handle_result(result, ctx)
    }
}

impl Handler<ApplyAgentAction> for Conversation {
    type Result = Result<ConversationView, ConversationError>;

    fn handle(&mut self, msg: ApplyAgentAction, ctx: &mut Self::Context) -> Self::Result {
        self.last_active = Instant::now();
        // Customer events already stored come first, their notice in flight or not: an agent
        // who accepts after a message was acknowledged to LINE gets it with `assigned`.
        let result = self.catch_up().and_then(|_| self.act(&msg));
        self.handle_result(result, ctx)
    }
}

impl Handler<QueueOverflowed> for Conversation {
    type Result = Result<ConversationView, ConversationError>;

    fn handle(&mut self, msg: QueueOverflowed, ctx: &mut Self::Context) -> Self::Result {
        self.last_active = Instant::now();
        let result = self.overflow(&msg);
        self.handle_result(result, ctx)
    }
}

impl Handler<SnapshotNow> for Conversation {
    type Result = Result<(), ConversationError>;

    fn handle(&mut self, _: SnapshotNow, ctx: &mut Self::Context) -> Self::Result {
        let result = self.catch_up().and_then(|_| match self.unsaved {
            0 => Ok(()),
            _ => self.save(),
        });
        self.handle_result(result, ctx)
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<InjectFault> for Conversation {
    type Result = ();

    fn handle(&mut self, _: InjectFault, _: &mut Self::Context) {
        self.fail_next = true;
    }
}

/// Wall-clock milliseconds since the epoch.
/// The wall clock in ms since the epoch, as every timestamp in linedesk is kept.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Runs `fut` inside the conversation's span (used by the registry's forwarding futures).
pub(crate) fn traced<F: std::future::Future>(
    key: &ConversationKey,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    fut.instrument(tracing::info_span!("conversation", conversation_id = %key))
}
