//! Builds and runs the application.
//!
//! Shutdown order, on SIGINT/SIGTERM or `ServerHandle::stop`: stop accepting connections; let
//! in-flight requests finish (each one commits its own events) within
//! `server.shutdown_timeout_ms`; snapshot every live conversation; then flush sled so that
//! nothing acknowledged waits in memory.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::metrics::Metrics;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use crate::storage::{Journal, SledConversationStore};
use actix::{Actor, Addr};
use linedesk_actors::agent::Agent;
use linedesk_actors::conversation::{ConversationLinks, Registry, SnapshotAll};
use linedesk_actors::router::actor::{AttachRouter, Router};
use linedesk_actors::router::messages::{OpenConversation, RestoreRouting};
use secrecy::ExposeSecret;

use crate::agent_ws::AgentEntry;

pub struct Application {
    server: Server,
    address: SocketAddr,
    journal: Journal,
    registry: Addr<Registry>,
    metrics: Arc<Metrics>,
}

impl Application {
    /// Opens the database and binds the listener; nothing is served until `run_until_stopped`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let db = settings.storage.open()?;
        let journal = Journal::open(db.clone(), settings.storage.durability)
            .context("cannot read the journal")?;
        let conversations = SledConversationStore::open(&db, journal.clone())
            .context("cannot open the conversation store")?;
        // Start order: the router first (agents and conversations report to it), then the
        // agents, then the conversation registry; finally the router learns both.
        let router = Router::new(
            settings.queue_policies(),
            settings.routing.missed_offers_to_away,
        )
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
        let links = ConversationLinks {
            routing: Arc::new(settings.routing_table()),
            router: Some(router.clone().recipient()),
            positions: Some(router.clone().recipient()),
            outbound: None,
            agents: Arc::new(
                agents
                    .iter()
                    .map(|a| (a.id.clone(), a.addr.clone().recipient()))
                    .collect(),
            ),
        };
        let registry = Registry::new(
            Arc::new(conversations.clone()),
            settings.conversation.lifecycle(),
            settings.conversation.runtime(),
        )
        .with_links(links)
        .start();
        router.do_send(AttachRouter {
            registry: registry.clone(),
            agents: settings
                .agent_specs()
                .into_iter()
                .zip(&agents)
                .map(|(spec, a)| (spec, a.addr.clone().recipient()))
                .collect(),
        });
        let open = conversations
            .open_conversations()
            .map_err(|e| anyhow::anyhow!("cannot read open conversations: {e}"))?;
        router.do_send(RestoreRouting {
            conversations: open
                .into_iter()
                .map(|c| OpenConversation {
                    agent: c
                        .agent
                        .as_deref()
                        .and_then(|a| linedesk_actors::domain::AgentId::parse(a).ok()),
                    conversation: c.id,
                    status: c.status,
                    routing: c.routing,
                    since_ms: c.opened_at_ms,
                    capacity_held: c.capacity_held,
                })
                .collect(),
        });
        let metrics = Arc::new(Metrics::default());

        let bind = settings.server.bind_addr()?;
        let listener =
            TcpListener::bind(bind).with_context(|| format!("cannot listen on {bind}"))?;
        let address = listener.local_addr()?;

        let state = web::Data::new(AppState::new(
            settings.clone(),
            journal.clone(),
            conversations,
            registry.clone(),
            router,
            agents,
            metrics.clone(),
        ));
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(routes::configure)
        })
        .shutdown_timeout(settings.server.shutdown_timeout().as_secs().max(1))
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

    /// Serves until a signal or `ServerHandle::stop`, then flushes storage.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await.context("the HTTP server failed")?;
        let saved = self.registry.send(SnapshotAll).await.unwrap_or_default();
        tracing::info!(conversations = saved, "live conversations snapshotted");
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
