//! The conversation's side of talking back: routing a queued conversation (after its profile
//! is known), automated messages, and agents' messages into the outbox.

use actix::prelude::*;

use super::Conversation;
use crate::conversation::messages::ConversationError;
use crate::conversation::state::{Cause, RoutingInfo, Status};
use crate::conversation::ConversationRecordId;
use crate::domain::{AgentId, Content, CustomerProfile, Origin, Outgoing, QuickReply, Trigger};
use crate::outbound::LookupProfile;
use crate::router::messages::{ConversationNotice, GetQueuePosition};
use crate::workstream::{classify, ClassifyInput, Slots};

impl Conversation {
    /// Routes the conversations the last handler queued: fetch the profile if a rule may need
    /// it, classify, tell the router, then the queued/greeting/transfer message.
    pub(super) fn run_deferred(&mut self, ctx: &mut Context<Self>) {
        for conversation in std::mem::take(&mut self.deferred) {
            let classified = self.routing().is_some();
            let outbound = self.env.links.outbound.clone();
            let cached = outbound.as_ref().and_then(|o| o.contacts.cached(&self.key));
            let lookup = outbound.and_then(|o| Some((o.lookup?, o.profile_wait)));
            match (classified, cached, lookup) {
                (false, None, Some((lookup, wait))) => {
                    let ask = lookup.send(LookupProfile {
                        key: self.key.clone(),
                    });
                    let fetched = async move { ask.timeout(wait).await.ok().flatten() };
                    ctx.spawn(
                        fetched
                            .into_actor(self)
                            .map(move |profile, act, ctx| act.route(conversation, profile, ctx)),
                    );
                }
                (_, cached, _) => self.route(conversation, cached, ctx),
            }
        }
    }

    fn route(
        &mut self,
        conversation: ConversationRecordId,
        profile: Option<CustomerProfile>,
        ctx: &mut Context<Self>,
    ) {
        let links = self.env.links.clone();
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let Some(current) = state
            .current
            .as_ref()
            .filter(|c| c.id == conversation && c.status == Status::Queued)
        else {
            return;
        };
        let since_ms = current.opened_at_ms;
        let cause = current.transitions.last().map(|t| t.cause.clone());
        let (routing, classified_now) = match &current.routing {
            Some(routing) => (routing.clone(), false),
            None => {
                let Some(workstream) = links.routing.workstream_of(&self.key.account) else {
                    tracing::warn!(account_id = %self.key.account, "no workstream routes this account; the conversation waits unrouted");
                    return;
                };
                let first_text = current.transcript.iter().find_map(|e| match &e.content {
                    Some(Content::Text { text }) => Some(text.as_str()),
                    _ => None,
                });
                let contact = Default::default();
                let input = ClassifyInput {
                    account: &self.key.account,
                    first_text,
                    language: profile.as_ref().and_then(|p| p.language.as_deref()),
                    contact: &contact,
                };
                let classified = classify(workstream, &links.routing.rules, &input);
                if let Some(why) = &classified.unevaluable {
                    tracing::warn!(conversation_id = %conversation, reason = %why, "a rule could not be evaluated; fallback queue");
                }
                let routing = RoutingInfo {
                    workstream: workstream.id.clone(),
                    queue: classified.classification.queue,
                    skills: classified.classification.skills,
                    priority: classified.classification.priority,
                    units: workstream.capacity_units,
                    rule: classified.rule,
                    direct_to: None,
                };
                state.set_routing(routing.clone());
                (routing, true)
            }
        };
        self.notify_router(ConversationNotice::Queued {
            conversation: conversation.clone(),
            direct_to: routing.direct_to.clone(),
            queue: routing.queue.clone(),
            skills: routing.skills.clone(),
            priority: routing.priority,
            since_ms,
            units: routing.units,
        });
        if classified_now {
            // Routing is rebuilt from snapshots after a restart: keep the classification.
            if let Err(e) = self.save() {
                return self.fail(&e, ctx);
            }
        }
        // Outside operating hours the customer is told so instead of a queue position.
        let closed = links
            .routing
            .workstream_of(&self.key.account)
            .and_then(|w| w.hours)
            .is_some_and(|h| !h.is_open(super::now_ms()));
        let waiting = match closed {
            true => Trigger::OutsideHours,
            false => Trigger::Queued,
        };
        let triggers: Vec<Trigger> = match cause {
            Some(Cause::NoBot | Cause::BotEscalated) if conversation.number == 1 => {
                vec![Trigger::Greeting, waiting]
            }
            Some(Cause::NoBot | Cause::BotEscalated | Cause::CustomerReturned) => vec![waiting],
            Some(Cause::Transferred { .. }) => vec![Trigger::Transfer],
            // Back after an agent vanished: the customer was told already.
            _ => return,
        };
        let wants_position = triggers.contains(&Trigger::Queued) && self.enabled(Trigger::Queued);
        match (&links.positions, wants_position) {
            (Some(positions), true) => {
                let ask = positions.send(GetQueuePosition {
                    conversation: conversation.clone(),
                });
                // An agent may accept before the answer comes: their "assigned" notice waits.
                self.position_pending = true;
                ctx.spawn(ask.into_actor(self).map(move |position, act, ctx| {
                    // Already offered to an agent: first in line.
                    let position = position.ok().flatten().unwrap_or(1);
                    act.position_pending = false;
                    act.send_and_save(&conversation, &triggers, Some(position), ctx);
                    for (conversation, trigger) in std::mem::take(&mut act.held) {
                        act.send_and_save(&conversation, &[trigger], None, ctx);
                    }
                }));
            }
            _ => self.send_and_save(&conversation, &triggers, None, ctx),
        }
    }

    fn send_and_save(
        &mut self,
        conversation: &ConversationRecordId,
        triggers: &[Trigger],
        position: Option<usize>,
        ctx: &mut Context<Self>,
    ) {
        let result = self.send_automated(conversation, triggers, position);
        let result = match result {
            Ok(true) => self.save(),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.fail(&e, ctx);
        }
    }

    fn enabled(&self, trigger: Trigger) -> bool {
        let routing = &self.env.links.routing;
        routing
            .workstream_of(&self.key.account)
            .and_then(|w| routing.automated.get(&w.id, trigger))
            .is_some_and(|m| m.enabled)
    }

    /// Stores the automated messages for `triggers` (those switched on) as one outgoing
    /// message, recorded in the transcript. Answers whether the transcript changed.
    pub(super) fn send_automated(
        &mut self,
        conversation: &ConversationRecordId,
        triggers: &[Trigger],
        position: Option<usize>,
    ) -> Result<bool, ConversationError> {
        let Some(outbound) = self.env.links.outbound.clone() else {
            return Ok(false);
        };
        let routing = &self.env.links.routing;
        let Some(workstream) = routing.workstream_of(&self.key.account) else {
            return Ok(false);
        };
        let Some(state) = self.state.as_mut() else {
            return Ok(false);
        };
        if state.contact.blocked {
            return Ok(false);
        }
        let profile = outbound.contacts.cached(&self.key);
        let current = state.current.as_ref().filter(|c| &c.id == conversation);
        let agent = current.and_then(|c| c.agent.as_ref());
        let queue = current.and_then(|c| c.routing.as_ref()).map(|r| &r.queue);
        let slots = Slots {
            customer_name: profile.as_ref().and_then(|p| p.display_name.as_deref()),
            agent_name: agent
                .and_then(|a| routing.agent_names.get(a))
                .map(String::as_str),
            queue_name: queue
                .map(|q| routing.queue_names.get(q).unwrap_or(q))
                .map(String::as_str),
            position,
        };
        let language = profile.as_ref().and_then(|p| p.language.as_deref());
        let texts: Vec<String> = triggers
            .iter()
            .filter_map(|t| routing.automated.get(&workstream.id, *t))
            .filter_map(|m| m.render(language, &workstream.language, &slots))
            .collect();
        let Some(&first) = triggers.first() else {
            return Ok(false);
        };
        if texts.is_empty() {
            return Ok(false);
        }
        // Stable per occasion: the n-th transition of this conversation. Told already (a
        // recovery routes the conversation again): nothing more to say.
        let occasion = current.map_or(0, |c| c.transitions.len());
        let id = format!("{conversation}/auto/{}/{occasion}", first.as_str());
        if state.has_automated(&id) {
            return Ok(false);
        }
        let now = super::now_ms();
        let contents: Vec<Content> = texts
            .into_iter()
            .map(|text| Content::Text { text })
            .collect();
        let recorded = state.record_automated(&contents, &id, now, false);
        let outgoing = Outgoing {
            id,
            key: self.key.clone(),
            conversation: conversation.clone(),
            origin: Origin::Automated { trigger: first },
            contents,
            quick_replies: Vec::new(),
            reply_token: state.take_reply_token(now, outbound.reply_token_ttl.as_millis() as i64),
            show_sender: false,
            created_at_ms: now,
        };
        let known_new = !self.unrecorded.contains(&outgoing.id);
        outbound.outbox.enqueue(&outgoing, known_new)?;
        Ok(recorded)
    }

    /// Stores an agent's message for the customer, with the consent notice before the
    /// conversation's first one.
    pub(super) fn send_agent_message(
        &mut self,
        agent: &AgentId,
        content: Content,
        client_msg_id: String,
        quick_replies: Vec<QuickReply>,
    ) -> Result<(), ConversationError> {
        let Some(outbound) = self.env.links.outbound.clone() else {
            return Ok(());
        };
        let routing = &self.env.links.routing;
        let workstream = routing.workstream_of(&self.key.account);
        let Some(state) = self.state.as_mut() else {
            return Err(ConversationError::NotReady);
        };
        let Some(conversation) = state.current.as_ref().map(|c| c.id.clone()) else {
            return Ok(());
        };
        let id = format!("{conversation}/agent/{client_msg_id}");
        let now = super::now_ms();
        let mut contents = Vec::new();
        if state.consent_due() {
            let profile = outbound.contacts.cached(&self.key);
            let consent = workstream.and_then(|w| {
                let slots = Slots {
                    customer_name: profile.as_ref().and_then(|p| p.display_name.as_deref()),
                    agent_name: routing.agent_names.get(agent).map(String::as_str),
                    ..Slots::default()
                };
                let language = profile.as_ref().and_then(|p| p.language.as_deref());
                routing.automated.get(&w.id, Trigger::Consent)?.render(
                    language,
                    &w.language,
                    &slots,
                )
            });
            if let Some(text) = consent {
                let content = Content::Text { text };
                state.record_automated(std::slice::from_ref(&content), &id, now, true);
                contents.push(content);
            }
        }
        contents.push(content);
        let outgoing = Outgoing {
            id,
            key: self.key.clone(),
            conversation,
            origin: Origin::Agent {
                agent: agent.clone(),
                client_msg_id,
            },
            contents,
            quick_replies,
            reply_token: state.take_reply_token(now, outbound.reply_token_ttl.as_millis() as i64),
            show_sender: workstream.is_some_and(|w| w.show_sender),
            created_at_ms: now,
        };
        let known_new = !self.unrecorded.contains(&outgoing.id);
        outbound.outbox.enqueue(&outgoing, known_new)?;
        Ok(())
    }
}
