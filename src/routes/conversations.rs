//! The operators' read API on conversations: `GET /api/conversations` (filters: account, user,
//! status; paginated with `after`) and `GET /api/conversations/{id}` (state, transitions,
//! transcript).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use linedesk_actors::conversation::{
    AskConversation, ConversationError, ConversationRecord, ConversationState, Question, Status,
};
use linedesk_actors::domain::{AccountId, ConversationId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::Admin;
use super::{AppState, ErrorBody};
use crate::storage::ListQuery;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;
/// Index entries one page may read before it returns (with a `next` cursor) regardless.
const SCAN_BUDGET: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no conversation {0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        };
        ErrorBody::new(code, self.to_string()).respond(self.status_code())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    account: Option<String>,
    user: Option<String>,
    status: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    _: Admin,
    params: Result<web::Query<ListParams>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params
        .map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?
        .into_inner();
    let query = ListQuery {
        account: params
            .account
            .map(|a| AccountId::parse(a).map_err(|e| ApiError::BadRequest(format!("account: {e}"))))
            .transpose()?,
        user: params.user,
        status: params
            .status
            .map(|s| {
                Status::parse(&s).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "status: `{s}` is not one of open, bot, queued, active, waiting, wrap_up, closed"
                    ))
                })
            })
            .transpose()?,
        after: params
            .after
            .map(|a| ConversationId::parse(&a).map_err(|e| ApiError::BadRequest(format!("after: {e}"))))
            .transpose()?,
        limit: match params.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(n) => {
                return Err(ApiError::BadRequest(format!(
                    "limit: {n} is not between 1 and {MAX_LIMIT}"
                )))
            }
        },
        scan_budget: SCAN_BUDGET,
    };
    let store = state.conversations.clone();
    let page = web::block(move || store.list(&query))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({
        "items": page.items,
        "next": page.next.map(|id| id.to_string()),
    })))
}

pub async fn detail(
    _: Admin,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = ConversationId::parse(&id).map_err(|e| ApiError::BadRequest(format!("id: {e}")))?;
    let store = state.conversations.clone();
    let key = id.key.clone();
    let known = web::block(move || store.knows(&key))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !known {
        return Err(ApiError::NotFound(id.to_string()));
    }
    // The actor answers for its chat, brought up to date with the journal first.
    let view = state
        .live
        .ask(AskConversation {
            key: id.key.clone(),
            question: Question::Get,
        })
        .await
        .map_err(|e| match e {
            ConversationError::NotReady | ConversationError::Unreachable(_) => {
                ApiError::Unavailable(e.to_string())
            }
            e => ApiError::Internal(e.to_string()),
        })?;
    let chat = &view.state;
    if let Some(current) = chat.current.as_ref().filter(|c| c.id == id) {
        return Ok(HttpResponse::Ok().json(render(current, chat, view.restarts, &state)));
    }
    let store = state.conversations.clone();
    let archived_id = id.clone();
    let archived = web::block(move || store.archived(&archived_id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
    Ok(HttpResponse::Ok().json(render(&archived, chat, view.restarts, &state)))
}

/// The detail document: the conversation, its chat's contact and profile, and per transcript
/// entry a preview (what an agent sees) and, for what went to the customer, its delivery.
fn render(
    conversation: &ConversationRecord,
    chat: &ConversationState,
    restarts: u32,
    state: &AppState,
) -> Value {
    // unwrap: the record types serialise to JSON without fail.
    let mut doc = serde_json::to_value(conversation).unwrap();
    let statuses = state.outbound.outbox.statuses_of(&conversation.id);
    if let Some(entries) = doc["transcript"].as_array_mut() {
        for (entry, original) in entries.iter_mut().zip(&conversation.transcript) {
            entry["preview"] = Value::String(original.preview());
            if let Some(outgoing) = &original.outgoing {
                entry["delivery"] = match &statuses {
                    Ok(statuses) => statuses
                        .get(outgoing)
                        .map_or(Value::Null, |s| serde_json::to_value(s).unwrap()),
                    Err(e) => json!({"status": "unknown", "reason": e.to_string()}),
                };
            }
        }
    }
    doc["contact"] = serde_json::to_value(&chat.contact).unwrap();
    let profile = state.outbound.contacts.get(&chat.key).ok().flatten();
    doc["profile"] = serde_json::to_value(profile.and_then(|r| r.profile)).unwrap();
    doc["history"] = serde_json::to_value(&chat.history).unwrap();
    doc["actor_restarts"] = json!(restarts);
    doc
}
