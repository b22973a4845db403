//! The agent actor: fans events out to the agent's connections and tells the router when the
//! agent is gone for good (last connection closed and the reconnect grace over).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use actix::prelude::*;

use super::messages::*;
use crate::domain::{AgentId, ConversationId};
use crate::router::messages::{AgentGone, SetPresence};
use crate::router::state::Presence;

pub struct Agent {
    id: AgentId,
    router: Recipient<AgentGone>,
    presence_to: Recipient<SetPresence>,
    reconnect_grace: Duration,
    sessions: HashMap<u64, Recipient<AgentEvent>>,
    next_session: u64,
    presence: Presence,
    /// Conversations assigned to this agent and not closed, for `hello`.
    held: BTreeSet<ConversationId>,
    grace: Option<SpawnHandle>,
}

impl Agent {
    pub fn new(
        id: AgentId,
        router: Recipient<AgentGone>,
        presence_to: Recipient<SetPresence>,
        reconnect_grace: Duration,
    ) -> Self {
        Self {
            id,
            router,
            presence_to,
            reconnect_grace,
            sessions: HashMap::new(),
            next_session: 0,
            presence: Presence::Offline,
            held: BTreeSet::new(),
            grace: None,
        }
    }
}

impl Actor for Agent {
    type Context = Context<Self>;
}

impl Handler<Connect> for Agent {
    type Result = MessageResult<Connect>;

    fn handle(&mut self, msg: Connect, ctx: &mut Self::Context) -> Self::Result {
        if let Some(grace) = self.grace.take() {
            ctx.cancel_future(grace);
        }
        self.next_session += 1;
        self.sessions.insert(self.next_session, msg.sink);
        if self.presence == Presence::Offline {
            // Signing in makes an agent available; they can choose otherwise at once.
            self.presence = Presence::Available;
            self.presence_to.do_send(SetPresence {
                agent: self.id.clone(),
                presence: Presence::Available,
            });
        }
        MessageResult(Connected {
            session: self.next_session,
            presence: self.presence,
            conversations: self.held.iter().cloned().collect(),
        })
    }
}

impl Handler<Disconnect> for Agent {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Self::Context) {
        self.sessions.remove(&msg.session);
        if self.sessions.is_empty() && self.grace.is_none() {
            tracing::info!(agent_id = %self.id, grace_ms = self.reconnect_grace.as_millis() as u64, "agent's last connection closed");
            self.grace = Some(ctx.run_later(self.reconnect_grace, |act, _| {
                act.grace = None;
                act.presence = Presence::Offline;
                act.held.clear();
                act.router.do_send(AgentGone {
                    agent: act.id.clone(),
                });
            }));
        }
    }
}

impl Handler<AgentEvent> for Agent {
    type Result = ();

    fn handle(&mut self, event: AgentEvent, _: &mut Self::Context) {
        match &event {
            AgentEvent::Assigned { conversation, .. } => {
                self.held.insert(conversation.clone());
            }
            AgentEvent::ConversationChanged {
                conversation,
                status,
            } if *status == crate::conversation::Status::Closed => {
                self.held.remove(conversation);
            }
            AgentEvent::PresenceChanged { presence } => self.presence = *presence,
            _ => {}
        }
        for sink in self.sessions.values() {
            sink.do_send(event.clone());
        }
    }
}

impl Handler<EchoToOthers> for Agent {
    type Result = ();

    fn handle(&mut self, msg: EchoToOthers, _: &mut Self::Context) {
        for (_, sink) in self
            .sessions
            .iter()
            .filter(|(session, _)| **session != msg.from_session)
        {
            sink.do_send(msg.event.clone());
        }
    }
}
