//! The fake over HTTP, as linedesk's LINE client sees it, and as linedesk's webhook sees it
//! (a small receiver on 127.0.0.1 stands in for linedesk).

use std::net::TcpListener;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::responses::{
    AUTHENTICATION_FAILED, AUTHORIZATION_REQUIRED, FAILED_TO_SEND, INVALID_REPLY_TOKEN,
    INVALID_RETRY_KEY, NOT_FOUND, QUOTA_EXCEEDED, RATE_LIMITED, RETRY_KEY_ACCEPTED,
    RETRY_KEY_NOT_SUPPORTED,
};
use super::schema::OpenApi;
use super::*;
use crate::line::signature;

const TOKEN: &str = "test-channel-access-token";
const SECRET: &str = "test-channel-secret";
const USER: &str = "U4af4980629c0b2e7a1f5d3c8b6e9f0a1";
const RETRY_KEY: &str = "123e4567-e89b-12d3-a456-426614174000";
/// Bound on anything a test waits for: the machine may be loaded.
const PATIENCE: Duration = Duration::from_secs(30);

fn channel(account: &str, token: &str, secret: &str) -> FakeChannel {
    FakeChannel::new(AccountId::parse(account).unwrap(), token, secret)
}

fn config() -> FakeLineConfig {
    FakeLineConfig {
        channels: vec![channel("demo", TOKEN, SECRET)],
        ..FakeLineConfig::default()
    }
}

fn start() -> FakeLine {
    FakeLine::start(config()).expect("the fake starts")
}

/// An answer of the fake.
struct Answer {
    status: StatusCode,
    request_id: Option<String>,
    accepted_request_id: Option<String>,
    content_type: Option<String>,
    bytes: Vec<u8>,
    body: Value,
}

async fn call(
    fake: &FakeLine,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Answer {
    let client = awc::Client::builder().timeout(PATIENCE).finish();
    let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("{}{path}", fake.base_url()));
    if let Some(token) = token {
        request = request.insert_header(("authorization", format!("Bearer {token}")));
    }
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    let sent = match body {
        Some(body) => {
            request
                .insert_header(("content-type", "application/json"))
                .send_body(body)
                .await
        }
        None => request.send().await,
    };
    let mut response = sent.expect("the fake answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let request_id = header("x-line-request-id");
    let accepted_request_id = header("x-line-accepted-request-id");
    let content_type = header("content-type");
    let bytes = response
        .body()
        .limit(8 << 20)
        .await
        .expect("a body")
        .to_vec();
    Answer {
        status: response.status(),
        request_id,
        accepted_request_id,
        content_type,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        bytes,
    }
}

async fn post(fake: &FakeLine, path: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
    let body = serde_json::to_vec(&body).unwrap();
    call(fake, "POST", path, Some(TOKEN), headers, Some(body)).await
}

async fn get(fake: &FakeLine, path: &str) -> Answer {
    call(fake, "GET", path, Some(TOKEN), &[], None).await
}

fn text(text: &str) -> Value {
    json!({ "type": "text", "text": text })
}

fn push_body(to: &str) -> Value {
    json!({ "to": to, "messages": [text("Your order has shipped.")] })
}

fn assert_valid(schema: &str, body: &Value) {
    if let Err(errors) = OpenApi::messaging_api().validate(schema, body) {
        panic!("{body} breaks {schema}:\n{}", errors.join("\n"));
    }
}

/// What linedesk's webhook would have received.
struct Received {
    path: String,
    signature: Option<String>,
    body: Vec<u8>,
}

/// A stand-in for linedesk's webhook on 127.0.0.1: answers `status` and hands over what came.
fn webhook_receiver(status: StatusCode) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        let tx = tx.clone();
        App::new().default_service(web::to(move |request: HttpRequest, body: web::Bytes| {
            let received = Received {
                path: request.path().to_owned(),
                signature: request
                    .headers()
                    .get("x-line-signature")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: body.to_vec(),
            };
            let _ = tx.send(received);
            async move { HttpResponse::build(status).finish() }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    (format!("http://{address}"), rx)
}

async fn next(received: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(PATIENCE, received.recv())
        .await
        .expect("a webhook arrives in time")
        .expect("the receiver runs")
}

#[actix_web::test]
async fn a_request_without_a_valid_channel_token_is_refused_with_401() {
    let fake = start();

    let missing = call(&fake, "GET", "/v2/bot/info", None, &[], None).await;
    let wrong = call(&fake, "GET", "/v2/bot/info", Some("nope"), &[], None).await;

    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.body["message"], AUTHORIZATION_REQUIRED);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body["message"], AUTHENTICATION_FAILED);
    assert!(wrong.body["message"]
        .as_str()
        .unwrap()
        .starts_with("Authentication failed"));
    assert!(missing.request_id.is_some() && wrong.request_id.is_some());
    assert_ne!(missing.request_id, wrong.request_id);
    let recorded = fake.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1].status, Some(401));
    assert_eq!(recorded[1].account_id, None);
    assert_eq!(
        recorded[1].authorization.as_deref(),
        Some("Bearer ******** (4 chars)")
    );
}

#[actix_web::test]
async fn every_answer_carries_a_fresh_request_id_and_is_recorded() {
    let fake = start();

    let answer = post(&fake, "/v2/bot/message/push", push_body(USER), &[]).await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let request_id = answer.request_id.expect("X-Line-Request-Id");
    assert!(ids::is_uuid(&request_id), "{request_id}");
    let recorded = fake.requests();
    assert_eq!(recorded.len(), 1);
    let request = &recorded[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v2/bot/message/push")
    );
    assert_eq!(request.request_id, request_id);
    assert_eq!(request.account_id.as_deref(), Some("demo"));
    assert_eq!(request.body.as_ref(), Some(&push_body(USER)));
    assert_eq!(request.status, Some(200));
    assert_eq!(request.response.as_ref(), Some(&answer.body));
    let recorded_text = serde_json::to_string(&recorded).unwrap();
    assert!(!recorded_text.contains(TOKEN), "the token is masked");
}

#[actix_web::test]
async fn a_body_breaking_the_schema_is_refused_with_400_and_details() {
    let fake = start();

    let answer = post(
        &fake,
        "/v2/bot/message/push",
        json!({ "to": USER, "messages": [{ "type": "text" }] }),
        &[],
    )
    .await;
    let empty = post(
        &fake,
        "/v2/bot/message/reply",
        json!({ "replyToken": "x", "messages": [] }),
        &[],
    )
    .await;
    let not_json = call(
        &fake,
        "POST",
        "/v2/bot/message/push",
        Some(TOKEN),
        &[],
        Some(b"{\"to\":".to_vec()),
    )
    .await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["message"], "The request body has 1 error(s)");
    assert_eq!(
        answer.body["details"],
        json!([{ "message": "must be specified", "property": "messages[0].text" }])
    );
    assert_valid("ErrorResponse", &answer.body);
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(empty.body["details"][0]["property"], "messages");
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert!(not_json.body["message"]
        .as_str()
        .unwrap()
        .contains("could not be parsed as JSON"));
    assert!(fake.deliveries().is_empty());
}

#[actix_web::test]
async fn a_body_over_2_mb_is_refused_with_413() {
    let fake = start();
    let big = json!({ "to": USER, "messages": [text(&"あ".repeat(700_000))] });

    let answer = post(&fake, "/v2/bot/message/push", big, &[]).await;

    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.request_id.is_some());
    assert!(fake.requests()[0].body_bytes > 2 * 1024 * 1024);
}

#[actix_web::test]
async fn a_reply_with_an_issued_token_is_delivered_to_its_user_once() {
    let fake = start();
    let token = fake.issue_reply_token(USER);
    let reply = json!({ "replyToken": token, "messages": [text("Hello!"), { "type": "sticker", "packageId": "446", "stickerId": "1988" }] });

    let first = post(&fake, "/v2/bot/message/reply", reply.clone(), &[]).await;
    let again = post(&fake, "/v2/bot/message/reply", reply, &[]).await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_valid("ReplyMessageResponse", &first.body);
    let sent = first.body["sentMessages"].as_array().unwrap();
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|m| m["id"].is_string() && m["quoteToken"].is_string()));
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.body["message"], INVALID_REPLY_TOKEN);
    let deliveries = fake
        .wait_for_deliveries(1, PATIENCE)
        .await
        .expect("the reply is delivered");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].via, Via::Reply);
    assert_eq!(deliveries[0].to, USER);
    assert_eq!(deliveries[0].texts(), ["Hello!"]);
    assert_eq!(deliveries[0].reply_token.as_deref(), Some(token.as_str()));
    assert_eq!(Some(&deliveries[0].request_id), first.request_id.as_ref());
}

#[actix_web::test]
async fn a_reply_token_the_fake_never_issued_is_refused() {
    let fake = start();

    let answer = post(
        &fake,
        "/v2/bot/message/reply",
        json!({ "replyToken": "b60d432864f44d079f6d8efe86cf404b", "messages": [text("hi")] }),
        &[],
    )
    .await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body, json!({ "message": INVALID_REPLY_TOKEN }));
}

#[actix_web::test]
async fn an_expired_reply_token_is_refused() {
    let fake = FakeLine::start(FakeLineConfig {
        reply_token_ttl: Duration::ZERO,
        ..config()
    })
    .unwrap();
    let token = fake.issue_reply_token(USER);

    let answer = post(
        &fake,
        "/v2/bot/message/reply",
        json!({ "replyToken": token, "messages": [text("too late")] }),
        &[],
    )
    .await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["message"], INVALID_REPLY_TOKEN);
    assert!(fake.deliveries().is_empty());
}

#[actix_web::test]
async fn a_retry_key_on_a_reply_is_refused_with_400() {
    let fake = start();
    let token = fake.issue_reply_token(USER);

    let answer = post(
        &fake,
        "/v2/bot/message/reply",
        json!({ "replyToken": token, "messages": [text("hi")] }),
        &[("x-line-retry-key", RETRY_KEY)],
    )
    .await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["message"], RETRY_KEY_NOT_SUPPORTED);
    assert_eq!(fake.requests()[0].retry_key.as_deref(), Some(RETRY_KEY));
}

#[actix_web::test]
async fn a_repeated_retry_key_is_answered_409_with_the_accepted_request_id() {
    let fake = start();
    let key = [("x-line-retry-key", RETRY_KEY)];

    let first = post(&fake, "/v2/bot/message/push", push_body(USER), &key).await;
    let repeat = post(&fake, "/v2/bot/message/push", push_body(USER), &key).await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_valid("PushMessageResponse", &first.body);
    assert_eq!(repeat.status, StatusCode::CONFLICT);
    assert_eq!(repeat.body["message"], RETRY_KEY_ACCEPTED);
    assert_eq!(repeat.body["sentMessages"], first.body["sentMessages"]);
    assert_eq!(repeat.accepted_request_id, first.request_id);
    assert_ne!(repeat.request_id, first.request_id);
    let deliveries = fake.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].via, Via::Push);
    assert_eq!(deliveries[0].retry_key.as_deref(), Some(RETRY_KEY));
}

#[actix_web::test]
async fn a_malformed_retry_key_or_recipient_is_refused_with_400() {
    let fake = start();

    let bad_key = post(
        &fake,
        "/v2/bot/message/push",
        push_body(USER),
        &[("x-line-retry-key", "retry-1")],
    )
    .await;
    let bad_to = post(&fake, "/v2/bot/message/push", push_body("customer-1"), &[]).await;
    let group = post(
        &fake,
        "/v2/bot/message/push",
        push_body("Ca56f94637cc4347f90a25382909b24b9"),
        &[],
    )
    .await;

    assert_eq!(bad_key.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_key.body["message"], INVALID_RETRY_KEY);
    assert_eq!(bad_to.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_to.body["message"], FAILED_TO_SEND);
    assert_eq!(group.status, StatusCode::OK);
}

#[actix_web::test]
async fn an_injected_429_is_answered_once_then_the_push_goes_through() {
    let fake = start();
    fake.inject(Fault::rate_limited().on("/v2/bot/message/push"));
    fake.inject(Fault::quota_exceeded().on("/v2/bot/message/push"));

    let profile = get(&fake, &format!("/v2/bot/profile/{USER}")).await;
    let limited = post(&fake, "/v2/bot/message/push", push_body(USER), &[]).await;
    let quota = post(&fake, "/v2/bot/message/push", push_body(USER), &[]).await;
    let through = post(&fake, "/v2/bot/message/push", push_body(USER), &[]).await;

    assert_eq!(
        profile.status,
        StatusCode::OK,
        "other paths are not faulted"
    );
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body, json!({ "message": RATE_LIMITED }));
    assert_eq!(quota.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(quota.body, json!({ "message": QUOTA_EXCEEDED }));
    assert_eq!(through.status, StatusCode::OK);
    assert!(fake.pending_faults().is_empty());
    assert_eq!(fake.deliveries().len(), 1);
    let faults: Vec<Option<String>> = fake.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        [
            None,
            Some("respond 429".into()),
            Some("respond 429".into()),
            None
        ]
    );
}

#[actix_web::test]
async fn an_injected_500_is_consumed_only_when_applied() {
    let fake = start();
    fake.inject(Fault::server_error().on("/v2/bot/message/push").times(2));

    let unauthorized = call(
        &fake,
        "POST",
        "/v2/bot/message/push",
        Some("nope"),
        &[],
        None,
    )
    .await;
    let first = post(&fake, "/v2/bot/message/push", push_body(USER), &[]).await;
    let second = post(&fake, "/v2/bot/message/push", push_body(USER), &[]).await;
    let third = post(&fake, "/v2/bot/message/push", push_body(USER), &[]).await;

    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    assert_eq!(first.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(first.body["message"].is_string());
    assert_eq!(second.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(third.status, StatusCode::OK);
}

#[actix_web::test]
async fn a_dropped_connection_gets_no_answer() {
    let fake = start();
    fake.inject(Fault::drop_connection().on("/v2/bot/message/push"));
    let client = awc::Client::builder().timeout(PATIENCE).finish();

    let dropped = client
        .post(format!("{}/v2/bot/message/push", fake.base_url()))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .send_json(&push_body(USER))
        .await;

    let error = dropped.expect_err("no answer");
    assert!(
        !matches!(error, awc::error::SendRequestError::Timeout),
        "closed at once, not hung: {error}"
    );
    assert!(fake.deliveries().is_empty());
    let recorded = fake.requests();
    assert_eq!(recorded[0].status, None);
    assert_eq!(recorded[0].fault.as_deref(), Some("drop after 0 ms"));
    let after = post(&fake, "/v2/bot/message/push", push_body(USER), &[]).await;
    assert_eq!(after.status, StatusCode::OK);
}

#[actix_web::test]
async fn a_hung_request_runs_into_the_client_timeout() {
    let fake = start();
    fake.inject(Fault::hang(Duration::from_secs(600)));
    let client = awc::Client::builder()
        .timeout(Duration::from_millis(200))
        .finish();

    let hung = client
        .get(format!("{}/v2/bot/info", fake.base_url()))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .send()
        .await;

    assert!(
        matches!(hung, Err(awc::error::SendRequestError::Timeout)),
        "{:?}",
        hung.map(|r| r.status())
    );
    fake.stop().await;
}

#[actix_web::test]
async fn a_lost_response_still_takes_effect_and_the_retry_gets_409() {
    let fake = start();
    fake.inject(Fault::lose_response().on("/v2/bot/message/push"));
    let client = awc::Client::builder().timeout(PATIENCE).finish();

    let lost = client
        .post(format!("{}/v2/bot/message/push", fake.base_url()))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .insert_header(("x-line-retry-key", RETRY_KEY))
        .send_json(&push_body(USER))
        .await;
    let retry = post(
        &fake,
        "/v2/bot/message/push",
        push_body(USER),
        &[("x-line-retry-key", RETRY_KEY)],
    )
    .await;

    assert!(lost.is_err(), "no answer");
    assert_eq!(retry.status, StatusCode::CONFLICT);
    let deliveries = fake.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        retry.accepted_request_id.as_ref(),
        Some(&deliveries[0].request_id)
    );
}

#[actix_web::test]
async fn latency_delays_every_answer() {
    let fake = start();
    fake.set_latency(Duration::from_millis(150));
    let started = std::time::Instant::now();

    let answer = get(&fake, "/v2/bot/info").await;

    assert_eq!(answer.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[actix_web::test]
async fn a_profile_is_generated_registered_or_404_when_blocked() {
    let fake = start();
    let other = "U206d25c2ea6bd87c17655609a1c37cb8";
    fake.register_profile(Profile {
        display_name: "山田 花子".into(),
        user_id: other.into(),
        picture_url: None,
        status_message: Some("配送待ち".into()),
        language: Some("en".into()),
    });

    let generated = get(&fake, &format!("/v2/bot/profile/{USER}")).await;
    let registered = get(&fake, &format!("/v2/bot/profile/{other}")).await;
    fake.block_user(USER);
    let blocked = get(&fake, &format!("/v2/bot/profile/{USER}")).await;

    assert_eq!(generated.status, StatusCode::OK);
    assert_valid("UserProfileResponse", &generated.body);
    assert_eq!(generated.body["displayName"], "Customer 4af4");
    assert_eq!(generated.body["userId"], USER);
    assert_eq!(generated.body["language"], "ja");
    assert!(generated.body["pictureUrl"].is_string());
    assert!(generated.body["statusMessage"].is_string());
    assert_eq!(registered.body["displayName"], "山田 花子");
    assert_eq!(registered.body["language"], "en");
    assert_eq!(blocked.status, StatusCode::NOT_FOUND);
    assert_eq!(blocked.body, json!({ "message": NOT_FOUND }));
}

#[actix_web::test]
async fn registered_content_is_served_and_unknown_content_is_404() {
    let fake = start();
    let jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 1, 2, 3];
    fake.register_content("354718705033693861", "image/jpeg", jpeg.clone());

    let content = get(&fake, "/v2/bot/message/354718705033693861/content").await;
    let preview = get(&fake, "/v2/bot/message/354718705033693861/content/preview").await;
    let unknown = get(&fake, "/v2/bot/message/1/content").await;

    assert_eq!(content.status, StatusCode::OK);
    assert_eq!(content.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(content.bytes, jpeg);
    assert_eq!(preview.bytes, jpeg);
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let fake = start();

    let unknown = get(&fake, "/v2/bot/nothing").await;
    let wrong = get(&fake, "/v2/bot/message/push").await;

    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(fake.requests().len(), 2);
}

#[actix_web::test]
async fn bot_info_and_the_webhook_endpoint_follow_line_s_schemas() {
    let fake = start();
    let (target, _received) = webhook_receiver(StatusCode::OK);
    let endpoint = format!("{target}/line/webhook/demo");

    let info = get(&fake, "/v2/bot/info").await;
    let unset = get(&fake, "/v2/bot/channel/webhook/endpoint").await;
    let set = call(
        &fake,
        "PUT",
        "/v2/bot/channel/webhook/endpoint",
        Some(TOKEN),
        &[],
        Some(serde_json::to_vec(&json!({ "endpoint": endpoint })).unwrap()),
    )
    .await;
    let elsewhere = call(
        &fake,
        "PUT",
        "/v2/bot/channel/webhook/endpoint",
        Some(TOKEN),
        &[],
        Some(serde_json::to_vec(&json!({ "endpoint": "http://example.com/hook" })).unwrap()),
    )
    .await;
    let now = get(&fake, "/v2/bot/channel/webhook/endpoint").await;

    assert_eq!(info.status, StatusCode::OK);
    assert_valid("BotInfoResponse", &info.body);
    assert_eq!(
        info.body["userId"],
        fake.config().channels[0].bot_user_id.as_str()
    );
    assert_eq!(unset.body["active"], false);
    assert_eq!(set.status, StatusCode::OK);
    assert_eq!(elsewhere.status, StatusCode::BAD_REQUEST);
    assert_valid("GetWebhookEndpointResponse", &now.body);
    assert_eq!(now.body, json!({ "endpoint": endpoint, "active": true }));
    assert_eq!(fake.webhook_url("demo"), Some(endpoint));
}

#[actix_web::test]
async fn the_webhook_test_sends_a_signed_empty_webhook_and_reports_the_answer() {
    let fake = start();
    let (target, mut received) = webhook_receiver(StatusCode::OK);
    fake.set_webhook_target(Some(target)).unwrap();

    let answer = post(&fake, "/v2/bot/channel/webhook/test", json!({}), &[]).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_valid("TestWebhookEndpointResponse", &answer.body);
    assert_eq!(answer.body["success"], true);
    assert_eq!(answer.body["statusCode"], 200);
    let webhook = next(&mut received).await;
    assert_eq!(webhook.path, "/line/webhook/demo");
    assert_eq!(
        signature::verify(
            SECRET.as_bytes(),
            &webhook.body,
            webhook.signature.as_deref().map(str::as_bytes)
        ),
        Ok(())
    );
    let body: Value = serde_json::from_slice(&webhook.body).unwrap();
    assert_eq!(body["events"], json!([]));
}

#[actix_web::test]
async fn the_webhook_test_reports_an_error_status() {
    let fake = start();
    let (target, _received) = webhook_receiver(StatusCode::UNAUTHORIZED);

    let answer = post(
        &fake,
        "/v2/bot/channel/webhook/test",
        json!({ "endpoint": format!("{target}/line/webhook/demo") }),
        &[],
    )
    .await;

    assert_valid("TestWebhookEndpointResponse", &answer.body);
    assert_eq!(answer.body["success"], false);
    assert_eq!(answer.body["statusCode"], 401);
    assert_eq!(answer.body["reason"], "ERROR_STATUS_CODE");
}

#[actix_web::test]
async fn a_customer_message_is_signed_valid_and_repliable_for_that_customer() {
    let fake = start();
    let (target, mut received) = webhook_receiver(StatusCode::OK);
    fake.set_webhook_target(Some(target)).unwrap();

    let sent = fake
        .send_text_as(USER, "注文がまだ届きません")
        .await
        .expect("the webhook is delivered");

    assert_eq!(sent.status, StatusCode::OK);
    let webhook = next(&mut received).await;
    assert_eq!(
        signature::verify(
            SECRET.as_bytes(),
            &webhook.body,
            webhook.signature.as_deref().map(str::as_bytes)
        ),
        Ok(())
    );
    assert!(signature::verify(
        b"another secret",
        &webhook.body,
        webhook.signature.as_deref().map(str::as_bytes)
    )
    .is_err());
    let body: Value = serde_json::from_slice(&webhook.body).unwrap();
    if let Err(errors) = OpenApi::webhook().validate("CallbackRequest", &body) {
        panic!("{body} breaks CallbackRequest:\n{}", errors.join("\n"));
    }
    let event = &body["events"][0];
    assert_eq!(event, &sent.event);
    assert_eq!(
        body["destination"],
        fake.config().channels[0].bot_user_id.as_str()
    );
    assert_eq!(event["source"]["userId"], USER);
    assert_eq!(event["message"]["text"], "注文がまだ届きません");
    assert_eq!(event["deliveryContext"]["isRedelivery"], false);
    assert_eq!(event["mode"], "active");
    assert_eq!(sent.webhook_event_id.len(), 26);

    let reply = post(
        &fake,
        "/v2/bot/message/reply",
        json!({ "replyToken": sent.reply_token, "messages": [text("確認します")] }),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(fake.deliveries()[0].to, USER);
}

#[actix_web::test]
async fn a_webhook_without_a_target_or_to_an_unknown_account_is_an_error() {
    let fake = start();

    let no_target = fake.send_text_as(USER, "hi").await;
    let unknown = fake.send_webhook("nope", Vec::new()).await;

    assert_eq!(no_target, Err(WebhookError::NoWebhookUrl("demo".into())));
    assert_eq!(unknown, Err(WebhookError::UnknownAccount("nope".into())));
    assert!(fake
        .set_webhook_target(Some("http://example.com".into()))
        .is_err());
}

#[actix_web::test]
async fn the_control_api_steers_and_reports_the_fake() {
    let fake = start();
    let (target, mut received) = webhook_receiver(StatusCode::OK);
    fake.set_webhook_target(Some(target)).unwrap();
    let control = |method: &'static str, path: &'static str, body: Value| {
        let fake = fake.clone();
        async move {
            let body = serde_json::to_vec(&body).unwrap();
            call(&fake, method, path, None, &[], Some(body)).await
        }
    };

    let token = control("POST", "/_fake/reply-tokens", json!({ "user_id": USER })).await;
    let faults = control(
        "POST",
        "/_fake/faults",
        json!([{ "path": "/v2/bot/message/push", "kind": "respond", "status": 429 }]),
    )
    .await;
    let profile = control(
        "POST",
        "/_fake/profiles",
        json!({ "userId": USER, "displayName": "Sato", "blocked": true }),
    )
    .await;
    let content = control(
        "POST",
        "/_fake/content",
        json!({ "messageId": "42", "contentType": "text/plain", "base64": "aGVsbG8=" }),
    )
    .await;
    let customer = control(
        "POST",
        "/_fake/customers/U206d25c2ea6bd87c17655609a1c37cb8/messages",
        json!({ "text": "Where is my parcel?" }),
    )
    .await;

    assert_eq!(token.status, StatusCode::OK);
    assert_eq!(faults.status, StatusCode::OK);
    assert_eq!(profile.status, StatusCode::OK);
    assert_eq!(content.status, StatusCode::OK);
    assert_eq!(customer.status, StatusCode::OK, "{}", customer.body);
    assert_eq!(customer.body["status"], 200);
    let webhook = next(&mut received).await;
    assert!(String::from_utf8_lossy(&webhook.body).contains("Where is my parcel?"));

    let reply_token = token.body["replyToken"].as_str().unwrap();
    let reply = post(
        &fake,
        "/v2/bot/message/reply",
        json!({ "replyToken": reply_token, "messages": [text("hi")] }),
        &[],
    )
    .await;
    let limited = post(&fake, "/v2/bot/message/push", push_body(USER), &[]).await;
    let blocked = get(&fake, &format!("/v2/bot/profile/{USER}")).await;
    let bytes = get(&fake, "/v2/bot/message/42/content").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(blocked.status, StatusCode::NOT_FOUND);
    assert_eq!(bytes.bytes, b"hello");

    let requests = call(&fake, "GET", "/_fake/requests", None, &[], None).await;
    let deliveries = call(&fake, "GET", "/_fake/deliveries", None, &[], None).await;
    let recorded: Vec<RecordedRequest> = serde_json::from_value(requests.body).unwrap();
    let delivered: Vec<Delivery> = serde_json::from_value(deliveries.body).unwrap();
    assert_eq!(recorded, fake.requests(), "control routes are not recorded");
    assert_eq!(recorded.len(), 4);
    assert_eq!(delivered, fake.deliveries());
    assert_eq!(delivered.len(), 1);

    let reset = call(&fake, "DELETE", "/_fake/requests", None, &[], None).await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT);
    assert!(fake.requests().is_empty() && fake.deliveries().is_empty());
}

#[actix_web::test]
async fn raw_content_can_be_registered_with_its_content_type() {
    let fake = start();
    let client = awc::Client::default();

    let registered = client
        .post(format!("{}/_fake/content?messageId=7", fake.base_url()))
        .insert_header(("content-type", "image/png"))
        .send_body(vec![0x89, b'P', b'N', b'G'])
        .await
        .expect("the fake answers");
    let content = get(&fake, "/v2/bot/message/7/content").await;

    assert_eq!(registered.status(), StatusCode::OK);
    assert_eq!(content.content_type.as_deref(), Some("image/png"));
    assert_eq!(content.bytes, [0x89, b'P', b'N', b'G']);
}

#[actix_web::test]
async fn waiting_for_deliveries_wakes_on_the_delivery_or_times_out() {
    let fake = start();
    let waiting = actix_web::rt::spawn({
        let fake = fake.clone();
        async move { fake.wait_for_deliveries(1, PATIENCE).await }
    });

    let pushed = post(&fake, "/v2/bot/message/push", push_body(USER), &[]).await;
    let delivered = waiting.await.unwrap().expect("woken by the push");
    let more = fake.wait_for_deliveries(2, Duration::from_millis(50)).await;

    assert_eq!(pushed.status, StatusCode::OK);
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        more,
        Err(WaitError {
            waited: Duration::from_millis(50),
            requests: 1,
            deliveries: 1
        })
    );
}

#[actix_web::test]
async fn simulated_customers_send_at_most_max_messages() {
    let fake = start();
    let (target, mut received) = webhook_receiver(StatusCode::OK);
    fake.set_webhook_target(Some(target)).unwrap();
    let customers = SimulatedCustomers {
        account: None,
        customers: 3,
        interval: Duration::from_millis(30),
        max_messages: 7,
        duration: PATIENCE,
    };

    let report = customers.run(&fake).await;

    assert_eq!(
        report,
        CustomersReport {
            sent: 7,
            accepted: 7,
            refused: 0,
            failed: 0
        }
    );
    let users = customers.user_ids("demo");
    let mut senders = Vec::new();
    for _ in 0..7 {
        let webhook = next(&mut received).await;
        let body: Value = serde_json::from_slice(&webhook.body).unwrap();
        senders.push(
            body["events"][0]["source"]["userId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(senders[..3], users[..]);
    assert_eq!(senders[3..6], users[..]);
    assert!(received.try_recv().is_err(), "nothing after the 7th");
}

#[actix_web::test]
async fn only_loopback_addresses_are_served() {
    let refused = FakeLine::start(FakeLineConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..config()
    });
    let bad_target = FakeLine::start(FakeLineConfig {
        webhook_target: Some("http://192.0.2.1:8080".into()),
        ..config()
    });

    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::InvalidInput)
    );
    assert!(bad_target.is_err());
}
