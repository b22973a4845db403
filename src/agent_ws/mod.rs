//! The agent websocket: `GET /agent/ws`, one [`session::AgentSession`] per connection.
//! The token comes in `Authorization: Bearer` or, for browsers, `?token=`; a bad token is
//! refused with 401 before the upgrade. After a restart the upgrade waits until routing has the
//! open conversations of the last run back (`startup::RoutingRestore`).

pub mod protocol;
pub mod session;

use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use linedesk_actors::agent::Agent;
use linedesk_actors::domain::AgentId;
use sha2::{Digest, Sha256};

use crate::routes::{AppState, ErrorBody};
use session::{AgentSession, SessionPorts};

/// An agent who may connect, with the digest of their token.
#[derive(Clone)]
pub struct AgentEntry {
    pub id: AgentId,
    pub name: String,
    pub token_digest: [u8; 32],
    pub addr: Addr<Agent>,
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn token_of(request: &HttpRequest) -> Option<String> {
    let header = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    header.or_else(|| {
        web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
            .ok()
            .and_then(|q| q.get("token").cloned())
    })
}

pub async fn agent_ws(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let agent = token_of(&request).and_then(|token| {
        let given = digest(&token);
        // Digests of equal length compared whole: the time says nothing about the token.
        state
            .agents
            .iter()
            .find(|a| a.token_digest == given)
            .cloned()
    });
    let Some(agent) = agent else {
        tracing::warn!("agent websocket refused: missing or unknown token");
        return Ok(
            ErrorBody::new("unauthorized", "missing or unknown agent token")
                .respond(StatusCode::UNAUTHORIZED),
        );
    };
    // After a restart an agent is connected once routing has the open conversations back:
    // `hello` then lists theirs, and offers go out oldest first rather than oldest read first.
    // An error means the restore is gone without saying so; there is nothing left to wait for.
    let mut restored = state.routing_restored.clone();
    let _ = restored.wait_for(|done| *done).await;
    let (response, ws, stream) = actix_ws::handle(&request, body)?;
    let ports = SessionPorts {
        agent: agent.addr.clone(),
        router: state.router.clone(),
        live: state.live.clone(),
        journal: state.journal.clone(),
        heartbeat: std::time::Duration::from_millis(state.settings.routing.heartbeat_interval_ms),
        contacts: state.outbound.contacts.clone(),
    };
    tracing::info!(agent_id = %agent.id, "agent connected");
    AgentSession::create(|ctx| {
        ctx.add_stream(stream);
        AgentSession::new(agent.id, agent.name, ports, ws)
    });
    Ok(response)
}
