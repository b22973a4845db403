//! Builds and runs the application.
//!
//! Start order: storage, actors, listener; then, while serving, routing gets back the open
//! conversations of the last run ([`RoutingRestore`]).
//!
//! Shutdown order, on SIGINT/SIGTERM or `ServerHandle::stop`: stop accepting connections; let
//! in-flight requests finish (each one commits its own events) within
//! `server.shutdown_timeout_ms`; snapshot every live conversation and store the journal's
//! checkpoint; then flush sled so that nothing acknowledged waits in memory. (`linedesk serve`
//! then reopens the database once: `storage.snapshot_on_stop`.)

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tokio::sync::watch;

use crate::line::backoff::Backoff;
use crate::line::client::LineClient;
use crate::metrics::Metrics;
use crate::outbound::{AttachmentFetcher, DispatchSettings, Dispatcher, ProfileFetcher};
use crate::routes::{self, AppState, OutboundHandles};
use crate::settings::Settings;
use crate::signals::StopSignals;
use crate::storage::{
    ContentStore, Journal, JournalRetention, SledContacts, SledConversationStore, SledOutbox,
};
use actix::{Actor, Addr, Recipient};
use linedesk_actors::agent::{Agent, AgentEvent};
use linedesk_actors::conversation::{ConversationLinks, Registry, SnapshotAll};
use linedesk_actors::domain::{AccountId, AgentId, ConversationId};
use linedesk_actors::outbound::OutboundLinks;
use linedesk_actors::router::actor::{AttachRouter, Router};
use linedesk_actors::router::messages::{OpenConversation, RestoreRouting};
use secrecy::ExposeSecret;
use secrecy::SecretString;

use crate::agent_ws::AgentEntry;

pub struct Application {
    server: Server,
    address: SocketAddr,
    journal: Journal,
    registry: Addr<Registry>,
    metrics: Arc<Metrics>,
    /// Started by `run_until_stopped` unless a test took it to drive it itself.
    restore: Option<RoutingRestore>,
    stop_signals: StopSignals,
    /// Ends the process if the database stops taking writes; stops with the application.
    _watchdog: Option<crate::storage::watchdog::Watchdog>,
}

impl Application {
    /// Opens the database, starts the actors and binds the listener; nothing is served until
    /// `run_until_stopped`. The open conversations of the last run are not read here: build
    /// time does not grow with them. `run_until_stopped` streams them into the router
    /// ([`RoutingRestore`]) while the server already answers; webhooks meanwhile are stored in
    /// the journal and their conversations tell the router themselves.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let db = settings.storage.open()?;
        let watchdog = watch_database(&db, settings.storage.hang_exit_secs)?;
        let retention = JournalRetention {
            redelivery_window_days: settings.storage.redelivery_window_days,
            event_secs: settings.storage.journal_retention_secs,
        };
        let journal = Journal::open_expiring(
            db.clone(),
            &settings.storage.path,
            settings.storage.durability,
            retention,
        )
        .context("cannot read the journal")?;
        journal.set_commit_interval(std::time::Duration::from_millis(
            settings.storage.group_commit_min_interval_ms,
        ));
        let conversations = SledConversationStore::open(&db, journal.clone())
            .context("cannot open the conversation store")?;
        // Start order: the router first (agents and conversations report to it), then the
        // agents, then the conversation registry; finally the router learns both.
        let router = Router::new(
            settings.queue_policies(),
            settings.routing.missed_offers_to_away,
        )
        .restoring()
        .start();
        let grace = std::time::Duration::from_millis(settings.routing.reconnect_grace_ms);
        let agents: Vec<AgentEntry> = settings
            .agents
            .iter()
            .map(|a| AgentEntry {
                id: a.id.clone(),
                name: a.name.clone(),
                token_digest: crate::agent_ws::digest(a.token.expose_secret()),
                addr: Agent::new(
                    a.id.clone(),
                    router.clone().recipient(),
                    router.clone().recipient(),
                    grace,
                )
                .start(),
            })
            .collect();
        let metrics = Arc::new(Metrics::default());
        let agent_sinks: Arc<HashMap<AgentId, Recipient<AgentEvent>>> = Arc::new(
            agents
                .iter()
                .map(|a| (a.id.clone(), a.addr.clone().recipient()))
                .collect(),
        );
        let (outbound, outbound_links) =
            start_outbound(&settings, &db, agent_sinks.clone(), &metrics)?;
        let links = ConversationLinks {
            routing: Arc::new(settings.routing_table()),
            router: Some(router.clone().recipient()),
            positions: Some(router.clone().recipient()),
            outbound: Some(outbound_links),
            agents: agent_sinks,
        };
        let registry = Registry::new(
            Arc::new(conversations.clone()),
            settings.conversation.lifecycle(),
            settings.conversation.runtime(),
        )
        .with_links(links);
        let live = registry.live_conversations();
        journal.notify(live.clone());
        let registry = registry.launch();
        router.do_send(AttachRouter {
            registry: registry.clone(),
            agents: settings
                .agent_specs()
                .into_iter()
                .zip(&agents)
                .map(|(spec, a)| (spec, a.addr.clone().recipient()))
                .collect(),
        });
        let (restore, routing_restored) = RoutingRestore::new(
            conversations.clone(),
            router.clone(),
            settings.routing.restore_chunk,
            metrics.clone(),
        );

        // Before the listener exists: a SIGTERM sent as soon as the address is printed must stop
        // the server gracefully, not kill it with the default disposition.
        let stop_signals = StopSignals::listen();
        let bind = settings.server.bind_addr()?;
        let listener =
            TcpListener::bind(bind).with_context(|| format!("cannot listen on {bind}"))?;
        let address = listener.local_addr()?;

        let state = web::Data::new(AppState {
            accounts: AppState::accounts_by_id(&settings),
            settings: settings.clone(),
            journal: journal.clone(),
            conversations,
            registry: registry.clone(),
            live,
            router,
            agents,
            metrics: metrics.clone(),
            outbound,
            routing_restored,
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(routes::configure)
        })
        .shutdown_timeout(settings.server.shutdown_timeout().as_secs().max(1))
        // actix-server stops the whole actix System on a signal, and with it the conversation
        // actors, before they can be snapshotted: `run_until_stopped` handles signals itself.
        .disable_signals()
        .on_connect(send_without_delay)
        .listen(listener)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }

        for account in &settings.accounts {
            tracing::info!(
                account_id = %account.id,
                name = %account.name,
                callback_url = %settings.server.callback_url(&account.id),
                "LINE account ready"
            );
        }
        Ok(Self {
            server: server.run(),
            address,
            journal,
            registry,
            metrics,
            restore: Some(restore),
            stop_signals,
            _watchdog: watchdog,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The conversation registry (tests ask it directly).
    pub fn registry(&self) -> Addr<Registry> {
        self.registry.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// A handle to stop the server gracefully from elsewhere (tests, the demo).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Takes the routing restore so that the caller runs it when it likes (tests: to see the
    /// server answer while routing is not rebuilt yet). Without this, `run_until_stopped` runs it.
    pub fn take_routing_restore(&mut self) -> Option<RoutingRestore> {
        self.restore.take()
    }

    /// Serves until a signal or `ServerHandle::stop`, then flushes storage. Routing is restored
    /// in the background meanwhile.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        // A signal stops the HTTP server gracefully, and only it: the actors keep running until
        // they are snapshotted below.
        let signals = std::mem::replace(&mut self.stop_signals, StopSignals::None);
        let server = self.server.handle();
        actix_web::rt::spawn(async move {
            if signals.received().await {
                server.stop(true).await;
            }
        });
        if let Some(restore) = self.restore.take() {
            actix_web::rt::spawn(async move {
                if let Err(e) = restore.run().await {
                    tracing::error!(
                        error.message = %e,
                        error.cause_chain = ?e,
                        "routing was not fully restored; conversations not read wait until their customer writes"
                    );
                }
            });
        }
        self.server.await.context("the HTTP server failed")?;
        let saved = self.registry.send(SnapshotAll).await.unwrap_or_default();
        tracing::info!(conversations = saved, "live conversations snapshotted");
        if let Err(e) = self.journal.settle().await {
            tracing::warn!(error.message = %e, "could not store the journal checkpoint; the next start resumes more conversations than needed");
        }
        self.journal
            .flush()
            .await
            .context("cannot flush the database at shutdown")?;
        tracing::info!(
            last_seq = self.journal.last_seq(),
            "stopped; storage flushed"
        );
        Ok(())
    }
}

/// The open conversations of the last run (queued, or held by an agent), streamed into the
/// router after the server listens. A chunk of `routing.restore_chunk` summaries is read from
/// sled on a blocking thread and sent as one [`RestoreRouting`]; the next is read only once the
/// router has taken it. So memory holds one chunk, not every open conversation, and the router
/// handles conversations' notices between chunks. A conversation that told the router about
/// itself before its chunk came is skipped by the router (see [`Router::restoring`]). Agents'
/// websockets connect once the restore is over, so that their `hello` lists their conversations
/// again and offers go oldest first; webhooks are answered throughout. A summary that cannot be
/// read ends the restore (logged); what was not restored is routed again when its customer writes.
pub struct RoutingRestore {
    conversations: SledConversationStore,
    router: Addr<Router>,
    chunk: usize,
    metrics: Arc<Metrics>,
    /// Set when the restore is over, whether it read everything or failed.
    done: watch::Sender<bool>,
}

impl RoutingRestore {
    /// What `Application::build` prepares (public for the memory bench, which restores a
    /// router of its own), and what turns true when the restore is over.
    pub fn new(
        conversations: SledConversationStore,
        router: Addr<Router>,
        chunk: usize,
        metrics: Arc<Metrics>,
    ) -> (Self, watch::Receiver<bool>) {
        let (done, restored) = watch::channel(false);
        let restore = Self {
            conversations,
            router,
            chunk,
            metrics,
            done,
        };
        (restore, restored)
    }

    /// Runs the restore to its end; returns how many conversations routing got back.
    #[tracing::instrument(name = "routing restore", skip_all)]
    pub async fn run(self) -> anyhow::Result<usize> {
        let restored = self.restore().await;
        self.done.send_replace(true);
        restored
    }

    async fn restore(&self) -> anyhow::Result<usize> {
        let started = std::time::Instant::now();
        let mut after: Option<ConversationId> = None;
        let mut restored = 0;
        loop {
            let read = self.read_after(after.take()).await;
            let summaries = match read {
                Ok(summaries) => summaries,
                Err(e) => {
                    // The router must stop remembering what it heard for a restore that ended.
                    self.router.do_send(RestoreRouting {
                        conversations: Vec::new(),
                        last: true,
                    });
                    return Err(e);
                }
            };
            let last = summaries.len() < self.chunk;
            after = summaries.last().map(|s| s.id.clone());
            let conversations = summaries.into_iter().map(open_conversation).collect();
            restored += self
                .router
                .send(RestoreRouting {
                    conversations,
                    last,
                })
                .await
                .context("the router stopped during the restore")?;
            self.metrics.routing_restored(restored as u64);
            if last {
                break;
            }
        }
        let took = started.elapsed();
        self.metrics.routing_restore_finished(took);
        tracing::info!(
            conversations = restored,
            duration_ms = took.as_millis() as u64,
            "routing restored from open conversations"
        );
        Ok(restored)
    }

    async fn read_after(
        &self,
        after: Option<ConversationId>,
    ) -> anyhow::Result<Vec<crate::storage::ConversationSummary>> {
        let (store, chunk) = (self.conversations.clone(), self.chunk);
        actix_web::rt::task::spawn_blocking(move || {
            store.open_conversations_after(after.as_ref(), chunk)
        })
        .await
        .context("the open conversations reader panicked")?
        .map_err(|e| anyhow::anyhow!("cannot read open conversations: {e}"))
    }
}

/// With `storage.hang_exit_secs` above 0: a database write unfinished after that long ends
/// the process with status 70, for its supervisor to restart it (see
/// [`crate::storage::watchdog`]).
fn watch_database(
    db: &sled::Db,
    hang_exit_secs: u64,
) -> anyhow::Result<Option<crate::storage::watchdog::Watchdog>> {
    use crate::storage::watchdog;
    if hang_exit_secs == 0 {
        return Ok(None);
    }
    let limit = std::time::Duration::from_secs(hang_exit_secs);
    let on_hang = |after: std::time::Duration| {
        tracing::error!(
            after_secs = after.as_secs(),
            "a database write has not finished; exiting so that the supervisor restarts linedesk (recovery replays the journal)"
        );
        std::process::exit(watchdog::HUNG_EXIT_STATUS);
    };
    let watchdog = watchdog::spawn(watchdog::write_probe(db), limit, on_hang)
        .context("cannot start the database watchdog")?;
    Ok(Some(watchdog))
}

/// Turns Nagle's algorithm off on every accepted connection (actix-web leaves it on). With it,
/// a websocket frame written right after another (an agent's `ack`, then the `delivery` of the
/// same message) waited for the client to acknowledge the first, which Linux delays by 40 ms.
fn send_without_delay(connection: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error.message = %e, "cannot turn Nagle's algorithm off");
        }
    }
}

/// What the router needs of an open conversation's summary.
fn open_conversation(summary: crate::storage::ConversationSummary) -> OpenConversation {
    OpenConversation {
        agent: summary
            .agent
            .as_deref()
            .and_then(|a| AgentId::parse(a).ok()),
        conversation: summary.id,
        status: summary.status,
        routing: summary.routing,
        since_ms: summary.opened_at_ms,
        capacity_held: summary.capacity_held,
    }
}

/// The outbox with its dispatcher, the profile and attachment fetchers: each actor holds its
/// own LINE client.
fn start_outbound(
    settings: &Settings,
    db: &sled::Db,
    agents: Arc<HashMap<AgentId, Recipient<AgentEvent>>>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(OutboundHandles, OutboundLinks)> {
    let line = &settings.line;
    let outbox = SledOutbox::open(db, crate::outbound::planner(settings))
        .context("cannot open the outbox")?;
    let contacts = SledContacts::open(db).context("cannot open the contacts")?;
    let content = ContentStore::open(db, &settings.storage.path, settings.content.max_bytes)
        .context("cannot open the content store")?;
    let tokens: Vec<(AccountId, SecretString)> = settings
        .accounts
        .iter()
        .map(|a| (a.id.clone(), a.channel_access_token.clone()))
        .collect();
    let client = LineClient::new(line.endpoints());
    let backoff = Backoff {
        base: Duration::from_millis(line.retry_base_ms),
        max: Duration::from_millis(line.retry_max_ms.max(line.retry_base_ms)),
        factor: 2.0,
    };
    let dispatch = DispatchSettings {
        reply_token_ttl: Duration::from_millis(line.reply_token_ttl_ms),
        backoff,
        retry_window: Duration::from_millis(line.retry_window_ms),
        concurrency: line.concurrency,
        requests_per_second: line.requests_per_second,
        burst: line.burst,
    };
    let dispatcher = Dispatcher::new(
        outbox.clone(),
        client.clone(),
        tokens.clone(),
        agents,
        dispatch,
        metrics.clone(),
    )
    .start();
    outbox.notify(dispatcher.recipient());
    let profiles = ProfileFetcher::new(
        client.clone(),
        contacts.clone(),
        tokens.clone(),
        line.profile_ttl_ms as i64,
        metrics.clone(),
    )
    .start();
    let attachments =
        AttachmentFetcher::new(client, content.clone(), tokens, backoff, metrics.clone()).start();
    let links = OutboundLinks {
        outbox: Arc::new(outbox.clone()),
        contacts: Arc::new(contacts.clone()),
        lookup: Some(profiles.recipient()),
        reply_token_ttl: Duration::from_millis(line.reply_token_ttl_ms),
        profile_wait: Duration::from_millis(line.profile_wait_ms),
    };
    let handles = OutboundHandles {
        outbox,
        contacts,
        content,
        attachments: Some(attachments.recipient()),
    };
    Ok((handles, links))
}
