//! HTTP routes. Every error answer is JSON `{"code": ..., "message": ...}`.

mod admin;
mod content;
mod conversations;
mod error;
mod health;
mod metrics;
mod webhook;

pub use error::ErrorBody;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{web, HttpResponse};

use crate::metrics::Metrics;
use crate::settings::{AccountSettings, Settings};
use crate::storage::{Journal, SledConversationStore};
use actix::Addr;
use linedesk_actors::conversation::{LiveConversations, Registry};
use linedesk_actors::router::actor::Router;

use crate::agent_ws::AgentEntry;

/// What the handlers share.
pub struct AppState {
    pub settings: Arc<Settings>,
    /// Accounts by id, for the callback URL's lookup.
    pub accounts: HashMap<String, AccountSettings>,
    pub journal: Journal,
    pub conversations: SledConversationStore,
    pub registry: Addr<Registry>,
    /// The live conversations, asked directly rather than through the registry's mailbox.
    pub live: LiveConversations,
    pub router: Addr<Router>,
    pub agents: Vec<AgentEntry>,
    pub metrics: Arc<Metrics>,
    pub outbound: OutboundHandles,
    /// Turns true once routing has the open conversations of the last run back (or the restore
    /// ended early); agents' connections wait for it.
    pub routing_restored: tokio::sync::watch::Receiver<bool>,
}

/// The stores and actors of the way back to LINE, for handlers.
#[derive(Clone)]
pub struct OutboundHandles {
    pub outbox: crate::storage::SledOutbox,
    pub contacts: crate::storage::SledContacts,
    pub content: crate::storage::ContentStore,
    /// Downloads customers' attachments (not started when no account can be reached).
    pub attachments: Option<actix::Recipient<crate::outbound::FetchAttachment>>,
}

impl AppState {
    /// Accounts by id, as `accounts` holds them.
    pub fn accounts_by_id(settings: &Settings) -> HashMap<String, AccountSettings> {
        settings
            .accounts
            .iter()
            .map(|a| (a.id.to_string(), a.clone()))
            .collect()
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The hottest route first, and under a static prefix: a `{account_id}` pattern costs a
    // regex match per delivery (~3% of a core at full ingest).
    cfg.service(web::scope(webhook::PATH).default_service(web::to(webhook::dispatch)))
        .route("/healthz", web::get().to(health::healthz))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/agent/ws", web::get().to(crate::agent_ws::agent_ws))
        .service(
            web::scope("/api")
                .route("/conversations", web::get().to(conversations::list))
                .route("/conversations/{id}", web::get().to(conversations::detail))
                .route("/content", web::post().to(content::upload))
                .route("/content/{id}", web::get().to(content::private)),
        )
        .route("/content/{id}", web::get().to(content::public))
        .default_service(web::to(not_found));
}

async fn not_found() -> HttpResponse {
    ErrorBody::new("not_found", "no such endpoint").respond(actix_web::http::StatusCode::NOT_FOUND)
}
