//! The fake LINE API over HTTP: LINE's paths, headers and status codes.
//!
//! Every LINE API request goes through one pipeline ([`line_api`]):
//!
//! 1. read the body (over 2 MB: 413) and record the request;
//! 2. unknown path: 404; known path, wrong method: 405;
//! 3. `Authorization: Bearer <channel access token>` of a configured channel, or 401;
//! 4. take the first matching injected fault, wait the global latency (and the fault's);
//! 5. a status fault answers now; a drop fault closes the connection now (or after handling,
//!    for a lost response);
//! 6. `X-Line-Retry-Key` anywhere but push: 400; then the operation itself ([`perform`]).
//!
//! Every answer carries a fresh `X-Line-Request-Id`, and is recorded next to its request.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::Value;

use super::faults::{Fault, FaultAction};
use super::ids;
use super::recorder::RecordedRequest;
use super::requests::{
    self, PushRequest, ReplyRequest, SetWebhookEndpointRequest, TestWebhookEndpointRequest,
};
use super::responses::{
    default_message, Answer, AnswerBody, AUTHENTICATION_FAILED, AUTHORIZATION_REQUIRED,
    MAX_BODY_BYTES, PAYLOAD_TOO_LARGE, RETRY_KEY_NOT_SUPPORTED,
};
use super::state::{bot_info, Shared};
use super::webhooks::check_loopback_url;
use super::{control, FakeChannel};

/// A bigger body than this is not even read to the end before the 413.
const MAX_DRAINED_BYTES: usize = 64 * 1024 * 1024;

/// The LINE API operations the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Reply,
    Push,
    Profile,
    Content,
    ContentPreview,
    ContentTranscoding,
    BotInfo,
    GetWebhookEndpoint,
    SetWebhookEndpoint,
    TestWebhookEndpoint,
    /// A path LINE doesn't have (404).
    Unknown,
    /// A path LINE has, with another method (405).
    WrongMethod,
}

/// Every route of the fake: LINE's API and the control API under `/_fake`.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .service(web::scope("/_fake").configure(control::routes))
        .service(line(
            "/v2/bot/message/reply",
            Method::POST,
            Operation::Reply,
        ))
        .service(line("/v2/bot/message/push", Method::POST, Operation::Push))
        .service(line(
            "/v2/bot/profile/{userId}",
            Method::GET,
            Operation::Profile,
        ))
        .service(line(
            "/v2/bot/message/{messageId}/content",
            Method::GET,
            Operation::Content,
        ))
        .service(line(
            "/v2/bot/message/{messageId}/content/preview",
            Method::GET,
            Operation::ContentPreview,
        ))
        .service(line(
            "/v2/bot/message/{messageId}/content/transcoding",
            Method::GET,
            Operation::ContentTranscoding,
        ))
        .service(line("/v2/bot/info", Method::GET, Operation::BotInfo))
        .service(
            web::resource("/v2/bot/channel/webhook/endpoint")
                .route(web::get().to(handler(Operation::GetWebhookEndpoint)))
                .route(web::put().to(handler(Operation::SetWebhookEndpoint)))
                .default_service(web::to(handler(Operation::WrongMethod))),
        )
        .service(line(
            "/v2/bot/channel/webhook/test",
            Method::POST,
            Operation::TestWebhookEndpoint,
        ))
        .default_service(web::to(handler(Operation::Unknown)));
}

fn line(path: &str, method: Method, operation: Operation) -> actix_web::Resource {
    web::resource(path)
        .route(web::method(method).to(handler(operation)))
        .default_service(web::to(handler(Operation::WrongMethod)))
}

/// An actix handler that runs the pipeline for `operation`.
fn handler(
    operation: Operation,
) -> impl Fn(
    HttpRequest,
    web::Payload,
    web::Data<Shared>,
) -> futures_util::future::LocalBoxFuture<'static, HttpResponse>
       + Clone
       + 'static {
    move |request, payload, shared| Box::pin(line_api(request, payload, shared, operation))
}

/// How a request ended.
enum Outcome {
    Answered(Answer),
    /// The connection was closed on purpose, without an answer.
    Dropped,
}

/// The pipeline described in the module docs.
#[tracing::instrument(
    name = "fake_line.request",
    skip_all,
    fields(http.method = %request.method(), http.path = %request.path(), http.status)
)]
async fn line_api(
    request: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    operation: Operation,
) -> HttpResponse {
    let request_id = ids::request_id();
    let body = read_body(&request, payload).await;
    let channel = bearer_token(&request).and_then(|token| shared.channel_by_token(token));
    let retry_key = header(&request, "x-line-retry-key").map(str::to_owned);
    let seq = {
        let (body_json, body_bytes) = match &body {
            Ok(bytes) => (serde_json::from_slice::<Value>(bytes).ok(), bytes.len()),
            Err(size) => (None, *size),
        };
        let recorded = RecordedRequest {
            seq: 0,
            method: request.method().to_string(),
            path: request.path().to_owned(),
            request_id: request_id.clone(),
            retry_key: retry_key.clone(),
            authorization: header(&request, "authorization").map(mask_authorization),
            account_id: channel.map(|c| c.account_id.to_string()),
            body: body_json,
            body_bytes,
            status: None,
            response: None,
            fault: None,
            received_at_ms: ids::now_ms(),
        };
        shared.lock().recorder.record_request(recorded)
    };
    shared.notify();

    let (outcome, fault) = match body {
        Err(_) => (
            Outcome::Answered(Answer::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                PAYLOAD_TOO_LARGE,
            )),
            None,
        ),
        Ok(body) => {
            let call = Call {
                request: &request,
                body: &body,
                shared: &shared,
                channel,
                retry_key: retry_key.as_deref(),
                request_id: &request_id,
            };
            serve(call, operation).await
        }
    };
    let described = fault.as_ref().map(Fault::describe);
    match outcome {
        Outcome::Answered(answer) => {
            tracing::Span::current().record("http.status", answer.status.as_u16());
            tracing::debug!(fault = described.as_deref(), "answered");
            shared.lock().recorder.answered(
                seq,
                Some(answer.status.as_u16()),
                answer.json_body().cloned(),
                described,
            );
            shared.notify();
            response(answer, &request_id)
        }
        Outcome::Dropped => {
            tracing::debug!(fault = described.as_deref(), "dropped the connection");
            shared.lock().recorder.answered(seq, None, None, described);
            shared.notify();
            close_connection(&request).await
        }
    }
}

/// One LINE API call, once its body is read.
struct Call<'a> {
    request: &'a HttpRequest,
    body: &'a [u8],
    shared: &'a Shared,
    channel: Option<&'a FakeChannel>,
    retry_key: Option<&'a str>,
    request_id: &'a str,
}

/// Steps 2 to 6 of the pipeline; returns the fault applied, if any.
async fn serve(call: Call<'_>, operation: Operation) -> (Outcome, Option<Fault>) {
    match operation {
        Operation::Unknown => return (Outcome::Answered(Answer::not_found()), None),
        Operation::WrongMethod => {
            let answer = Answer::error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
            return (Outcome::Answered(answer), None);
        }
        _ => {}
    }
    let Some(channel) = call.channel else {
        let message = if bearer_token(call.request).is_some() {
            AUTHENTICATION_FAILED
        } else {
            AUTHORIZATION_REQUIRED
        };
        let answer = Answer::error(StatusCode::UNAUTHORIZED, message);
        return (Outcome::Answered(answer), None);
    };

    let (fault, latency) = {
        let mut state = call.shared.lock();
        (state.faults.take(call.request.path()), state.latency)
    };
    let fault_latency = match fault.as_ref().map(|f| &f.action) {
        Some(FaultAction::Latency { delay }) => *delay,
        _ => Duration::ZERO,
    };
    wait(latency + fault_latency).await;

    let lose_response_after = match fault.as_ref().map(|f| &f.action) {
        Some(FaultAction::Respond { status, message }) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = message
                .clone()
                .unwrap_or_else(|| default_message(status).to_owned());
            return (Outcome::Answered(Answer::error(status, message)), fault);
        }
        Some(FaultAction::Drop {
            after,
            processed: false,
        }) => {
            wait(*after).await;
            return (Outcome::Dropped, fault);
        }
        Some(FaultAction::Drop {
            after,
            processed: true,
        }) => Some(*after),
        Some(FaultAction::Latency { .. }) | None => None,
    };

    let answer = if call.retry_key.is_some() && operation != Operation::Push {
        Answer::bad_request(RETRY_KEY_NOT_SUPPORTED)
    } else {
        perform(&call, channel, operation)
            .await
            .unwrap_or_else(|refused| refused)
    };
    match lose_response_after {
        Some(after) => {
            // What the request did (a delivery) is visible before the connection closes.
            call.shared.notify();
            wait(after).await;
            (Outcome::Dropped, fault)
        }
        None => (Outcome::Answered(answer), fault),
    }
}

/// The operation's own work. `Err` is an answer refusing the request body.
async fn perform(
    call: &Call<'_>,
    channel: &FakeChannel,
    operation: Operation,
) -> Result<Answer, Answer> {
    let shared = call.shared;
    let account = channel.account_id.as_str();
    let param = |name: &str| {
        call.request
            .match_info()
            .get(name)
            .unwrap_or_default()
            .to_owned()
    };
    let content_type = header(call.request, "content-type");
    let schema_check = shared.config.schema_check;
    let answer = match operation {
        Operation::Reply => {
            let body: ReplyRequest =
                requests::read(call.body, content_type, "ReplyMessageRequest", schema_check)?;
            let ttl = shared.config.reply_token_ttl;
            shared
                .lock()
                .reply(channel, ttl, body, call.request_id, Instant::now())
        }
        Operation::Push => {
            let body: PushRequest =
                requests::read(call.body, content_type, "PushMessageRequest", schema_check)?;
            shared.lock().push(
                channel,
                body,
                call.retry_key,
                call.request_id,
                Instant::now(),
            )
        }
        Operation::Profile => shared
            .lock()
            .profile(&param("userId"), &shared.config.default_language),
        Operation::Content | Operation::ContentPreview => {
            shared.lock().content(&param("messageId"))
        }
        Operation::ContentTranscoding => shared.lock().transcoding(&param("messageId")),
        Operation::BotInfo => bot_info(channel),
        Operation::GetWebhookEndpoint => shared.lock().webhook_endpoint(account),
        Operation::SetWebhookEndpoint => {
            let body: SetWebhookEndpointRequest = requests::read(
                call.body,
                content_type,
                "SetWebhookEndpointRequest",
                schema_check,
            )?;
            if let Err(e) = check_loopback_url(&body.endpoint) {
                return Err(Answer::bad_request(e.to_string()));
            }
            shared.lock().set_webhook_endpoint(account, body.endpoint)
        }
        Operation::TestWebhookEndpoint => {
            let body: TestWebhookEndpointRequest = requests::read(
                call.body,
                content_type,
                "TestWebhookEndpointRequest",
                schema_check,
            )?;
            let url = body.endpoint.or_else(|| shared.lock().webhook_url(account));
            let Some(url) = url else {
                return Err(Answer::bad_request("The webhook endpoint is not set"));
            };
            Answer::ok(shared.test_webhook(account, &url).await)
        }
        Operation::Unknown | Operation::WrongMethod => Answer::not_found(),
    };
    Ok(answer)
}

/// The body, or its size when it is over [`MAX_BODY_BYTES`].
async fn read_body(request: &HttpRequest, mut payload: web::Payload) -> Result<Vec<u8>, usize> {
    let declared = header(request, "content-length").and_then(|v| v.parse::<usize>().ok());
    if let Some(declared) = declared.filter(|&n| n > MAX_DRAINED_BYTES) {
        return Err(declared);
    }
    let mut body = Vec::new();
    let mut size = 0;
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else { break };
        size += chunk.len();
        if size <= MAX_BODY_BYTES {
            body.extend_from_slice(&chunk);
        } else if size > MAX_DRAINED_BYTES {
            break;
        }
    }
    if size > MAX_BODY_BYTES {
        Err(size)
    } else {
        Ok(body)
    }
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

fn bearer_token(request: &HttpRequest) -> Option<&str> {
    let value = header(request, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `Bearer ******** (38 chars)`: shows that a token was sent, never the token.
fn mask_authorization(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, token)) => {
            format!("{scheme} ******** ({} chars)", token.trim().chars().count())
        }
        None => format!("******** ({} chars)", value.chars().count()),
    }
}

async fn wait(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

pub(crate) fn response(answer: Answer, request_id: &str) -> HttpResponse {
    let mut builder = HttpResponse::build(answer.status);
    builder.insert_header(("x-line-request-id", request_id));
    for (name, value) in answer.headers {
        builder.insert_header((name, value));
    }
    match answer.body {
        AnswerBody::Json(value) => builder.json(value),
        AnswerBody::Bytes {
            content_type,
            bytes,
        } => builder.content_type(content_type).body(bytes),
    }
}

/// A second handle on a connection's socket, kept so that a request can close its own
/// connection without answering. Costs one file descriptor per open connection.
struct ConnectionSocket(#[cfg(unix)] std::net::TcpStream);

/// Keeps a [`ConnectionSocket`] with every accepted connection (`HttpServer::on_connect`).
pub(crate) fn keep_socket(connection: &dyn Any, data: &mut Extensions) {
    #[cfg(unix)]
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        use std::os::fd::AsFd;
        if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
            data.insert(ConnectionSocket(std::net::TcpStream::from(fd)));
        }
    }
    #[cfg(not(unix))]
    let _ = (connection, data);
}

/// Shuts the request's connection down both ways: the client reads end-of-stream where the
/// response should be. Where that is not possible, the request never ends instead.
async fn close_connection(request: &HttpRequest) -> HttpResponse {
    #[cfg(unix)]
    if let Some(ConnectionSocket(socket)) = request.conn_data::<ConnectionSocket>() {
        if socket.shutdown(std::net::Shutdown::Both).is_ok() {
            // Nobody reads this: writing to the shut-down socket fails and actix drops it.
            return HttpResponse::build(StatusCode::INTERNAL_SERVER_ERROR).finish();
        }
    }
    let _ = request;
    std::future::pending().await
}

/// A shared state as actix application data.
pub(crate) fn data(shared: Arc<Shared>) -> web::Data<Shared> {
    web::Data::from(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_is_recorded_masked() {
        assert_eq!(
            mask_authorization("Bearer linedesk-demo-channel-access-token-dev"),
            "Bearer ******** (38 chars)"
        );
        assert_eq!(mask_authorization("secret"), "******** (6 chars)");
    }
}
