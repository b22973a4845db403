//! `POST /line/webhook/{account_id}`: the callback URL LINE delivers events to.
//!
//! Order matters: find the account, read the body within `server.max_body_bytes`, check the
//! signature on the raw bytes, only then parse; store every new event in the journal, wait
//! until it is as durable as configured, and only then answer 200. Any refusal writes nothing.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use linedesk_actors::conversation::now_ms;
use linedesk_actors::domain::{AccountId, ConversationKey, IdError, LineSource};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AppState, ErrorBody};
use crate::line::events::{self, Event, EventKind, MessageContent, Source};
use crate::line::inbound;
use crate::line::signature::{self, SignatureError};
use crate::metrics::Rejection;
use crate::outbound::FetchAttachment;
use crate::storage::PendingDownload;
use crate::storage::{IncomingEvent, StorageError};

const SIGNATURE_HEADER: &str = "x-line-signature";

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no LINE account `{0}` is configured")]
    UnknownAccount(String),
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("invalid x-line-signature: {0}")]
    InvalidSignature(#[from] SignatureError),
    #[error("{0}")]
    MalformedBody(String),
    #[error("the events could not be stored")]
    Storage(#[from] StorageError),
}

impl WebhookError {
    fn rejection(&self) -> Rejection {
        match self {
            Self::UnknownAccount(_) => Rejection::UnknownAccount,
            Self::PayloadTooLarge { .. } => Rejection::PayloadTooLarge,
            Self::InvalidSignature(_) => Rejection::InvalidSignature,
            Self::MalformedBody(_) => Rejection::MalformedBody,
            Self::Storage(_) => Rejection::Internal,
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::UnknownAccount(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            Self::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Self::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            // Which check failed is for the operator's log, not for whoever is probing.
            Self::InvalidSignature(_) => "invalid x-line-signature".to_owned(),
            other => other.to_string(),
        };
        ErrorBody::new(self.rejection().code(), message).respond(self.status_code())
    }
}

/// The webhook body's outer shape; events stay raw until each is parsed on its own.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[allow(dead_code)] // required by the shape; routing by destination is not needed yet
    destination: String,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// The webhook's path prefix; the account id is the one segment after it.
pub const PATH: &str = "/line/webhook";

/// Everything under [`PATH`]: `POST {PATH}/{account_id}` is a delivery, any other method on it
/// is refused with 405, and any other path is not found.
pub async fn dispatch(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let account_id = match request.match_info().unprocessed().strip_prefix('/') {
        Some(id) if !id.is_empty() && !id.contains('/') => id.to_owned(),
        _ => return Ok(super::not_found().await),
    };
    if request.method() != actix_web::http::Method::POST {
        return Ok(
            ErrorBody::new("method_not_allowed", "LINE webhooks are POSTed")
                .respond(StatusCode::METHOD_NOT_ALLOWED),
        );
    }
    line_webhook(account_id, request, payload, state).await
}

#[tracing::instrument(
    name = "line_webhook",
    skip_all,
    fields(account_id = %account_id, events = tracing::field::Empty)
)]
async fn line_webhook(
    account_id: String,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    match receive(&account_id, &request, payload, &state).await {
        // `{}`, as JSON, without building and serialising a map per webhook.
        Ok(()) => Ok(HttpResponse::Ok()
            .content_type(actix_web::http::header::ContentType::json())
            .body("{}")),
        Err(error) => {
            state.metrics.webhook_rejected(error.rejection());
            match &error {
                WebhookError::Storage(e) => tracing::error!(
                    error.message = %e,
                    error.cause_chain = ?e,
                    "webhook events could not be stored; LINE will redeliver"
                ),
                e => tracing::warn!(code = e.rejection().code(), reason = %e, "webhook refused"),
            }
            Err(error)
        }
    }
}

async fn receive(
    account_id: &str,
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(), WebhookError> {
    let account = state
        .accounts
        .get(account_id)
        .ok_or_else(|| WebhookError::UnknownAccount(account_id.to_owned()))?;
    let body = read_body(request, payload, state.settings.server.max_body_bytes).await?;
    signature::verify(
        account.channel_secret.expose_secret().as_bytes(),
        &body,
        request
            .headers()
            .get(SIGNATURE_HEADER)
            .map(|v| v.as_bytes()),
    )?;

    let envelope: Envelope<'_> = serde_json::from_slice(&body)
        .map_err(|e| WebhookError::MalformedBody(format!("not a LINE webhook body: {e}")))?;
    tracing::Span::current().record("events", envelope.events.len());

    let mut parsed = Vec::with_capacity(envelope.events.len());
    for (i, raw) in envelope.events.iter().enumerate() {
        let event = events::parse_event(raw.get())
            .map_err(|e| WebhookError::MalformedBody(format!("events[{i}]: {e}")))?;
        let conversation = conversation_of(&account.id, &event)
            .map_err(|e| WebhookError::MalformedBody(format!("events[{i}].source: {e}")))?;
        parsed.push((event, conversation, *raw));
    }

    let mut unknown = 0;
    for (event, conversation, _) in &parsed {
        if let Some(what) = unknown_type(event) {
            unknown += 1;
            tracing::info!(
                line.event_type = event.type_name(),
                conversation_id = %conversation,
                "{what} type unknown to linedesk; kept as raw JSON"
            );
        }
    }

    let downloads: Vec<PendingDownload> = parsed
        .iter()
        .filter_map(|(event, _, _)| attachment_of(account, event, &state.settings))
        .collect();
    let received_at_ms = now_ms();
    let incoming: Vec<IncomingEvent> = parsed
        .into_iter()
        .map(|(event, conversation, raw)| IncomingEvent {
            // The journal sets the sequence number.
            inbound: Some(inbound::to_inbound(
                account.id.as_str(),
                &event,
                0,
                received_at_ms,
            )),
            timestamp_ms: event.timestamp,
            webhook_event_id: event.webhook_event_id,
            conversation,
            raw: raw.to_owned(),
        })
        .collect();
    // Recorded before the events, so the commit below covers both: a restart resumes them.
    for download in &downloads {
        state.outbound.content.add_pending(download)?;
    }
    let outcome = state
        .journal
        .append(&account.id, incoming, received_at_ms)
        .await?;
    // The events are as durable as `storage.durability` asks once `append` returns (the event
    // log is synced per batch with "flush"; a duplicate's first delivery was synced before its
    // check could be seen). The pending downloads are in sled: a commit makes them durable.
    if !downloads.is_empty() {
        state.journal.commit().await?;
    }
    state
        .metrics
        .webhook_accepted(outcome.stored.len(), outcome.duplicates, unknown);
    // After the events are safe: a download never holds up LINE's webhook.
    if let Some(fetcher) = &state.outbound.attachments {
        for download in downloads {
            fetcher.do_send(FetchAttachment {
                download,
                attempt: 0,
            });
        }
    }
    tracing::debug!(
        stored = outcome.stored.len(),
        duplicates = outcome.duplicates,
        "webhook events stored"
    );
    Ok(())
}

/// Reads the body, refusing it as soon as it passes `limit`.
async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, WebhookError> {
    let declared = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(WebhookError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| WebhookError::MalformedBody(format!("the body could not be read: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(WebhookError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The conversation an event belongs to: its chat, or the account itself for chat-less events.
/// The media of a customer's message, to download now (LINE keeps it only briefly), if the
/// account's workstream accepts attachments.
fn attachment_of(
    account: &crate::settings::AccountSettings,
    event: &Event,
    settings: &crate::settings::Settings,
) -> Option<PendingDownload> {
    let EventKind::Message { message } = &event.kind else {
        return None;
    };
    let accepted = settings
        .workstreams
        .iter()
        .find(|w| w.account == account.id)
        .is_none_or(|w| w.customer_attachments);
    if !accepted {
        return None;
    }
    let (id, provider, name) = match message {
        MessageContent::Image(m) => (&m.id, Some(&m.content_provider), None),
        MessageContent::Video(m) => (&m.id, Some(&m.content_provider), None),
        MessageContent::Audio(m) => (&m.id, Some(&m.content_provider), None),
        MessageContent::File(m) => (&m.id, None, Some(m.file_name.clone())),
        _ => return None,
    };
    let external_url = provider
        .filter(|p| p.kind == events::ContentProviderType::External)
        .and_then(|p| p.original_content_url.clone());
    Some(PendingDownload {
        account: account.id.to_string(),
        message_id: id.clone(),
        external_url,
        name,
    })
}

fn conversation_of(account: &AccountId, event: &Event) -> Result<ConversationKey, IdError> {
    let source = match &event.source {
        Some(Source::User { user_id }) => LineSource::user(user_id.as_str())?,
        Some(Source::Group { group_id, .. }) => LineSource::group(group_id.as_str())?,
        Some(Source::Room { room_id, .. }) => LineSource::room(room_id.as_str())?,
        Some(Source::Unknown) | None => LineSource::Channel,
    };
    Ok(ConversationKey::new(account.clone(), source))
}

/// Names what is unknown about an event, if anything.
fn unknown_type(event: &Event) -> Option<&'static str> {
    match &event.kind {
        EventKind::Unknown { .. } => Some("event"),
        EventKind::Message {
            message: MessageContent::Unknown { .. },
        } => Some("message"),
        _ => None,
    }
}
