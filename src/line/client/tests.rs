//! [`LineClient`] against a small actix-web server on 127.0.0.1:0 that answers like LINE: what
//! it answers depends on the reply token, retry key, user id or message id the test sends, and
//! it records every request so tests can check what the client put on the wire.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::*;

const TOKEN: &str = "channel-token-s3cr3t";
const BAD_TOKEN: &str = "revoked-token-s3cr3t";
/// Generous: only the hang test waits for a timeout, and it uses its own short one.
const PATIENCE: Duration = Duration::from_secs(10);

/// One request as the fake LINE saw it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    retry_key: Option<String>,
    body: Value,
}

type Recorder = Mutex<Vec<Recorded>>;

struct FakeLine {
    base: String,
    recorded: Arc<Recorder>,
    handle: ServerHandle,
}

impl FakeLine {
    async fn start() -> FakeLine {
        let recorded: Arc<Recorder> = Arc::default();
        let data = web::Data::from(Arc::clone(&recorded));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(answer))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        // unwrap: port 0 on loopback is always bindable in tests.
        .unwrap();
        let address = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        FakeLine {
            base: format!("http://{address}"),
            recorded,
            handle,
        }
    }

    /// A client for this server, with trailing slashes on the bases to prove they are tolerated.
    fn client(&self, timeout: Duration) -> LineClient {
        LineClient::new(LineEndpoints {
            api_base: format!("{}/", self.base),
            data_api_base: format!("{}/data/", self.base),
            timeout,
        })
    }

    fn requests(&self) -> Vec<Recorded> {
        // unwrap: a poisoned lock means a handler panicked, and the test should fail anyway.
        self.recorded.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn line_error(status: u16, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .insert_header(("X-Line-Request-Id", "req-error"))
        .json(json!({ "message": message }))
}

fn sent_messages(ids: &[&str]) -> Value {
    let sent: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
    json!({ "sentMessages": sent })
}

/// The fake LINE: one handler that records the request, then answers by path and parameters.
async fn answer(req: HttpRequest, body: web::Bytes, recorder: web::Data<Recorder>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let recorded = Recorded {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        retry_key: header("x-line-retry-key"),
        body: body.clone(),
    };
    recorder.lock().unwrap().push(recorded.clone());

    if recorded.path.starts_with("/external/") {
        return HttpResponse::Ok()
            .content_type("image/png")
            .body(&b"\x89PNG external"[..]);
    }
    if recorded.authorization.as_deref() == Some(&format!("Bearer {BAD_TOKEN}")) {
        return line_error(
            401,
            "Authentication failed. Confirm that the access token in the authorization header is valid.",
        );
    }
    match (recorded.method.as_str(), recorded.path.as_str()) {
        ("POST", "/v2/bot/message/reply") => match body["replyToken"].as_str() {
            Some("fresh") => HttpResponse::Ok()
                .insert_header(("X-Line-Request-Id", "req-reply"))
                .json(sent_messages(&["461230966842064897", "461230966842064898"])),
            Some("used") => line_error(400, "Invalid reply token"),
            Some("rate") => {
                line_error(429, "The API rate limit has been exceeded. Try again later.")
            }
            Some("quota") => line_error(429, "You have reached your monthly limit."),
            Some("broken") => line_error(500, "Internal server error"),
            Some("bad-message") => HttpResponse::BadRequest().json(json!({
                "message": "The request body has 2 error(s)",
                "details": [
                    { "message": "May not be empty", "property": "messages[0].text" },
                    { "message": "Must be one of the following values: [text, image]", "property": "messages[1].type" },
                ],
            })),
            Some("gateway") => HttpResponse::BadGateway().body("<html>bad gateway</html>"),
            Some("hang") => std::future::pending().await,
            _ => line_error(400, "unexpected reply token in test"),
        },
        ("POST", "/v2/bot/message/push") => match recorded.retry_key.as_deref() {
            Some("already-accepted") => HttpResponse::Conflict()
                .insert_header(("X-Line-Request-Id", "req-second"))
                .insert_header(("X-Line-Accepted-Request-Id", "req-first"))
                .json(json!({
                    "message": "The retry key is already accepted",
                    "sentMessages": [{ "id": "461230966842064899" }],
                })),
            Some(_) => HttpResponse::Ok()
                .insert_header(("X-Line-Request-Id", "req-push"))
                .json(sent_messages(&["461230966842064900"])),
            None => line_error(400, "test push without a retry key"),
        },
        ("GET", "/v2/bot/profile/Ufriend") => HttpResponse::Ok().json(json!({
            "displayName": "山田花子",
            "userId": "Ufriend",
            "pictureUrl": "https://profile.line-scdn.net/abc",
            "language": "ja",
        })),
        ("GET", path) if path.starts_with("/v2/bot/profile/") => line_error(404, "Not found"),
        ("GET", "/v2/bot/info") => HttpResponse::Ok().json(json!({
            "userId": "Ub9952f8d7a41b5d2ca0b1f2d0bcbbb21",
            "basicId": "@216ru...",
            "displayName": "Example support",
            "chatMode": "chat",
            "markAsReadMode": "manual",
        })),
        ("GET", "/data/v2/bot/message/small/content") => HttpResponse::Ok()
            .content_type("image/jpeg")
            .body(vec![7u8; 1_000]),
        ("GET", "/data/v2/bot/message/declared-big/content") => HttpResponse::Ok()
            .content_type("video/mp4")
            .body(vec![7u8; 10_000]),
        ("GET", "/data/v2/bot/message/endless/content") => {
            // No Content-Length and no end: only a reader that stops at the limit returns.
            let chunks = futures_util::stream::repeat_with(|| {
                Ok::<_, actix_web::Error>(web::Bytes::from_static(&[7u8; 512]))
            });
            HttpResponse::Ok()
                .content_type("audio/m4a")
                .streaming(chunks)
        }
        ("GET", "/data/v2/bot/message/transcoding/content") => HttpResponse::Accepted().finish(),
        _ => line_error(404, "Not found"),
    }
}

/// Awaits `future` under [`PATIENCE`], so a broken client fails the test instead of hanging it.
async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("the client answered within the test's patience")
}

fn hello() -> Vec<Value> {
    vec![json!({ "type": "text", "text": "Hello" })]
}

async fn reply_with(token: &str, reply_token: &str) -> (Result<Sent, LineError>, FakeLine) {
    let line = FakeLine::start().await;
    let client = line.client(PATIENCE);
    let result = within(client.reply(token, reply_token, &hello())).await;
    (result, line)
}

#[actix_web::test]
async fn a_reply_carries_the_bearer_token_and_json_and_returns_the_sent_ids() {
    let (result, line) = reply_with(TOKEN, "fresh").await;
    assert_eq!(
        result,
        Ok(Sent {
            request_id: Some("req-reply".into()),
            message_ids: vec!["461230966842064897".into(), "461230966842064898".into()],
            duplicate: false,
        })
    );
    let requests = line.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/v2/bot/message/reply");
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer channel-token-s3cr3t")
    );
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(request.retry_key, None, "LINE refuses a retry key on reply");
    assert_eq!(
        request.body,
        json!({ "replyToken": "fresh", "messages": hello() })
    );
    line.stop().await;
}

#[actix_web::test]
async fn a_push_carries_the_retry_key_and_returns_the_sent_ids() {
    let line = FakeLine::start().await;
    let client = line.client(PATIENCE);
    let key = "123e4567-e89b-12d3-a456-426614174000";
    let sent = within(client.push(TOKEN, "Uabc", &hello(), key))
        .await
        .unwrap();
    assert_eq!(
        sent,
        Sent {
            request_id: Some("req-push".into()),
            message_ids: vec!["461230966842064900".into()],
            duplicate: false,
        }
    );
    let request = &line.requests()[0];
    assert_eq!(request.path, "/v2/bot/message/push");
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer channel-token-s3cr3t")
    );
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(request.retry_key.as_deref(), Some(key));
    assert_eq!(request.body, json!({ "to": "Uabc", "messages": hello() }));
    line.stop().await;
}

#[actix_web::test]
async fn a_push_whose_retry_key_was_already_accepted_is_a_duplicate_success() {
    let line = FakeLine::start().await;
    let client = line.client(PATIENCE);
    let sent = within(client.push(TOKEN, "Uabc", &hello(), "already-accepted"))
        .await
        .unwrap();
    assert_eq!(
        sent,
        Sent {
            request_id: Some("req-first".into()),
            message_ids: vec!["461230966842064899".into()],
            duplicate: true,
        }
    );
    line.stop().await;
}

#[actix_web::test]
async fn the_two_kinds_of_429_are_told_apart() {
    let (rate, line) = reply_with(TOKEN, "rate").await;
    let rate = rate.unwrap_err();
    assert_eq!(rate, LineError::RateLimited);
    assert!(rate.is_retryable());
    assert_eq!(rate.kind(), "rate_limited");
    line.stop().await;

    let (quota, line) = reply_with(TOKEN, "quota").await;
    let quota = quota.unwrap_err();
    assert_eq!(
        quota,
        LineError::QuotaExhausted {
            message: "You have reached your monthly limit.".into()
        }
    );
    assert!(!quota.is_retryable(), "retrying can't add quota");
    assert_eq!(quota.kind(), "quota_exhausted");
    line.stop().await;
}

#[actix_web::test]
async fn a_used_reply_token_is_an_invalid_reply_token() {
    let (result, line) = reply_with(TOKEN, "used").await;
    let error = result.unwrap_err();
    assert_eq!(error, LineError::InvalidReplyToken);
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("push"), "{error}");
    line.stop().await;
}

#[actix_web::test]
async fn a_refused_access_token_is_unauthorized_and_no_error_shows_the_token() {
    let (result, line) = reply_with(BAD_TOKEN, "fresh").await;
    let error = result.unwrap_err();
    assert!(
        matches!(&error, LineError::Unauthorized { message } if message.starts_with("Authentication failed")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(error.kind(), "unauthorized");
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains("s3cr3t"), "{text}");
    }
    line.stop().await;
}

#[actix_web::test]
async fn a_server_error_is_retryable_even_without_a_json_body() {
    let (result, line) = reply_with(TOKEN, "broken").await;
    let error = result.unwrap_err();
    assert_eq!(
        error,
        LineError::Server {
            status: 500,
            message: "Internal server error".into()
        }
    );
    assert!(error.is_retryable());
    line.stop().await;

    let (result, line) = reply_with(TOKEN, "gateway").await;
    assert_eq!(
        result.unwrap_err(),
        LineError::Server {
            status: 502,
            message: "Bad Gateway".into()
        }
    );
    line.stop().await;
}

#[actix_web::test]
async fn a_rejected_message_reports_lines_details_per_property() {
    let (result, line) = reply_with(TOKEN, "bad-message").await;
    let error = result.unwrap_err();
    assert_eq!(
        error,
        LineError::Rejected {
            status: 400,
            message: "The request body has 2 error(s)".into(),
            details: vec![
                "messages[0].text: May not be empty".into(),
                "messages[1].type: Must be one of the following values: [text, image]".into(),
            ],
        }
    );
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        "refused with status 400: The request body has 2 error(s) \
         (messages[0].text: May not be empty; \
         messages[1].type: Must be one of the following values: [text, image])"
    );
    line.stop().await;
}

#[actix_web::test]
async fn an_answer_slower_than_the_timeout_is_a_timeout() {
    let line = FakeLine::start().await;
    let client = line.client(Duration::from_millis(300));
    let error = within(client.reply(TOKEN, "hang", &hello()))
        .await
        .unwrap_err();
    assert_eq!(error, LineError::Timeout);
    assert!(error.is_retryable());
    line.stop().await;
}

#[actix_web::test]
async fn an_unreachable_server_is_a_retryable_connect_error() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = LineClient::new(LineEndpoints {
        api_base: format!("http://127.0.0.1:{port}"),
        data_api_base: format!("http://127.0.0.1:{port}"),
        timeout: PATIENCE,
    });
    let error = within(client.bot_info(TOKEN)).await.unwrap_err();
    assert_eq!(error.kind(), "connect", "{error:?}");
    assert!(error.is_retryable());
}

#[actix_web::test]
async fn content_within_the_limit_is_downloaded_from_the_data_api_with_its_type() {
    let line = FakeLine::start().await;
    let client = line.client(PATIENCE);
    let downloaded = within(client.content(TOKEN, "small", 1_000)).await.unwrap();
    assert_eq!(downloaded.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(downloaded.bytes.len(), 1_000);
    let request = &line.requests()[0];
    assert_eq!(request.path, "/data/v2/bot/message/small/content");
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer channel-token-s3cr3t")
    );
    line.stop().await;
}

#[actix_web::test]
async fn content_over_max_bytes_is_too_large_whether_declared_or_streamed() {
    let line = FakeLine::start().await;
    let client = line.client(PATIENCE);
    let declared = within(client.content(TOKEN, "declared-big", 9_999)).await;
    assert_eq!(declared, Err(LineError::TooLarge { limit: 9_999 }));
    // An endless body: returning at all proves the client stopped reading at the limit.
    let streamed = within(client.content(TOKEN, "endless", 4_096)).await;
    assert_eq!(streamed, Err(LineError::TooLarge { limit: 4_096 }));
    assert!(!streamed.unwrap_err().is_retryable());
    line.stop().await;
}

#[actix_web::test]
async fn content_line_is_still_preparing_is_retryable() {
    let line = FakeLine::start().await;
    let client = line.client(PATIENCE);
    let error = within(client.content(TOKEN, "transcoding", 1_000))
        .await
        .unwrap_err();
    assert!(
        matches!(error, LineError::Server { status: 202, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    line.stop().await;
}

#[actix_web::test]
async fn an_external_download_sends_no_line_token() {
    let line = FakeLine::start().await;
    let client = line.client(PATIENCE);
    let url = format!("{}/external/picture.png", line.base);
    let downloaded = within(client.download(&url, 1_000)).await.unwrap();
    assert_eq!(downloaded.content_type.as_deref(), Some("image/png"));
    assert_eq!(&downloaded.bytes[..], b"\x89PNG external");
    assert_eq!(line.requests()[0].authorization, None);

    let too_small = within(client.download(&url, 4)).await;
    assert_eq!(too_small, Err(LineError::TooLarge { limit: 4 }));

    let invalid = within(client.download("not a url", 1_000))
        .await
        .unwrap_err();
    assert_eq!(invalid.kind(), "invalid_request", "{invalid:?}");
    assert!(!invalid.is_retryable());
    line.stop().await;
}

#[actix_web::test]
async fn a_profile_is_read_from_lines_camel_case_and_stored_in_snake_case() {
    let line = FakeLine::start().await;
    let client = line.client(PATIENCE);
    let profile = within(client.profile(TOKEN, "Ufriend"))
        .await
        .unwrap()
        .expect("a friend has a profile");
    assert_eq!(
        profile,
        Profile {
            user_id: "Ufriend".into(),
            display_name: "山田花子".into(),
            picture_url: Some("https://profile.line-scdn.net/abc".into()),
            status_message: None,
            language: Some("ja".into()),
        }
    );
    let stored = serde_json::to_value(&profile).unwrap();
    assert_eq!(stored["display_name"], "山田花子");
    assert_eq!(
        serde_json::from_value::<Profile>(stored).unwrap(),
        profile,
        "a stored profile reads back"
    );
    line.stop().await;
}

#[actix_web::test]
async fn a_profile_lines_does_not_have_is_none() {
    let line = FakeLine::start().await;
    let client = line.client(PATIENCE);
    let profile = within(client.profile(TOKEN, "Ublocked/../info")).await;
    assert_eq!(profile, Ok(None));
    assert_eq!(
        line.requests()[0].path,
        "/v2/bot/profile/Ublocked%2F..%2Finfo",
        "ids stay one path segment"
    );
    line.stop().await;
}

#[actix_web::test]
async fn bot_info_is_read() {
    let line = FakeLine::start().await;
    let client = line.client(PATIENCE);
    let info = within(client.bot_info(TOKEN)).await.unwrap();
    assert_eq!(
        info,
        BotInfo {
            user_id: "Ub9952f8d7a41b5d2ca0b1f2d0bcbbb21".into(),
            basic_id: "@216ru...".into(),
            display_name: "Example support".into(),
            picture_url: None,
            chat_mode: Some("chat".into()),
        }
    );
    let request = &line.requests()[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/v2/bot/info")
    );
    line.stop().await;
}

#[actix_web::test]
async fn https_urls_go_through_rustls() {
    // The fake speaks plain HTTP, so the TLS handshake fails; what matters is that the client
    // tried one rather than answering "SSL is not supported".
    let line = FakeLine::start().await;
    let https_base = line.base.replace("http://", "https://");
    let client = LineClient::new(LineEndpoints {
        api_base: https_base.clone(),
        data_api_base: https_base,
        timeout: PATIENCE,
    });
    let error = within(client.bot_info(TOKEN)).await.unwrap_err();
    assert_eq!(error.kind(), "connect", "{error:?}");
    assert!(
        !error.to_string().contains("SSL is not supported"),
        "{error}"
    );
    line.stop().await;
}

#[test]
fn production_endpoints_are_lines_hosts() {
    let endpoints = LineEndpoints::production(Duration::from_secs(5));
    assert_eq!(endpoints.api_base, "https://api.line.me");
    assert_eq!(endpoints.data_api_base, "https://api-data.line.me");
}

#[test]
fn every_error_has_its_own_kind_and_only_transient_ones_are_retryable() {
    let errors = [
        (LineError::Timeout, true),
        (LineError::Connect("refused".into()), true),
        (LineError::RateLimited, true),
        (
            LineError::QuotaExhausted {
                message: "m".into(),
            },
            false,
        ),
        (LineError::InvalidReplyToken, false),
        (
            LineError::Unauthorized {
                message: "m".into(),
            },
            false,
        ),
        (
            LineError::Rejected {
                status: 400,
                message: "m".into(),
                details: Vec::new(),
            },
            false,
        ),
        (
            LineError::Server {
                status: 500,
                message: "m".into(),
            },
            true,
        ),
        (LineError::TooLarge { limit: 1 }, false),
        (LineError::Decode("d".into()), false),
        (LineError::InvalidRequest("u".into()), false),
    ];
    let mut kinds: Vec<&str> = errors.iter().map(|(e, _)| e.kind()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), errors.len(), "kinds must be distinct");
    for (error, retryable) in &errors {
        assert_eq!(error.is_retryable(), *retryable, "{error:?}");
        assert!(
            error
                .kind()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'),
            "{}",
            error.kind()
        );
    }
}
