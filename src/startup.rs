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
use linedesk_actors::conversation::{Registry, SnapshotAll};

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
        let registry = Registry::new(
            Arc::new(conversations.clone()),
            settings.conversation.lifecycle(),
            settings.conversation.runtime(),
        )
        .start();
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
