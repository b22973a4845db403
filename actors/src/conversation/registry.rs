//! The registry: starts a conversation actor on its chat's first event (or first question),
//! forwards to it, lets it go when it is idle, fires due timers, and resumes at start-up the
//! chats whose journal is ahead of their snapshot.
//!
//! Its directory of live actors ([`LiveConversations`]) is the only holder of conversation
//! addresses, so a passivated actor has no address left and the Supervisor does not bring it
//! back. The journal's writer shares the directory: stored events go to their actor without a
//! hop through the registry. Conversations run on their own arbiters (threads),
//! spread by key, so a slow one holds up only its thread's share, never the registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

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

/// Where the journal reports the events it stored, one notice per conversation, in sequence
/// order.
pub trait StoredEventsSink: Send + Sync {
    fn stored(&self, notice: EventsStored);
}

impl StoredEventsSink for Recipient<EventsStored> {
    fn stored(&self, notice: EventsStored) {
        self.do_send(notice);
    }
}

/// The live conversation actors by chat, shared by the registry and whoever stores events (the
/// journal's writer): a stored event reaches its actor, starting it if needed, from the thread
/// that stored it, without a hop through the registry's mailbox. Starts, notices and
/// passivations all happen under its one lock, so an actor's notices are enqueued in sequence
/// order and none goes to an actor the registry has let go.
#[derive(Clone)]
pub struct LiveConversations(Arc<Mutex<Directory>>);

struct Directory {
    /// Set when the registry starts; notices stored before that wait in `early`.
    env: Option<Arc<ConversationEnv>>,
    early: Vec<EventsStored>,
    /// The registry is gone (the system stops): notices have no one to go to.
    closed: bool,
    live: HashMap<ConversationKey, Live>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    stats: RegistryStats,
}

impl StoredEventsSink for LiveConversations {
    fn stored(&self, notice: EventsStored) {
        let mut directory = self.lock();
        if directory.closed {
            return;
        }
        if directory.env.is_none() {
            directory.early.push(notice);
            return;
        }
        directory.notify(notice.key, notice.seq, notice.events);
    }
}

impl LiveConversations {
    fn new(arbiters: Vec<ArbiterHandle>) -> Self {
        Self(Arc::new(Mutex::new(Directory {
            env: None,
            early: Vec::new(),
            closed: false,
            live: HashMap::new(),
            arbiters,
            next_arbiter: 0,
            stats: RegistryStats::default(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Directory> {
        // A panic elsewhere while holding it leaves the map itself whole.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks `key`'s actor, started if needed, from the calling thread: the question does not
    /// wait behind the registry's mailbox (notices, timers, other chats' questions).
    pub fn ask(
        &self,
        msg: AskConversation,
    ) -> impl std::future::Future<Output = Result<ConversationView, ConversationError>> + 'static
    {
        let addr = {
            let mut directory = self.lock();
            directory
                .env
                .is_some()
                .then(|| directory.actor(&msg.key).addr.clone())
        };
        let unreachable = |e: MailboxError| ConversationError::Unreachable(e.to_string());
        traced(&msg.key, async move {
            let Some(addr) = addr else {
                return Err(ConversationError::Unreachable(
                    "the conversation registry is not started".into(),
                ));
            };
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
        })
    }

    fn notify(&self, key: ConversationKey, seq: u64, events: Vec<Inbound>) {
        self.lock().notify(key, seq, events);
    }
}

impl Directory {
    /// The live actor of `key`, started (and so recovered from storage) if needed.
    fn actor(&mut self, key: &ConversationKey) -> &mut Live {
        if !self.live.contains_key(key) {
            // unwrap: callers check `env` first or run after the registry started (`launch` or
            // `started` sets it).
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

    fn notify(&mut self, key: ConversationKey, seq: u64, events: Vec<Inbound>) {
        let live = self.actor(&key);
        let after = live.notified_seq;
        live.notified_seq = live.notified_seq.max(seq);
        live.addr.do_send(JournalAppended { seq, events, after });
    }

    /// Lets `key`'s actor stop unless it was told of events it has not applied.
    fn passivate(&mut self, key: &ConversationKey, applied_seq: u64) -> bool {
        match self.live.get(key) {
            // Told about events it has not applied yet: it must stay.
            Some(live) if live.notified_seq > applied_seq => false,
            Some(_) => {
                self.live.remove(key);
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

pub struct Registry {
    store: Arc<dyn ConversationStore>,
    settings: ConversationSettings,
    runtime: RuntimeSettings,
    links: ConversationLinks,
    live: LiveConversations,
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
            links: ConversationLinks::default(),
            live: LiveConversations::new(arbiters),
        }
    }

    /// Connects conversations to routing and agents.
    pub fn with_links(mut self, links: ConversationLinks) -> Self {
        self.links = links;
        self
    }

    /// Starts the registry with its directory ready at once, so that questions asked through
    /// [`LiveConversations::ask`] right after this returns already reach their actors.
    pub fn launch(self) -> Addr<Self> {
        let ctx = Context::new();
        self.live.lock().env = Some(self.env(ctx.address()));
        ctx.run(self)
    }

    fn env(&self, registry: Addr<Self>) -> Arc<ConversationEnv> {
        Arc::new(ConversationEnv {
            store: self.store.clone(),
            settings: self.settings.clone(),
            runtime: self.runtime.clone(),
            registry: registry.recipient(),
            links: self.links.clone(),
        })
    }

    /// The live actors, for the journal to report stored events to directly.
    pub fn live_conversations(&self) -> LiveConversations {
        self.live.clone()
    }

    fn resume_pending(&mut self) {
        match self.store.pending() {
            Ok(pending) => {
                let count = pending.len();
                for (key, seq) in pending {
                    self.live.notify(key, seq, Vec::new());
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

    fn fire_due_timers(&mut self) {
        let now = now_ms();
        match self.store.due(now, DUE_PER_SWEEP) {
            Ok(timers) => {
                let mut directory = self.live.lock();
                for timer in timers {
                    directory.actor(&timer.key).addr.do_send(Tick {
                        now_ms: now,
                        indexed_ms: timer.deadline_ms,
                    });
                }
            }
            Err(e) => tracing::error!(error.message = %e, "cannot read due timers"),
        }
    }
}

impl Drop for Registry {
    /// The environment holds the store, and the store the journal that holds this directory:
    /// without this the database would stay open after the system stops.
    fn drop(&mut self) {
        let mut directory = self.live.lock();
        directory.closed = true;
        directory.env = None;
        directory.early.clear();
        directory.live.clear();
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let env = self.env(ctx.address());
        {
            let mut directory = self.live.lock();
            directory.env.get_or_insert(env);
            for notice in std::mem::take(&mut directory.early) {
                directory.notify(notice.key, notice.seq, notice.events);
            }
        }
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
        self.live.notify(msg.key, msg.seq, msg.events);
    }
}

impl Handler<ConversationIdle> for Registry {
    type Result = bool;

    fn handle(&mut self, msg: ConversationIdle, _: &mut Self::Context) -> bool {
        self.live.lock().passivate(&msg.key, msg.applied_seq)
    }
}

impl Handler<AskConversation> for Registry {
    type Result = ResponseFuture<Result<ConversationView, ConversationError>>;

    fn handle(&mut self, msg: AskConversation, _: &mut Self::Context) -> Self::Result {
        Box::pin(self.live.ask(msg))
    }
}

impl Handler<SnapshotAll> for Registry {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: SnapshotAll, _: &mut Self::Context) -> Self::Result {
        let addrs: Vec<_> = self
            .live
            .lock()
            .live
            .values()
            .map(|l| l.addr.clone())
            .collect();
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
        let directory = self.live.lock();
        MessageResult(RegistryStats {
            live: directory.live.len(),
            ..directory.stats
        })
    }
}
