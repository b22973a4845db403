//! One agent websocket connection. Frames from the agent become router and conversation
//! requests; events for the agent (from its [`Agent`] actor) become frames. A bad frame gets an
//! `error` frame and the connection stays open. Heartbeats: the server pings every
//! `routing.heartbeat_interval_ms` and closes a connection silent for two intervals.
//!
//! Frames leave through the session's outbox, in order: a writer task takes each pending frame,
//! waits for what it waits on (an `assigned` for the disk, an `offer` for the conversation's
//! details), and writes it. The actor itself never waits on them (no `ctx.wait`), so a slow
//! fsync or websocket write holds up only the frames behind it, not the agent's own requests.

use linedesk_actors::conversation::now_ms;
use std::future::{ready, Future};
use std::pin::Pin;
use std::time::Duration;

use actix::clock::Instant;
use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason, Message as WsMessage, ProtocolError};
use linedesk_actors::agent::{Agent, AgentEvent, Connect, Disconnect, EchoToOthers};
use linedesk_actors::conversation::{
    AgentAction, ApplyAgentAction, AskConversation, Author, ConversationError, LiveConversations,
    Question, TransferTarget, TransitionError,
};
use linedesk_actors::domain::{AgentId, Content, ConversationId, QuickReply};
use linedesk_actors::outbound::ContactBook;
use linedesk_actors::router::actor::Router;
use linedesk_actors::router::messages::{AcceptOffer, RejectOffer, RoutingError, SetPresence};
use linedesk_actors::router::Presence;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::protocol::{self, AgentInfo, ClientFrame, ServerFrame};
use crate::storage::{Journal, SledContacts};

/// What a session needs from the rest of the server.
#[derive(Clone)]
pub struct SessionPorts {
    pub agent: Addr<Agent>,
    pub router: Addr<Router>,
    /// The live conversations, asked directly rather than through the registry's mailbox.
    pub live: LiveConversations,
    pub journal: Journal,
    pub heartbeat: Duration,
    /// Customers' LINE profiles, for offers.
    pub contacts: SledContacts,
}

pub struct AgentSession {
    agent: AgentInfo,
    agent_id: AgentId,
    ports: SessionPorts,
    ws: actix_ws::Session,
    /// Frames for the agent, in order (see the module docs); `None` until started.
    outbox: Option<mpsc::UnboundedSender<PendingFrame>>,
    session: Option<u64>,
    last_seen: Instant,
}

/// A frame on its way to the agent: its text once what it waits on is done (`None`: nothing to
/// send after all).
type PendingFrame = Pin<Box<dyn Future<Output = Option<String>>>>;

/// Writes the session's frames in the order they were queued; ends when the session is gone.
async fn write_frames(
    mut ws: actix_ws::Session,
    mut frames: mpsc::UnboundedReceiver<PendingFrame>,
) {
    while let Some(frame) = frames.recv().await {
        if let Some(text) = frame.await {
            let _ = ws.text(text).await;
        }
    }
}

impl AgentSession {
    pub fn new(
        agent_id: AgentId,
        name: String,
        ports: SessionPorts,
        ws: actix_ws::Session,
    ) -> Self {
        Self {
            agent: AgentInfo {
                id: agent_id.to_string(),
                name,
            },
            agent_id,
            ports,
            ws,
            outbox: None,
            session: None,
            last_seen: Instant::now(),
        }
    }

    /// Queues a frame behind the ones already queued.
    fn send(&self, frame: ServerFrame, _ctx: &mut Context<Self>) {
        self.queue(Box::pin(ready(Some(frame.to_text()))));
    }

    fn queue(&self, frame: PendingFrame) {
        if let Some(outbox) = &self.outbox {
            // The writer only ends once the session drops the sender.
            let _ = outbox.send(frame);
        }
    }

    fn error(
        &self,
        code: &str,
        message: impl Into<String>,
        reference: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        self.send(ServerFrame::error(code, message, reference), ctx);
    }

    fn handle_frame(&mut self, text: &str, ctx: &mut Context<Self>) {
        let frame = match protocol::parse(text) {
            Ok(frame) => frame,
            Err(message) => {
                let code = if message.starts_with("unknown frame type") {
                    "unknown_type"
                } else {
                    "bad_frame"
                };
                return self.error(code, message, None, ctx);
            }
        };
        match frame {
            ClientFrame::Ping {} => self.send(ServerFrame::Pong {}, ctx),
            ClientFrame::Presence { status } => {
                let presence: Presence = match serde_json::from_value(Value::String(status.clone()))
                {
                    Ok(p) => p,
                    Err(_) => {
                        return self.error(
                            "bad_frame",
                            RoutingError::BadPresence(status).to_string(),
                            None,
                            ctx,
                        )
                    }
                };
                let ask = SetPresence {
                    agent: self.agent_id.clone(),
                    presence,
                };
                self.router_call(self.ports.router.send(ask), None, ctx);
            }
            ClientFrame::Accept { conversation_id } => {
                let Some(conversation) = self.conversation_id(&conversation_id, ctx) else {
                    return;
                };
                let ask = AcceptOffer {
                    agent: self.agent_id.clone(),
                    conversation,
                };
                self.router_call(self.ports.router.send(ask), Some(conversation_id), ctx);
            }
            ClientFrame::Reject { conversation_id } => {
                let Some(conversation) = self.conversation_id(&conversation_id, ctx) else {
                    return;
                };
                let ask = RejectOffer {
                    agent: self.agent_id.clone(),
                    conversation,
                };
                self.router_call(self.ports.router.send(ask), Some(conversation_id), ctx);
            }
            ClientFrame::Send {
                conversation_id,
                client_msg_id,
                text,
                sticker,
                image_url,
                video_url,
                preview_url,
                audio_url,
                duration_ms,
                file_url,
                file_name,
                location,
                quick_replies,
            } => {
                let content = match (text, sticker, image_url, video_url, audio_url, file_url, location) {
                    (Some(text), None, None, None, None, None, None) if !text.is_empty() => {
                        Content::Text { text }
                    }
                    (None, Some(s), None, None, None, None, None) => Content::Sticker {
                        package_id: s.package_id,
                        sticker_id: s.sticker_id,
                        keywords: Vec::new(),
                        text: None,
                    },
                    (None, None, Some(url), None, None, None, None) => Content::Image {
                        preview_url: Some(preview_url.unwrap_or_else(|| url.clone())),
                        url: Some(url),
                    },
                    (None, None, None, Some(url), None, None, None) => Content::Video {
                        url: Some(url),
                        preview_url,
                        duration_ms,
                    },
                    (None, None, None, None, Some(url), None, None) => Content::Audio {
                        url: Some(url),
                        duration_ms,
                    },
                    (None, None, None, None, None, Some(url), None) => Content::File {
                        name: file_name.unwrap_or_else(|| {
                            url.rsplit('/').next().unwrap_or("file").to_owned()
                        }),
                        size: None,
                        url: Some(url),
                    },
                    (None, None, None, None, None, None, Some(l)) => Content::Location {
                        title: l.title,
                        address: l.address,
                        latitude: l.latitude,
                        longitude: l.longitude,
                    },
                    _ => {
                        return self.error(
                            "bad_frame",
                            "a `send` carries exactly one of text (not empty), sticker, image_url, video_url, audio_url, file_url, location",
                            Some(conversation_id),
                            ctx,
                        )
                    }
                };
                // Refused here rather than after storing: nothing is half-sent.
                if let Err(e) = crate::line::outgoing::line_messages(&content, None) {
                    return self.error("bad_content", e.to_string(), Some(conversation_id), ctx);
                }
                let quick_replies: Vec<QuickReply> = quick_replies
                    .into_iter()
                    .map(|q| QuickReply {
                        label: q.label,
                        text: q.text,
                    })
                    .collect();
                if quick_replies.len() > 13
                    || quick_replies
                        .iter()
                        .any(|q| q.label.is_empty() || q.text.is_empty())
                {
                    return self.error(
                        "bad_content",
                        "quick_replies: at most 13, each with a label and a text",
                        Some(conversation_id),
                        ctx,
                    );
                }
                let action = AgentAction::Send {
                    content,
                    client_msg_id: client_msg_id.clone(),
                    quick_replies,
                };
                self.conversation_call(conversation_id, action, Some(client_msg_id), ctx);
            }
            ClientFrame::Note {
                conversation_id,
                text,
            } => self.conversation_call(conversation_id, AgentAction::Note { text }, None, ctx),
            ClientFrame::SetWaiting { conversation_id } => {
                self.conversation_call(conversation_id, AgentAction::SetWaiting, None, ctx)
            }
            ClientFrame::End { conversation_id } => {
                self.conversation_call(conversation_id, AgentAction::End, None, ctx)
            }
            ClientFrame::WrapUpDone { conversation_id } => {
                self.conversation_call(conversation_id, AgentAction::WrapUpDone, None, ctx)
            }
            ClientFrame::Transfer {
                conversation_id,
                queue,
                agent_id,
            } => {
                let to = match (queue, agent_id) {
                    (Some(queue), None) => TransferTarget::Queue(queue),
                    (None, Some(agent)) => match AgentId::parse(agent) {
                        Ok(agent) => TransferTarget::Agent(agent),
                        Err(e) => {
                            return self.error(
                                "bad_frame",
                                format!("agent_id: {e}"),
                                Some(conversation_id),
                                ctx,
                            )
                        }
                    },
                    _ => {
                        return self.error(
                            "bad_frame",
                            "a `transfer` names exactly one of queue, agent_id",
                            Some(conversation_id),
                            ctx,
                        )
                    }
                };
                self.conversation_call(conversation_id, AgentAction::Transfer { to }, None, ctx)
            }
        }
    }

    fn conversation_id(&self, raw: &str, ctx: &mut Context<Self>) -> Option<ConversationId> {
        match ConversationId::parse(raw) {
            Ok(id) => Some(id),
            Err(e) => {
                self.error(
                    "bad_frame",
                    format!("conversation_id: {e}"),
                    Some(raw.to_owned()),
                    ctx,
                );
                None
            }
        }
    }

    /// Answers a router request with an `error` frame when it was refused.
    fn router_call<T: 'static>(
        &self,
        request: impl std::future::Future<Output = Result<Result<T, RoutingError>, MailboxError>>
            + 'static,
        reference: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        ctx.spawn(
            request
                .into_actor(self)
                .map(move |answer, act, ctx| match answer {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        let code = match &e {
                            RoutingError::BadPresence(_) => "bad_frame",
                            RoutingError::Router(_) => "not_offered",
                            RoutingError::Conversation(_) => "invalid_state",
                        };
                        act.error(code, e.to_string(), reference, ctx)
                    }
                    Err(e) => act.error("unavailable", e.to_string(), reference, ctx),
                }),
        );
    }

    /// An agent action on a conversation; `send` is acknowledged once stored durably.
    fn conversation_call(
        &self,
        raw_id: String,
        action: AgentAction,
        client_msg_id: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(conversation) = self.conversation_id(&raw_id, ctx) else {
            return;
        };
        let ask = AskConversation {
            key: conversation.key.clone(),
            question: Question::Agent(ApplyAgentAction {
                agent: self.agent_id.clone(),
                action: action.clone(),
            }),
        };
        let answer = self.ports.live.ask(ask);
        let journal = self.ports.journal.clone();
        let fut = async move {
            let view = answer.await;
            if let Ok(view) = &view {
                if view.changed {
                    // `ack` promises the message survives a crash: wait for the disk.
                    journal.commit().await.map_err(|e| e.to_string())?;
                }
            }
            Ok::<_, String>(view)
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |answer, act, ctx| match answer {
                    Ok(Ok(view)) => {
                        if let (Some(client_msg_id), AgentAction::Send { content, .. }) =
                            (&client_msg_id, &action)
                        {
                            if view.changed {
                                // This connection has its `ack`; the agent's others see it.
                                act.echo_to_others(AgentEvent::Message {
                                    conversation: conversation.clone(),
                                    author: Author::Agent {
                                        agent: act.agent_id.clone(),
                                    },
                                    preview: content.preview(),
                                    content: content.clone(),
                                    internal: false,
                                    at_ms: now_ms(),
                                });
                            }
                            act.send(
                                ServerFrame::Ack {
                                    client_msg_id: client_msg_id.clone(),
                                    conversation_id: raw_id.clone(),
                                },
                                ctx,
                            );
                        } else if let AgentAction::Note { text } = &action {
                            act.ports.agent.do_send(AgentEvent::Message {
                                conversation: conversation.clone(),
                                author: Author::Agent {
                                    agent: act.agent_id.clone(),
                                },
                                preview: text.clone(),
                                content: Content::Text { text: text.clone() },
                                internal: true,
                                at_ms: now_ms(),
                            });
                        }
                    }
                    Ok(Err(e)) => {
                        let code = match &e {
                            ConversationError::Transition(TransitionError::NotYours { .. }) => {
                                "not_yours"
                            }
                            ConversationError::Transition(TransitionError::BadTarget(_)) => {
                                "bad_target"
                            }
                            ConversationError::Transition(TransitionError::CustomerBlocked) => {
                                "customer_blocked"
                            }
                            ConversationError::Transition(TransitionError::NotAllowed(_)) => {
                                "not_allowed"
                            }
                            ConversationError::Transition(_) => "invalid_state",
                            ConversationError::NotReady | ConversationError::Unreachable(_) => {
                                "unavailable"
                            }
                            _ => "internal",
                        };
                        act.error(code, e.to_string(), Some(raw_id.clone()), ctx)
                    }
                    Err(e) => act.error("internal", e, Some(raw_id.clone()), ctx),
                }),
        );
    }

    fn echo_to_others(&self, event: AgentEvent) {
        match self.session {
            Some(from_session) => self.ports.agent.do_send(EchoToOthers {
                from_session,
                event,
            }),
            None => self.ports.agent.do_send(event),
        }
    }

    /// Turns an event into its frame; an offer first gathers what the agent needs to decide.
    fn deliver(&mut self, event: AgentEvent, ctx: &mut Context<Self>) {
        let frame = match event {
            AgentEvent::Offer {
                conversation,
                queue,
                expires_at_ms,
            } => return self.offer(conversation, queue, expires_at_ms, ctx),
            AgentEvent::OfferRevoked {
                conversation,
                reason,
            } => ServerFrame::OfferRevoked {
                conversation_id: conversation.to_string(),
                reason,
            },
            AgentEvent::Assigned {
                conversation,
                recent,
            } => {
                // `assigned` promises the assignment survives a crash, as `ack` does for sends:
                // it rides on the next group commit, and the frames behind it wait with it.
                let journal = self.ports.journal.clone();
                let text = ServerFrame::Assigned {
                    conversation_id: conversation.to_string(),
                    recent_messages: recent
                        .iter()
                        .map(
                            |m| json!({"at_ms": m.at_ms, "author": m.author, "preview": m.preview}),
                        )
                        .collect(),
                }
                .to_text();
                return self.queue(Box::pin(async move {
                    if let Err(e) = journal.commit().await {
                        tracing::error!(error.message = %e, "could not flush an assignment");
                    }
                    Some(text)
                }));
            }
            AgentEvent::Message {
                conversation,
                author,
                content,
                preview,
                internal,
                at_ms,
            } => ServerFrame::Message {
                conversation_id: conversation.to_string(),
                from: match (&author, internal) {
                    (_, true) => "note".into(),
                    (Author::Customer { .. }, _) => "customer".into(),
                    (Author::Agent { .. }, _) => "agent".into(),
                    (Author::Bot, _) => "bot".into(),
                    (Author::System, _) => "system".into(),
                },
                // unwrap: content types serialise to JSON without fail.
                content: serde_json::to_value(&content).unwrap(),
                preview,
                at_ms,
            },
            AgentEvent::ConversationChanged {
                conversation,
                status,
            } => ServerFrame::Conversation {
                conversation_id: conversation.to_string(),
                status: status.as_str().into(),
            },
            AgentEvent::PresenceChanged { presence } => ServerFrame::Presence {
                status: presence_name(presence),
            },
            AgentEvent::Delivery {
                conversation,
                client_msg_id,
                status,
            } => ServerFrame::Delivery {
                conversation_id: conversation.to_string(),
                client_msg_id,
                status,
            },
        };
        self.send(frame, ctx);
    }

    fn offer(
        &mut self,
        conversation: ConversationId,
        queue: String,
        expires_at_ms: i64,
        _ctx: &mut Context<Self>,
    ) {
        let ask = AskConversation {
            key: conversation.key.clone(),
            question: Question::Get,
        };
        let request = self.ports.live.ask(ask);
        let contacts = self.ports.contacts.clone();
        self.queue(Box::pin(async move {
            let (customer, recent) = match request.await {
                Ok(view) => {
                    let state = view.state;
                    let recent: Vec<Value> = state
                        .current
                        .as_ref()
                        .map(|c| {
                            let visible: Vec<_> = c.transcript.iter().filter(|e| !e.internal).collect();
                            visible[visible.len().saturating_sub(20)..]
                                .iter()
                                .map(|e| json!({"at_ms": e.at_ms, "author": e.author, "preview": e.preview()}))
                                .collect()
                        })
                        .unwrap_or_default();
                    let profile = contacts.cached(&conversation.key).unwrap_or_default();
                    let customer = json!({
                        "user_id": conversation.key.source.chat_id(),
                        "display_name": profile.display_name,
                        "picture_url": profile.picture_url,
                        "language": profile.language,
                        "contact": state.contact,
                        "previous_conversations": state.history,
                    });
                    (customer, recent)
                }
                _ => (json!({"user_id": conversation.key.source.chat_id()}), Vec::new()),
            };
            let frame = ServerFrame::Offer {
                conversation_id: conversation.to_string(),
                queue,
                customer,
                recent_messages: recent,
                expires_at_ms,
            };
            Some(frame.to_text())
        }));
    }
}

fn presence_name(presence: Presence) -> String {
    match serde_json::to_value(presence) {
        Ok(Value::String(s)) => s,
        _ => format!("{presence:?}"),
    }
}

impl Actor for AgentSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (outbox, frames) = mpsc::unbounded_channel();
        self.outbox = Some(outbox);
        actix::spawn(write_frames(self.ws.clone(), frames));
        let connect = Connect {
            sink: ctx.address().recipient(),
        };
        ctx.wait(self.ports.agent.send(connect).into_actor(self).map(
            |answer, act, ctx| match answer {
                Ok(connected) => {
                    act.session = Some(connected.session);
                    let conversations = connected
                        .conversations
                        .iter()
                        .map(|c| json!({"conversation_id": c.to_string()}))
                        .collect();
                    act.send(
                        ServerFrame::Hello {
                            agent: act.agent.clone(),
                            presence: presence_name(connected.presence),
                            conversations,
                        },
                        ctx,
                    );
                }
                Err(_) => ctx.stop(),
            },
        ));
        let interval = self.ports.heartbeat;
        ctx.run_interval(interval, move |act, ctx| {
            if act.last_seen.elapsed() > interval * 2 {
                tracing::info!(agent_id = %act.agent_id, "agent connection silent for two heartbeats; closing");
                let ws = act.ws.clone();
                actix::spawn(async move {
                    let _ = ws.close(Some(CloseReason::from(CloseCode::Away))).await;
                });
                ctx.stop();
                return;
            }
            let mut ws = act.ws.clone();
            actix::spawn(async move {
                let _ = ws.ping(b"").await;
            });
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if let Some(session) = self.session {
            self.ports.agent.do_send(Disconnect { session });
        }
        Running::Stop
    }
}

impl Handler<AgentEvent> for AgentSession {
    type Result = ();

    fn handle(&mut self, event: AgentEvent, ctx: &mut Self::Context) {
        self.deliver(event, ctx);
    }
}

impl StreamHandler<Result<WsMessage, ProtocolError>> for AgentSession {
    fn handle(&mut self, item: Result<WsMessage, ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match item {
            Ok(WsMessage::Text(text)) => self.handle_frame(&text, ctx),
            Ok(WsMessage::Binary(_)) => {
                self.error("bad_frame", "frames are JSON text, not binary", None, ctx)
            }
            Ok(WsMessage::Ping(bytes)) => {
                let mut ws = self.ws.clone();
                ctx.wait(
                    async move {
                        let _ = ws.pong(&bytes).await;
                    }
                    .into_actor(self),
                );
            }
            Ok(WsMessage::Close(_)) => ctx.stop(),
            Ok(_) => {}
            Err(e) => {
                tracing::info!(agent_id = %self.agent_id, error.message = %e, "agent websocket protocol error");
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
