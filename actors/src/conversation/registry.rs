//! The registry: starts a conversation actor on its chat's first event (or first question),
//! forwards to it, lets it go when it is idle, fires due timers, and resumes at start-up the
//! chats whose journal is ahead of their snapshot.
//!
//! It is the only holder of conversation addresses, so a passivated actor has no address left
//! and the Supervisor does not bring it back. Conversations run on their own arbiters (threads),
//! spread by key, so a slow one holds up only its thread's share, never the registry.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::actor::{
    now_ms, traced, Conversation, ConversationEnv, ConversationLinks, RuntimeSettings,
};
use super::messages::*;
use super::state::ConversationSettings;
use super::store::ConversationStore;
use crate::domain::{ConversationKey, Inbound};

/// How many due timers one sweep handles; the rest wait for the next sweep.
const DUE_PER_SWEEP: usize = 1_000;

struct Live {
    addr: Addr<Conversation>,
    /// The highest journal sequence this actor was told about.
    notified_seq: u64,
}

pub struct Registry {
    store: Arc<dyn ConversationStore>,
    settings: ConversationSettings,
    runtime: RuntimeSettings,
    env: Option<Arc<ConversationEnv>>,
    links: ConversationLinks,
    live: HashMap<ConversationKey, Live>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    stats: RegistryStats,
}

impl Registry {
    pub fn new(
        store: Arc<dyn ConversationStore>,
        settings: ConversationSettings,
        runtime: RuntimeSettings,
    ) -> Self {
        let threads = match runtime.arbiters {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let arbiters = (0..threads).map(|_| Arbiter::new().handle()).collect();
        Self {
            store,
            settings,
            runtime,
            env: None,
            links: ConversationLinks::default(),
            live: HashMap::new(),
            arbiters,
            next_arbiter: 0,
            stats: RegistryStats::default(),
        }
    }

    /// Connects conversations to routing and agents.
    pub fn with_links(mut self, links: ConversationLinks) -> Self {
        self.links = links;
        self
    }

    /// The live actor of `key`, started (and so recovered from storage) if needed.
    fn actor(&mut self, key: &ConversationKey) -> &mut Live {
        if !self.live.contains_key(key) {
            // unwrap: `env` is set in `started`, before any message is handled.
            let env = self.env.clone().unwrap();
            let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
            self.next_arbiter = self.next_arbiter.wrapping_add(1);
            let actor_key = key.clone();
            let addr =
                Supervisor::start_in_arbiter(arbiter, move |_| Conversation::new(actor_key, env));
            self.stats.started += 1;
            self.live.insert(
                key.clone(),
                Live {
                    addr,
                    notified_seq: 0,
                },
            );
        }
        // unwrap: inserted above when missing.
        self.live.get_mut(key).unwrap()
    }

    fn resume_pending(&mut self) {
        match self.store.pending() {
            Ok(pending) => {
                let count = pending.len();
                for (key, seq) in pending {
                    self.notify(key, seq, Vec::new());
                }
                if count > 0 {
                    tracing::info!(
                        conversations = count,
                        "resuming conversations with unapplied events"
                    );
                }
            }
            Err(e) => tracing::error!(error.message = %e, "cannot list pending conversations"),
        }
    }

    fn notify(&mut self, key: ConversationKey, seq: u64, events: Vec<Inbound>) {
        let live = self.actor(&key);
        let after = live.notified_seq;
        live.notified_seq = live.notified_seq.max(seq);
        live.addr.do_send(JournalAppended { seq, events, after });
    }

    fn fire_due_timers(&mut self) {
        let now = now_ms();
        match self.store.due(now, DUE_PER_SWEEP) {
            Ok(timers) => {
                for timer in timers {
                    self.actor(&timer.key).addr.do_send(Tick {
                        now_ms: now,
                        indexed_ms: timer.deadline_ms,
                    });
                }
            }
            Err(e) => tracing::error!(error.message = %e, "cannot read due timers"),
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.env = Some(Arc::new(ConversationEnv {
            store: self.store.clone(),
            settings: self.settings.clone(),
            runtime: self.runtime.clone(),
            registry: ctx.address().recipient(),
            links: self.links.clone(),
        }));
        self.resume_pending();
        self.fire_due_timers();
        ctx.run_interval(self.runtime.timer_resolution, |act, _| {
            act.fire_due_timers()
        });
    }
}

impl Handler<EventsStored> for Registry {
    type Result = ();

    fn handle(&mut self, msg: EventsStored, _: &mut Self::Context) {
        tracing::debug!(key = %msg.key, seq = msg.seq, "events stored");
        self.notify(msg.key, msg.seq, msg.events);
    }
}

impl Handler<ConversationIdle> for Registry {
    type Result = bool;

    fn handle(&mut self, msg: ConversationIdle, _: &mut Self::Context) -> bool {
        match self.live.get(&msg.key) {
            // Told about events it has not applied yet: it must stay.
            Some(live) if live.notified_seq > msg.applied_seq => false,
            Some(_) => {
                self.live.remove(&msg.key);
                self.stats.passivated += 1;
                // A map does not shrink by itself: after a burst of conversations it would hold
                // their memory forever.
                if self.live.capacity() > 1_024 && self.live.capacity() > 4 * self.live.len() {
                    self.live.shrink_to(2 * self.live.len());
                }
                true
            }
            None => true,
        }
    }
}

impl Handler<AskConversation> for Registry {
    type Result = ResponseFuture<Result<ConversationView, ConversationError>>;

    fn handle(&mut self, msg: AskConversation, _: &mut Self::Context) -> Self::Result {
        let addr = self.actor(&msg.key).addr.clone();
        let unreachable = |e: MailboxError| ConversationError::Unreachable(e.to_string());
        Box::pin(traced(&msg.key, async move {
            match msg.question {
                Question::Get => addr.send(GetConversation).await.map_err(unreachable)?,
                Question::Agent(action) => addr.send(action).await.map_err(unreachable)?,
                Question::Overflowed(notice) => addr.send(notice).await.map_err(unreachable)?,
                #[cfg(feature = "fault-injection")]
                Question::InjectFault => {
                    addr.send(InjectFault).await.map_err(unreachable)?;
                    addr.send(GetConversation).await.map_err(unreachable)?
                }
            }
        }))
    }
}

impl Handler<SnapshotAll> for Registry {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: SnapshotAll, _: &mut Self::Context) -> Self::Result {
        let addrs: Vec<_> = self.live.values().map(|l| l.addr.clone()).collect();
        Box::pin(async move {
            // `send` enqueues at once, so every actor saves on its own arbiter in parallel; the
            // answers are then collected one by one.
            let requests: Vec<_> = addrs.iter().map(|addr| addr.send(SnapshotNow)).collect();
            let mut answers = Vec::with_capacity(requests.len());
            for request in requests {
                answers.push(request.await);
            }
            answers
                .into_iter()
                .filter(|a| matches!(a, Ok(Ok(()))))
                .count()
        })
    }
}

impl Handler<GetRegistryStats> for Registry {
    type Result = MessageResult<GetRegistryStats>;

    fn handle(&mut self, _: GetRegistryStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(RegistryStats {
            live: self.live.len(),
            ..self.stats
        })
    }
}
