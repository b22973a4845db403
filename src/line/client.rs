//! The outbound half of LINE: an awc client for the Messaging API (reference sections 3 and 5).
//!
//! [`LineClient`] sends replies and pushes (message objects from [`super::outgoing`]), fetches
//! profiles, bot info and the bytes of what customers sent, and turns every answer into either a
//! typed success or a [`LineError`] that says whether trying again can help
//! ([`LineError::is_retryable`]). It does not retry, wait for rate limits or store anything: the
//! outbox above it does, with [`super::backoff`] and [`super::rate_limit`].
//!
//! The channel access token is passed per call and only ever goes into the `Authorization`
//! header: it is not kept, logged or put in any error. LINE's `X-Line-Request-Id` is logged at
//! debug, since LINE's support asks for it.
//!
//! awc is not `Send`: keep one client per arbiter (or actor).

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use awc::error::{ConnectError, PayloadError, SendRequestError};
use awc::http::{header, StatusCode};
use awc::ClientResponse;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Where LINE is, and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineEndpoints {
    /// `https://api.line.me` in production; a trailing slash is fine.
    pub api_base: String,
    /// `https://api-data.line.me` in production: the host of the content API.
    pub data_api_base: String,
    /// How long to wait for a connection plus the head of an answer, and then for each piece of
    /// its body (so a large download may take longer overall, as long as it keeps moving).
    pub timeout: Duration,
}

impl LineEndpoints {
    pub const PRODUCTION_API_BASE: &'static str = "https://api.line.me";
    pub const PRODUCTION_DATA_API_BASE: &'static str = "https://api-data.line.me";

    /// LINE's real hosts.
    pub fn production(timeout: Duration) -> Self {
        Self {
            api_base: Self::PRODUCTION_API_BASE.into(),
            data_api_base: Self::PRODUCTION_DATA_API_BASE.into(),
            timeout,
        }
    }
}

/// What LINE accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// LINE's `X-Line-Request-Id`; for a duplicate push, the id of the attempt LINE accepted
    /// earlier (`X-Line-Accepted-Request-Id`) when LINE says it.
    pub request_id: Option<String>,
    /// The ids of the sent messages, in order; may be empty for a duplicate push.
    pub message_ids: Vec<String>,
    /// LINE had already accepted a push with this retry key (409): the messages went out once,
    /// earlier. Treat as delivered.
    pub duplicate: bool,
}

/// A LINE user's public profile. Stored with snake_case names; LINE's camelCase names are read
/// too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(alias = "userId")]
    pub user_id: String,
    #[serde(alias = "displayName")]
    pub display_name: String,
    #[serde(default, alias = "pictureUrl")]
    pub picture_url: Option<String>,
    #[serde(default, alias = "statusMessage")]
    pub status_message: Option<String>,
    /// BCP 47; absent until the user accepted LINE's privacy policy.
    #[serde(default)]
    pub language: Option<String>,
}

/// Downloaded bytes, all of them, within the caller's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The `Content-Type` the server gave, if any.
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

/// The bot behind a channel access token. Stored with snake_case names; LINE's camelCase names
/// are read too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotInfo {
    #[serde(alias = "userId")]
    pub user_id: String,
    #[serde(alias = "basicId")]
    pub basic_id: String,
    #[serde(alias = "displayName")]
    pub display_name: String,
    #[serde(default, alias = "pictureUrl")]
    pub picture_url: Option<String>,
    /// `chat` when "Chat" is on in the Official Account Manager, `bot` when off.
    #[serde(default, alias = "chatMode")]
    pub chat_mode: Option<String>,
}

/// Why a call to LINE (or a content provider) failed. Messages are meant for agents and
/// operators, and never contain the access token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("no answer in time; the request may still have been processed")]
    Timeout,
    #[error("could not talk to the server: {0}")]
    Connect(String),
    /// 429 "The API rate limit has been exceeded. Try again later."
    #[error("LINE's rate limit for this channel was exceeded; try again shortly")]
    RateLimited,
    /// 429 "You have reached your monthly limit.": pushes fail until the quota resets or grows;
    /// replies (free) still work.
    #[error("the LINE account's monthly message quota is used up (LINE said: {message})")]
    QuotaExhausted { message: String },
    /// 400 "Invalid reply token": used already, or too old (about a minute). Push instead.
    #[error("the reply token is invalid, already used or expired; send a push message instead")]
    InvalidReplyToken,
    /// 401: the channel access token is wrong, revoked or expired.
    #[error("LINE refused the channel access token (401): {message}")]
    Unauthorized { message: String },
    /// Any other 4xx, or an unexpected status: LINE will refuse this request again.
    #[error("refused with status {status}: {message}{}", details_suffix(.details))]
    Rejected {
        status: u16,
        message: String,
        /// LINE's `details`, as "property: message".
        details: Vec<String>,
    },
    /// 5xx: LINE's trouble, worth retrying (pushes carry a retry key, so that is safe).
    #[error("server error {status}: {message}")]
    Server { status: u16, message: String },
    #[error("the content is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the answer could not be read: {0}")]
    Decode(String),
    /// The request could not even be built (a malformed URL or header value): a configuration
    /// or data problem that retrying won't fix.
    #[error("the request could not be made: {0}")]
    InvalidRequest(String),
}

fn details_suffix(details: &[String]) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({})", details.join("; "))
    }
}

impl LineError {
    /// Whether the same request may succeed later: timeouts, connection failures, rate limits and
    /// server errors. Everything else needs a different request (or a human).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::Connect(_) | Self::RateLimited | Self::Server { .. }
        )
    }

    /// A stable snake_case label for metrics and for agents' clients.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::RateLimited => "rate_limited",
            Self::QuotaExhausted { .. } => "quota_exhausted",
            Self::InvalidReplyToken => "invalid_reply_token",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Rejected { .. } => "rejected",
            Self::Server { .. } => "server",
            Self::TooLarge { .. } => "too_large",
            Self::Decode(_) => "decode",
            Self::InvalidRequest(_) => "invalid_request",
        }
    }
}

/// LINE's JSON answers are small; anything bigger than this is not what we asked for.
const MAX_JSON_BYTES: u64 = 1024 * 1024;

/// Talks to LINE's Messaging API for any channel; the access token comes with each call.
#[derive(Clone)]
pub struct LineClient {
    /// For LINE's API: redirects off, so the bearer token never follows one elsewhere.
    api: awc::Client,
    /// For external content providers: no token, redirects followed.
    external: awc::Client,
    api_base: String,
    data_api_base: String,
    timeout: Duration,
}

impl fmt::Debug for LineClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineClient")
            .field("api_base", &self.api_base)
            .field("data_api_base", &self.data_api_base)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One rustls configuration for the process: ring for crypto, the webpki (Mozilla) roots for
/// trust, so neither system OpenSSL nor system certificates are needed.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        // unwrap: ring's default provider supports the default protocol versions (TLS 1.2, 1.3).
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }))
}

fn awc_client(timeout: Duration, follow_redirects: bool) -> awc::Client {
    let connector = awc::Connector::new()
        .rustls_0_23(tls_config())
        .timeout(timeout);
    let builder = awc::Client::builder()
        .connector(connector)
        .timeout(timeout)
        .add_default_header((
            header::USER_AGENT,
            concat!("linedesk/", env!("CARGO_PKG_VERSION")),
        ));
    if follow_redirects {
        builder.max_redirects(5).finish()
    } else {
        builder.disable_redirects().finish()
    }
}

impl LineClient {
    pub fn new(endpoints: LineEndpoints) -> Self {
        Self {
            api: awc_client(endpoints.timeout, false),
            external: awc_client(endpoints.timeout, true),
            api_base: endpoints.api_base.trim_end_matches('/').to_owned(),
            data_api_base: endpoints.data_api_base.trim_end_matches('/').to_owned(),
            timeout: endpoints.timeout,
        }
    }

    /// Replies with up to five messages, using a webhook event's reply token (free, single use,
    /// valid about a minute). [`LineError::InvalidReplyToken`] means: push instead.
    #[tracing::instrument(name = "line.reply", skip_all, fields(messages = messages.len()))]
    pub async fn reply(
        &self,
        access_token: &str,
        reply_token: &str,
        messages: &[Value],
    ) -> Result<Sent, LineError> {
        let url = format!("{}/v2/bot/message/reply", self.api_base);
        let body = json!({ "replyToken": reply_token, "messages": messages });
        let request = self.api.post(url).bearer_auth(access_token);
        let mut response = send(request.send_json(&body)).await?;
        let status = response.status();
        let body = self.read(&mut response, MAX_JSON_BYTES).await?;
        if status.is_success() {
            return sent(request_id(&response), &body, false);
        }
        Err(error_for(status, &body))
    }

    /// Pushes up to five messages to a user, group or room. `retry_key` (a UUID, persisted with
    /// the outbox row and reused on every attempt) makes retrying safe: a 409 (key already
    /// accepted) is `Ok(Sent { duplicate: true, .. })`.
    #[tracing::instrument(name = "line.push", skip_all, fields(messages = messages.len()))]
    pub async fn push(
        &self,
        access_token: &str,
        to: &str,
        messages: &[Value],
        retry_key: &str,
    ) -> Result<Sent, LineError> {
        let url = format!("{}/v2/bot/message/push", self.api_base);
        let body = json!({ "to": to, "messages": messages });
        let request = self
            .api
            .post(url)
            .bearer_auth(access_token)
            .insert_header(("X-Line-Retry-Key", retry_key));
        let mut response = send(request.send_json(&body)).await?;
        let status = response.status();
        let body = self.read(&mut response, MAX_JSON_BYTES).await?;
        if status.is_success() {
            return sent(request_id(&response), &body, false);
        }
        if status == StatusCode::CONFLICT {
            let accepted = header_value(&response, "x-line-accepted-request-id");
            tracing::debug!(
                line.accepted_request_id = accepted.as_deref(),
                "LINE had already accepted this retry key"
            );
            return sent(accepted.or_else(|| request_id(&response)), &body, true);
        }
        Err(error_for(status, &body))
    }

    /// A user's profile, or `None` when LINE has none to give (404: not a friend, blocked, or
    /// unknown).
    #[tracing::instrument(name = "line.profile", skip_all)]
    pub async fn profile(
        &self,
        access_token: &str,
        user_id: &str,
    ) -> Result<Option<Profile>, LineError> {
        let url = format!("{}/v2/bot/profile/{}", self.api_base, path_segment(user_id));
        let request = self.api.get(url).bearer_auth(access_token);
        let mut response = send(request.send()).await?;
        let status = response.status();
        let body = self.read(&mut response, MAX_JSON_BYTES).await?;
        match status {
            s if s.is_success() => parse(&body, "profile").map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(error_for(status, &body)),
        }
    }

    /// The bytes of an image, video, audio or file a customer sent (`contentProvider.type` is
    /// `line`), from the data API. Refused with [`LineError::TooLarge`] past `max_bytes`, without
    /// holding more than `max_bytes` in memory. LINE answers 202 while it is still preparing a
    /// video or audio: that comes back as a retryable [`LineError::Server`].
    #[tracing::instrument(name = "line.content", skip_all)]
    pub async fn content(
        &self,
        access_token: &str,
        message_id: &str,
        max_bytes: u64,
    ) -> Result<Downloaded, LineError> {
        let url = format!(
            "{}/v2/bot/message/{}/content",
            self.data_api_base,
            path_segment(message_id)
        );
        let request = self.api.get(url).bearer_auth(access_token);
        let response = send(request.send()).await?;
        self.download_body(response, max_bytes).await
    }

    /// The bytes behind an external `contentProvider` URL (no LINE token is sent; redirects are
    /// followed), with the same limit as [`LineClient::content`].
    #[tracing::instrument(name = "line.download", skip_all)]
    pub async fn download(&self, url: &str, max_bytes: u64) -> Result<Downloaded, LineError> {
        let request = self.external.get(url);
        let response = send(request.send()).await?;
        self.download_body(response, max_bytes).await
    }

    /// The bot this access token belongs to; a cheap way to check a token at start-up.
    #[tracing::instrument(name = "line.bot_info", skip_all)]
    pub async fn bot_info(&self, access_token: &str) -> Result<BotInfo, LineError> {
        let url = format!("{}/v2/bot/info", self.api_base);
        let request = self.api.get(url).bearer_auth(access_token);
        let mut response = send(request.send()).await?;
        let status = response.status();
        let body = self.read(&mut response, MAX_JSON_BYTES).await?;
        if status.is_success() {
            return parse(&body, "bot info");
        }
        Err(error_for(status, &body))
    }

    async fn download_body<S>(
        &self,
        mut response: ClientResponse<S>,
        max_bytes: u64,
    ) -> Result<Downloaded, LineError>
    where
        S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    {
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            return Err(LineError::Server {
                status: status.as_u16(),
                message: "the content is still being prepared; try again later".into(),
            });
        }
        if !status.is_success() {
            let body = self.read(&mut response, MAX_JSON_BYTES).await?;
            return Err(error_for(status, &body));
        }
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > max_bytes) {
            return Err(LineError::TooLarge { limit: max_bytes });
        }
        let content_type = header_value(&response, header::CONTENT_TYPE.as_str());
        let bytes = self
            .read(&mut response, max_bytes)
            .await
            .map_err(|e| match e {
                ReadError::Line(e) => e,
                ReadError::TooLarge => LineError::TooLarge { limit: max_bytes },
            })?;
        Ok(Downloaded {
            content_type,
            bytes,
        })
    }

    /// The whole body, waiting at most the timeout for each chunk and refusing to hold more
    /// than `limit` bytes. Logs LINE's request id, whatever the status.
    async fn read<S>(
        &self,
        response: &mut ClientResponse<S>,
        limit: u64,
    ) -> Result<Bytes, ReadError>
    where
        S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    {
        tracing::debug!(
            line.request_id = request_id(response).as_deref(),
            http.status = response.status().as_u16(),
            "answer received"
        );
        let mut body = BytesMut::new();
        loop {
            let chunk = match tokio::time::timeout(self.timeout, response.next()).await {
                Err(_elapsed) => return Err(ReadError::Line(LineError::Timeout)),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(ReadError::Line(payload_error(e))),
                Ok(Some(Ok(chunk))) => chunk,
            };
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(ReadError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

/// Reading a body failed: an ordinary error, or the body outgrew the reader's limit (which
/// means different things for JSON answers and downloads).
enum ReadError {
    Line(LineError),
    TooLarge,
}

impl From<ReadError> for LineError {
    /// For JSON answers: too large means it is not what we expected.
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Line(e) => e,
            ReadError::TooLarge => {
                LineError::Decode(format!("the answer is larger than {MAX_JSON_BYTES} bytes"))
            }
        }
    }
}

async fn send<F, R>(request: F) -> Result<R, LineError>
where
    F: std::future::Future<Output = Result<R, SendRequestError>>,
{
    request.await.map_err(send_error)
}

fn send_error(e: SendRequestError) -> LineError {
    match e {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            LineError::Timeout
        }
        SendRequestError::Url(e) => LineError::InvalidRequest(format!("invalid URL: {e}")),
        SendRequestError::Http(e) => LineError::InvalidRequest(e.to_string()),
        SendRequestError::Connect(e) => LineError::Connect(e.to_string()),
        SendRequestError::Response(e) => LineError::Connect(format!("malformed HTTP answer: {e}")),
        other => LineError::Connect(other.to_string()),
    }
}

fn payload_error(e: PayloadError) -> LineError {
    match e {
        PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => LineError::Timeout,
        other => LineError::Connect(format!("the answer broke off: {other}")),
    }
}

fn header_value<S>(response: &ClientResponse<S>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn request_id<S>(response: &ClientResponse<S>) -> Option<String> {
    header_value(response, "x-line-request-id")
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, LineError> {
    serde_json::from_slice(body)
        .map_err(|e| LineError::Decode(format!("LINE's {what} is not the expected JSON: {e}")))
}

#[derive(Deserialize)]
struct SentMessages {
    #[serde(default, rename = "sentMessages")]
    sent_messages: Vec<SentMessage>,
}

#[derive(Deserialize)]
struct SentMessage {
    id: String,
}

/// A [`Sent`] from a send answer. A duplicate's body is an error body that may or may not repeat
/// `sentMessages`; anything unreadable there just means no ids.
fn sent(request_id: Option<String>, body: &[u8], duplicate: bool) -> Result<Sent, LineError> {
    let sent: SentMessages = match serde_json::from_slice(body) {
        Ok(sent) => sent,
        Err(_) if duplicate => SentMessages {
            sent_messages: Vec::new(),
        },
        Err(e) => {
            return Err(LineError::Decode(format!(
                "LINE's answer to a send is not the expected JSON: {e}"
            )))
        }
    };
    Ok(Sent {
        request_id,
        message_ids: sent.sent_messages.into_iter().map(|m| m.id).collect(),
        duplicate,
    })
}

/// LINE's error body (reference 3.4).
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    property: Option<String>,
}

/// The [`LineError`] for a non-success answer.
fn error_for(status: StatusCode, body: &[u8]) -> LineError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let message = if parsed.message.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no explanation given")
            .to_owned()
    } else {
        parsed.message
    };
    let code = status.as_u16();
    match status {
        StatusCode::TOO_MANY_REQUESTS if message.to_ascii_lowercase().contains("monthly limit") => {
            LineError::QuotaExhausted { message }
        }
        StatusCode::TOO_MANY_REQUESTS => LineError::RateLimited,
        StatusCode::BAD_REQUEST if message.to_ascii_lowercase().contains("invalid reply token") => {
            LineError::InvalidReplyToken
        }
        StatusCode::UNAUTHORIZED => LineError::Unauthorized { message },
        s if s.is_server_error() => LineError::Server {
            status: code,
            message,
        },
        _ => LineError::Rejected {
            status: code,
            message,
            details: parsed
                .details
                .into_iter()
                .filter_map(|d| match (d.property, d.message) {
                    (Some(property), Some(message)) => Some(format!("{property}: {message}")),
                    (None, Some(message)) => Some(message),
                    (Some(property), None) => Some(property),
                    (None, None) => None,
                })
                .collect(),
        },
    }
}

/// `segment` percent-encoded for use as one URL path segment (ids are plain ASCII in practice;
/// this keeps a stray `/` or `?` from changing which endpoint is called).
fn path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests;
