//! The control API under `/_fake/`: what tests in other processes, the demo and the load
//! generator use to look at and steer the fake. JSON in and out; no LINE token needed; never
//! recorded and never faulted.
//!
//! | route | does |
//! | --- | --- |
//! | `GET /_fake/requests` | every recorded request |
//! | `DELETE /_fake/requests` | forgets the recorded requests and deliveries |
//! | `GET /_fake/deliveries` | every accepted delivery |
//! | `GET /_fake/faults`, `POST /_fake/faults`, `DELETE /_fake/faults` | pending faults: list, inject (one [`Fault`] or an array), clear |
//! | `PUT /_fake/latency` | `{"ms": n}`: latency added to every LINE API request |
//! | `POST /_fake/profiles` | `{"userId", "displayName"?, "pictureUrl"?, "statusMessage"?, "language"?, "blocked"?}` |
//! | `POST /_fake/content` | `{"messageId", "contentType", "base64"}`, or raw bytes with `?messageId=` and their `Content-Type` |
//! | `POST /_fake/customers/{userId}/messages` | `{"text", "account"?}`: sends a webhook as that customer |
//! | `POST /_fake/reply-tokens` | `{"user_id", "account"?}` → `{"replyToken"}` |

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::faults::Fault;
use super::state::{Content, Profile, Shared};
use super::webhooks::{self, WebhookError};

/// Bodies of control requests (content uploads included) up to this size are read.
const MAX_CONTROL_BODY_BYTES: usize = 64 * 1024 * 1024;

pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .app_data(web::PayloadConfig::new(MAX_CONTROL_BODY_BYTES))
        .route("/requests", web::get().to(requests))
        .route("/requests", web::delete().to(reset))
        .route("/deliveries", web::get().to(deliveries))
        .route("/faults", web::get().to(faults))
        .route("/faults", web::post().to(inject_faults))
        .route("/faults", web::delete().to(clear_faults))
        .route("/latency", web::put().to(set_latency))
        .route("/profiles", web::post().to(profiles))
        .route("/content", web::post().to(content))
        .route(
            "/customers/{userId}/messages",
            web::post().to(customer_message),
        )
        .route("/reply-tokens", web::post().to(reply_token))
        .default_service(web::to(|| async {
            error(StatusCode::NOT_FOUND, "no such control route")
        }));
}

async fn requests(shared: web::Data<Shared>) -> HttpResponse {
    let requests: Vec<_> = shared.lock().recorder.requests().cloned().collect();
    HttpResponse::Ok().json(requests)
}

async fn deliveries(shared: web::Data<Shared>) -> HttpResponse {
    let deliveries: Vec<_> = shared.lock().recorder.deliveries().cloned().collect();
    HttpResponse::Ok().json(deliveries)
}

async fn reset(shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().reset_recording();
    shared.notify();
    HttpResponse::NoContent().finish()
}

async fn faults(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.lock().faults.pending())
}

/// One fault or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Faults {
    Many(Vec<Fault>),
    One(Fault),
}

async fn inject_faults(shared: web::Data<Shared>, body: Bytes) -> HttpResponse {
    let faults = match parse::<Faults>(&body) {
        Ok(Faults::Many(faults)) => faults,
        Ok(Faults::One(fault)) => vec![fault],
        Err(message) => return bad_request(&message),
    };
    let bad_status = faults.iter().find_map(|f| match f.action {
        super::FaultAction::Respond { status, .. } if StatusCode::from_u16(status).is_err() => {
            Some(status)
        }
        _ => None,
    });
    if let Some(status) = bad_status {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{status} is not an HTTP status"),
        );
    }
    let mut state = shared.lock();
    for fault in faults {
        state.faults.inject(fault);
    }
    HttpResponse::Ok().json(state.faults.pending())
}

async fn clear_faults(shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().faults.clear();
    HttpResponse::NoContent().finish()
}

#[derive(Deserialize)]
struct Latency {
    ms: u64,
}

async fn set_latency(shared: web::Data<Shared>, body: Bytes) -> HttpResponse {
    match parse::<Latency>(&body) {
        Ok(latency) => {
            shared.lock().latency = Duration::from_millis(latency.ms);
            HttpResponse::Ok().json(json!({ "ms": latency.ms }))
        }
        Err(message) => bad_request(&message),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileCommand {
    #[serde(alias = "user_id")]
    user_id: String,
    #[serde(default, alias = "display_name")]
    display_name: Option<String>,
    #[serde(default, alias = "picture_url")]
    picture_url: Option<String>,
    #[serde(default, alias = "status_message")]
    status_message: Option<String>,
    #[serde(default)]
    language: Option<String>,
    /// `true`: the user blocked the account (profile 404); `false`: unblocked.
    #[serde(default)]
    blocked: Option<bool>,
}

async fn profiles(shared: web::Data<Shared>, body: Bytes) -> HttpResponse {
    let command = match parse::<ProfileCommand>(&body) {
        Ok(command) => command,
        Err(message) => return bad_request(&message),
    };
    let mut state = shared.lock();
    let changes_profile = command.display_name.is_some()
        || command.picture_url.is_some()
        || command.status_message.is_some()
        || command.language.is_some();
    if changes_profile {
        let generated = Profile::generated(&command.user_id, &shared.config.default_language);
        state.register_profile(Profile {
            display_name: command.display_name.unwrap_or(generated.display_name),
            user_id: command.user_id.clone(),
            picture_url: command.picture_url,
            status_message: command.status_message,
            language: command.language,
        });
    }
    match command.blocked {
        Some(true) => state.block_user(&command.user_id),
        Some(false) => state.unblock_user(&command.user_id),
        None => {}
    }
    HttpResponse::Ok().json(json!({ "userId": command.user_id }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentUpload {
    #[serde(alias = "message_id")]
    message_id: String,
    #[serde(alias = "content_type")]
    content_type: String,
    base64: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentQuery {
    #[serde(alias = "message_id")]
    message_id: String,
}

async fn content(request: HttpRequest, shared: web::Data<Shared>, body: Bytes) -> HttpResponse {
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let (message_id, content) = if content_type.starts_with("application/json") {
        let upload = match parse::<ContentUpload>(&body) {
            Ok(upload) => upload,
            Err(message) => return bad_request(&message),
        };
        let Ok(bytes) = BASE64.decode(upload.base64.as_bytes()) else {
            return error(StatusCode::BAD_REQUEST, "`base64` is not base64");
        };
        let content = Content {
            content_type: upload.content_type,
            bytes: Bytes::from(bytes),
        };
        (upload.message_id, content)
    } else {
        let Ok(query) = web::Query::<ContentQuery>::from_query(request.query_string()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "raw content needs ?messageId= (or send JSON {messageId, contentType, base64})",
            );
        };
        let content = Content {
            content_type,
            bytes: body,
        };
        (query.into_inner().message_id, content)
    };
    let size = content.bytes.len();
    shared.lock().register_content(&message_id, content);
    HttpResponse::Ok().json(json!({ "messageId": message_id, "bytes": size }))
}

#[derive(Deserialize)]
struct CustomerMessage {
    text: String,
    #[serde(default)]
    account: Option<String>,
}

async fn customer_message(
    shared: web::Data<Shared>,
    user_id: web::Path<String>,
    body: Bytes,
) -> HttpResponse {
    let message = match parse::<CustomerMessage>(&body) {
        Ok(message) => message,
        Err(message) => return bad_request(&message),
    };
    let Some(account) = message
        .account
        .or_else(|| shared.default_account().map(str::to_owned))
    else {
        return error(StatusCode::BAD_REQUEST, "no channel is configured");
    };
    let sent = shared
        .send_text_as(&webhooks::client(), &account, &user_id, &message.text)
        .await;
    match sent {
        Ok(sent) => HttpResponse::Ok().json(json!({
            "status": sent.status.as_u16(),
            "replyToken": sent.reply_token,
            "webhookEventId": sent.webhook_event_id,
            "messageId": sent.message_id,
            "event": sent.event,
        })),
        Err(e @ (WebhookError::UnknownAccount(_) | WebhookError::NoWebhookUrl(_))) => {
            error(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct ReplyTokenRequest {
    #[serde(alias = "userId")]
    user_id: String,
    #[serde(default)]
    account: Option<String>,
}

async fn reply_token(shared: web::Data<Shared>, body: Bytes) -> HttpResponse {
    let request = match parse::<ReplyTokenRequest>(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    let Some(account) = request
        .account
        .or_else(|| shared.default_account().map(str::to_owned))
    else {
        return error(StatusCode::BAD_REQUEST, "no channel is configured");
    };
    if shared.channel(&account).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("no channel is configured for account `{account}`"),
        );
    }
    let token = shared
        .lock()
        .issue_reply_token(&account, &request.user_id, Instant::now());
    HttpResponse::Ok().json(json!({ "replyToken": token }))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))
}

fn bad_request(message: &str) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, message)
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "message": message }))
}
