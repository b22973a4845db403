//! Talking back to LINE, end to end: the real server, a websocket agent, and the fake LINE
//! platform standing in for LINE (it checks tokens, retry keys and every body against LINE's
//! schemas, and records what would have reached the customer).

use std::time::Duration;

use actix_web::http::StatusCode;
use linedesk::fake_line::{Delivery, FakeLine, FakeLineConfig, Fault, Profile, Via};
use linedesk::settings::Settings;
use serde_json::{json, Value};

use crate::agents::{accept_next_offer, AgentClient};
use crate::helpers::{eventually, spawn_app_with, TestApp, PATIENCE};

/// A running linedesk wired to a fake LINE platform, both ways.
pub struct Desk {
    pub app: TestApp,
    pub line: FakeLine,
}

/// The embedded defaults, whose automated messages tests of them put back.
fn defaults() -> Settings {
    Settings::load_from(None, std::iter::empty()).expect("default settings")
}

/// linedesk with its automated messages off (unless `edit` puts them back) and quick retries.
pub async fn desk_with(edit: impl FnOnce(&mut Settings)) -> Desk {
    desk_with_line(FakeLineConfig::from_settings(&defaults()), edit).await
}

pub async fn desk_with_line(config: FakeLineConfig, edit: impl FnOnce(&mut Settings)) -> Desk {
    let line = FakeLine::start(config).expect("fake LINE starts");
    let base = line.base_url();
    let app = spawn_app_with(|s| {
        s.line.api_base = base.clone();
        s.line.data_api_base = base;
        s.line.retry_base_ms = 20;
        s.line.retry_max_ms = 200;
        s.line.request_timeout_ms = 2_000;
        // LINE fetches agents' uploads from the public URL, which must be https.
        s.server.public_url = "https://desk.example.test".into();
        edit(s);
    })
    .await;
    line.set_webhook_target(Some(app.address.clone()))
        .expect("loopback target");
    Desk { app, line }
}

/// With the default automated messages (greeting, queued, assigned, consent, ...).
pub async fn desk_with_messages(edit: impl FnOnce(&mut Settings)) -> Desk {
    desk_with(|s| {
        s.automated_messages = defaults().automated_messages;
        edit(s);
    })
    .await
}

pub fn customer(n: u32) -> String {
    format!("U{n:032x}")
}

pub fn texts(delivery: &Delivery) -> Vec<String> {
    delivery
        .messages
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

impl Desk {
    pub async fn write(&self, user: &str, text: &str) {
        let sent = self
            .line
            .send_text_as(user, text)
            .await
            .expect("webhook sent");
        assert_eq!(sent.status, StatusCode::OK);
    }

    /// Deliveries to `user`, once `n` of them arrived.
    pub async fn deliveries_to(&self, user: &str, n: usize) -> Vec<Delivery> {
        let user = user.to_owned();
        self.line
            .wait_until(
                |r| r.deliveries().filter(|d| d.to == user).count() >= n,
                PATIENCE,
            )
            .await
            .unwrap_or_else(|e| panic!("{n} deliveries to {user}: {e}"));
        self.line
            .deliveries()
            .into_iter()
            .filter(|d| d.to == user)
            .collect()
    }

    /// Every request LINE would have seen passed its schema and token checks. A request still
    /// in flight (recorded, not yet answered) is waited for, not taken for a refusal.
    async fn assert_line_accepted_everything(&self) {
        crate::helpers::eventually("every request to LINE answered", || async {
            self.line
                .requests()
                .iter()
                .all(|r| r.status.is_some() || r.fault.is_some())
        })
        .await;
        for request in self.line.requests() {
            // In flight: recorded after the wait above (a reply to the last webhook, say).
            if request.fault.is_some() || request.status.is_none() {
                continue;
            }
            assert!(
                matches!(request.status, Some(200) | Some(404) | Some(409)),
                "LINE would have refused {} {}: {:?} {:?}",
                request.method,
                request.path,
                request.status,
                request.response
            );
        }
    }

    async fn transcript(&self, conversation: &str) -> Vec<Value> {
        let answer = self
            .app
            .admin_get(&format!("/api/conversations/{conversation}"))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.body["transcript"].as_array().unwrap().clone()
    }
}

/// The `delivery` frame of `client_msg_id` with a final status. It may have come before the
/// `ack` (LINE can be quicker than the disk), while the test waited for that.
async fn final_delivery(agent: &mut AgentClient, client_msg_id: &str) -> Value {
    let wanted = |f: &Value| {
        f["type"] == "delivery" && f["client_msg_id"] == client_msg_id && f["status"] != "queued"
    };
    match agent.take_seen(wanted) {
        Some(frame) => frame,
        None => agent.expect_matching(wanted).await,
    }
}

#[actix_web::test]
async fn a_fresh_reply_token_answers_for_free_and_later_messages_are_pushed_with_a_retry_key() {
    let desk = desk_with_messages(|_| {}).await;
    let mut alice = AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    let user = customer(1);
    desk.write(&user, "注文した商品が届きません").await;

    // Greeting and queue position go together on the customer's reply token: free.
    let first = desk.deliveries_to(&user, 1).await;
    assert_eq!(first[0].via, Via::Reply);
    assert_eq!(
        texts(&first[0]),
        [
            "お問い合わせありがとうございます。",
            "担当者におつなぎします（General support、1番目）。少々お待ちください。"
        ]
    );

    let conversation = accept_next_offer(&mut alice).await;
    alice
        .send(json!({"type": "send", "conversation_id": conversation, "client_msg_id": "c-1", "text": "お調べします"}))
        .await;
    alice
        .expect_matching(|f| f["type"] == "ack" && f["client_msg_id"] == "c-1")
        .await;
    let delivered = final_delivery(&mut alice, "c-1").await;
    assert_eq!(delivered["status"], "sent_push", "{delivered}");

    // The token was used: "assigned" and the agent's message went as pushes, the consent
    // notice ahead of the agent's first message, with the agent named as sender.
    let all = desk.deliveries_to(&user, 3).await;
    assert_eq!(texts(&all[1]), ["担当のAliceです。"]);
    assert!(all[1..].iter().all(|d| d.via == Via::Push));
    assert_eq!(
        texts(&all[2]),
        [
            "この会話は品質向上のため記録・確認される場合があります。",
            "お調べします"
        ]
    );
    assert_eq!(all[2].messages[1]["sender"]["name"], "Alice");
    let key = all[2]
        .retry_key
        .as_deref()
        .expect("a push carries a retry key");
    assert!(uuid::Uuid::parse_str(key).is_ok(), "{key}");

    // The transcript shows each message with its delivery.
    let transcript = desk.transcript(&conversation).await;
    let agent_entry = transcript
        .iter()
        .find(|e| e["client_msg_id"] == "c-1")
        .unwrap();
    assert_eq!(agent_entry["delivery"]["status"], "sent_push");
    let greeting = transcript
        .iter()
        .find(|e| e["preview"] == "お問い合わせありがとうございます。")
        .unwrap();
    assert_eq!(greeting["delivery"]["status"], "sent_reply");
    assert_eq!(greeting["author"]["type"], "system");
    desk.assert_line_accepted_everything().await;
}

#[actix_web::test]
async fn expired_used_and_redelivered_reply_tokens_fall_back_to_push() {
    // linedesk thinks a token is fresh for a minute, LINE expires it at once: LINE says
    // "Invalid reply token" and the message goes as a push, once.
    let mut config = FakeLineConfig::from_settings(&defaults());
    config.reply_token_ttl = Duration::ZERO;
    let desk = desk_with_line(config, |s| {
        s.automated_messages = defaults().automated_messages;
    })
    .await;
    let user = customer(2);
    desk.write(&user, "hello").await;
    let delivered = desk.deliveries_to(&user, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].via, Via::Push);
    let refused = desk
        .line
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v2/bot/message/reply")
        .count();
    assert_eq!(refused, 1, "the reply was tried once");

    // linedesk's own ttl: a token older than `line.reply_token_ttl_ms` is not even tried.
    let desk = desk_with_messages(|s| s.line.reply_token_ttl_ms = 0).await;
    let user = customer(3);
    desk.write(&user, "hello").await;
    assert_eq!(desk.deliveries_to(&user, 1).await[0].via, Via::Push);
    assert!(desk
        .line
        .requests()
        .iter()
        .all(|r| r.path != "/v2/bot/message/reply"));

    // A redelivered event's token is never used.
    let desk = desk_with_messages(|_| {}).await;
    let user = customer(4);
    let mut event = desk.line.text_event("demo", &user, "sent again by LINE");
    event["deliveryContext"]["isRedelivery"] = json!(true);
    let status = desk.line.send_webhook("demo", vec![event]).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(desk.deliveries_to(&user, 1).await[0].via, Via::Push);
    desk.assert_line_accepted_everything().await;
}

/// A conversation of `user` assigned to the agent; returns its id.
async fn assigned_conversation(desk: &Desk, agent: &mut AgentClient, user: &str) -> String {
    desk.write(user, "I need help").await;
    accept_next_offer(agent).await
}

#[actix_web::test]
async fn server_errors_rate_limits_and_lost_answers_are_retried_with_one_delivery_per_retry_key() {
    // No reply tokens: every message is a push.
    let desk = desk_with(|s| s.line.reply_token_ttl_ms = 0).await;
    let mut alice = AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    let user = customer(5);
    let conversation = assigned_conversation(&desk, &mut alice, &user).await;
    let push = "/v2/bot/message/push";
    desk.line.inject(Fault::server_error().on(push));
    desk.line.inject(Fault::rate_limited().on(push));
    // The connection drops without an answer (a network failure).
    desk.line.inject(Fault::drop_connection().on(push));
    // LINE takes the fourth attempt but its answer is lost: the fifth gets 409.
    desk.line.inject(Fault::lose_response().on(push));
    alice
        .send(json!({"type": "send", "conversation_id": conversation, "client_msg_id": "r-1", "text": "one moment"}))
        .await;
    let retrying = alice
        .expect_matching(|f| f["type"] == "delivery" && f["client_msg_id"] == "r-1")
        .await;
    assert_eq!(retrying["status"], "queued", "{retrying}");
    assert_eq!(retrying["attempts"], 1);
    let done = final_delivery(&mut alice, "r-1").await;
    assert_eq!(done["status"], "sent_push", "{done}");

    let deliveries = desk.deliveries_to(&user, 1).await;
    assert_eq!(deliveries.len(), 1, "delivered once");
    let attempts: Vec<_> = desk
        .line
        .requests()
        .into_iter()
        .filter(|r| r.path == push)
        .collect();
    assert_eq!(attempts.len(), 5, "500, 429, dropped, lost answer, 409");
    let key = attempts[0].retry_key.clone().unwrap();
    assert!(attempts.iter().all(|r| r.retry_key.as_ref() == Some(&key)));
    assert_eq!(attempts[4].status, Some(409));
}

#[actix_web::test]
async fn a_used_up_monthly_quota_fails_the_message_and_tells_the_agent() {
    let desk = desk_with(|s| s.line.reply_token_ttl_ms = 0).await;
    let mut alice = AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    let user = customer(6);
    let conversation = assigned_conversation(&desk, &mut alice, &user).await;
    desk.line
        .inject(Fault::quota_exceeded().on("/v2/bot/message/push").always());
    alice
        .send(json!({"type": "send", "conversation_id": conversation, "client_msg_id": "q-1", "text": "hello?"}))
        .await;
    let failed = final_delivery(&mut alice, "q-1").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["reason"].as_str().unwrap().contains("monthly"),
        "{failed}"
    );
    let pushes = desk
        .line
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v2/bot/message/push")
        .count();
    assert_eq!(pushes, 1, "a quota refusal is not retried");
    assert!(desk.line.deliveries().is_empty());
    let transcript = desk.transcript(&conversation).await;
    let entry = transcript
        .iter()
        .find(|e| e["client_msg_id"] == "q-1")
        .unwrap();
    assert_eq!(entry["delivery"]["status"], "failed");
}

#[actix_web::test]
async fn long_text_is_split_and_more_than_five_messages_go_in_several_requests() {
    let desk = desk_with_messages(|_| {}).await;
    let mut alice = AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    let user = customer(7);
    let conversation = assigned_conversation(&desk, &mut alice, &user).await;
    let before = desk.line.deliveries().len();
    // 26,000 characters: six texts of at most 5,000, after the consent notice.
    let long: String = (0..2_600).map(|i| format!("line {i:04}\n")).collect();
    alice
        .send(json!({"type": "send", "conversation_id": conversation, "client_msg_id": "l-1", "text": long}))
        .await;
    final_delivery(&mut alice, "l-1").await;
    let pushes: Vec<Delivery> = desk.line.deliveries()[before..]
        .iter()
        .filter(|d| d.to == user && d.via == Via::Push && d.messages.len() > 1)
        .cloned()
        .collect();
    assert_eq!(pushes.len(), 2, "7 messages: a request of 5, then one of 2");
    assert_eq!((pushes[0].messages.len(), pushes[1].messages.len()), (5, 2));
    assert_ne!(pushes[0].retry_key, pushes[1].retry_key);
    let sent: String = pushes
        .iter()
        .flat_map(texts)
        .skip(1) // the consent notice
        .collect();
    assert_eq!(sent.replace('\n', ""), long.replace('\n', ""));
    for text in pushes.iter().flat_map(texts) {
        assert!(text.encode_utf16().count() <= 5_000);
    }
    desk.assert_line_accepted_everything().await;
}

#[actix_web::test]
async fn stickers_locations_and_quick_replies_reach_line_in_its_shapes() {
    let desk = desk_with(|_| {}).await;
    let mut alice = AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    let user = customer(8);
    let conversation = assigned_conversation(&desk, &mut alice, &user).await;
    alice
        .send(
            json!({"type": "send", "conversation_id": conversation, "client_msg_id": "s-1",
            "sticker": {"package_id": "446", "sticker_id": "1988"}}),
        )
        .await;
    final_delivery(&mut alice, "s-1").await;
    alice
        .send(json!({"type": "send", "conversation_id": conversation, "client_msg_id": "s-2",
            "location": {"title": "Shop", "address": "1-2-3 Shibuya", "latitude": 35.658, "longitude": 139.7016},
            "quick_replies": [{"label": "Yes", "text": "yes"}, {"label": "No", "text": "no"}]}))
        .await;
    final_delivery(&mut alice, "s-2").await;
    let sent = desk.deliveries_to(&user, 2).await;
    assert_eq!(sent[0].messages[0]["type"], "sticker");
    assert_eq!(sent[0].messages[0]["packageId"], "446");
    let location = &sent[1].messages[0];
    assert_eq!(location["type"], "location");
    assert_eq!(location["quickReply"]["items"][1]["action"]["text"], "no");
    // Something LINE can't take is refused before it is stored: nothing half-sent.
    alice
        .send(
            json!({"type": "send", "conversation_id": conversation, "client_msg_id": "s-3",
            "image_url": "http://insecure.example/a.png"}),
        )
        .await;
    let error = alice.expect("error").await;
    assert_eq!(error["code"], "bad_content", "{error}");
    desk.assert_line_accepted_everything().await;
}

#[actix_web::test]
async fn a_profile_is_fetched_once_and_its_language_picks_the_automated_messages() {
    let desk = desk_with_messages(|s| s.conversation.wrap_up_ms = 0).await;
    let user = customer(9);
    desk.line.register_profile(Profile {
        display_name: "Ken".into(),
        user_id: user.clone(),
        picture_url: Some("https://profile.line-scdn.net/ken".into()),
        status_message: None,
        language: Some("en".into()),
    });
    let mut alice = AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    desk.write(&user, "my order is late").await;
    let first = desk.deliveries_to(&user, 1).await;
    assert_eq!(
        texts(&first[0]),
        [
            "Hello Ken, thank you for contacting us.",
            "We are connecting you to an agent (General support, you are number 1). Please wait a moment."
        ]
    );
    let offer = alice.expect("offer").await;
    assert_eq!(offer["customer"]["display_name"], "Ken");
    assert_eq!(offer["customer"]["language"], "en");
    let conversation = offer["conversation_id"].as_str().unwrap().to_owned();
    alice
        .send(json!({"type": "accept", "conversation_id": conversation}))
        .await;
    alice.expect("assigned").await;
    for frame in ["end", "wrap_up_done"] {
        alice
            .send(json!({"type": frame, "conversation_id": conversation}))
            .await;
    }
    alice
        .expect_matching(|f| f["type"] == "conversation" && f["status"] == "closed")
        .await;
    // A second conversation of the same customer: the profile comes from the contact store.
    desk.write(&user, "one more question").await;
    alice.expect("offer").await;
    let profile_path = format!("/v2/bot/profile/{user}");
    let fetched = desk
        .line
        .requests()
        .iter()
        .filter(|r| r.path == profile_path)
        .count();
    assert_eq!(fetched, 1);

    // A customer LINE has no profile for (blocked, not a friend): asked once, then remembered.
    let stranger = customer(10);
    desk.line.block_user(&stranger);
    desk.write(&stranger, "hello").await;
    let offer = alice.expect("offer").await;
    assert_eq!(offer["customer"]["display_name"], Value::Null);
    let stranger_path = format!("/v2/bot/profile/{stranger}");
    let asked = || {
        desk.line
            .requests()
            .iter()
            .filter(|r| r.path == stranger_path)
            .count()
    };
    assert_eq!(asked(), 1);
    desk.assert_line_accepted_everything().await;
}

#[actix_web::test]
async fn automated_messages_fire_on_each_trigger_in_the_customers_language() {
    let desk = desk_with_messages(|s| {
        for m in &mut s.automated_messages {
            m.enabled = true; // `closed` is off by default
        }
    })
    .await;
    let mut alice = AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    let user = customer(11);
    desk.write(&user, "こんにちは").await;
    let conversation = accept_next_offer(&mut alice).await;
    alice
        .send(json!({"type": "transfer", "conversation_id": conversation, "queue": "billing"}))
        .await;
    let conversation = accept_next_offer(&mut alice).await;
    alice
        .send(json!({"type": "send", "conversation_id": conversation, "client_msg_id": "t-1", "text": "承知しました"}))
        .await;
    final_delivery(&mut alice, "t-1").await;
    for frame in ["end", "wrap_up_done"] {
        alice
            .send(json!({"type": frame, "conversation_id": conversation}))
            .await;
    }
    let all: Vec<String> = desk
        .deliveries_to(&user, 7)
        .await
        .iter()
        .flat_map(texts)
        .collect();
    assert_eq!(
        all,
        [
            "お問い合わせありがとうございます。",
            "担当者におつなぎします（General support、1番目）。少々お待ちください。",
            "担当のAliceです。",
            "Billingの担当者におつなぎします。",
            "担当のAliceです。",
            "この会話は品質向上のため記録・確認される場合があります。",
            "承知しました",
            "お問い合わせありがとうございました。",
            "このお問い合わせは終了しました。",
        ]
    );
    desk.assert_line_accepted_everything().await;
}

/// An image event from `user`, with LINE hosting the bytes under `message_id`.
fn image_event(line: &FakeLine, user: &str, message_id: &str) -> Value {
    let mut event = line.text_event("demo", user, "unused");
    event["message"] = json!({
        "type": "image",
        "id": message_id,
        "contentProvider": {"type": "line"},
        "quoteToken": "q-image",
    });
    event
}

async fn get_with_token(app: &TestApp, path: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
    let client = awc::Client::builder().timeout(PATIENCE).finish();
    let mut request = client.get(format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await.expect("GET");
    let body = response.body().limit(10_000_000).await.expect("body");
    (response.status(), body.to_vec())
}

#[actix_web::test]
async fn customer_attachments_are_downloaded_on_receipt_and_served_to_agents_only() {
    let desk = desk_with(|s| s.content.max_bytes = 4_096).await;
    let user = customer(12);
    let picture = vec![7u8; 3_000];
    desk.line
        .register_content("5001", "image/jpeg", picture.clone());
    let status = desk
        .line
        .send_webhook("demo", vec![image_event(&desk.line, &user, "5001")])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let path = "/api/content/line-demo-5001";
    eventually("the image is downloaded", || async {
        get_with_token(&desk.app, path, Some("dev-bob-token"))
            .await
            .0
            == StatusCode::OK
    })
    .await;
    assert_eq!(
        get_with_token(&desk.app, path, Some("dev-bob-token"))
            .await
            .1,
        picture
    );
    assert_eq!(
        get_with_token(&desk.app, path, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with_token(&desk.app, "/content/line-demo-5001", None)
            .await
            .0,
        StatusCode::NOT_FOUND,
        "customers' media are never public"
    );
    // The transcript points agents at linedesk's copy.
    let mut bob = AgentClient::connect(&desk.app, "dev-bob-token").await;
    bob.expect("hello").await;
    let offer = bob.expect("offer").await;
    let conversation = offer["conversation_id"].as_str().unwrap();
    let transcript = desk.transcript(conversation).await;
    assert_eq!(transcript[0]["content"]["url"], path);

    // Too big: refused, nothing stored, counted.
    desk.line
        .register_content("5002", "image/jpeg", vec![0u8; 5_000]);
    desk.line
        .send_webhook("demo", vec![image_event(&desk.line, &user, "5002")])
        .await
        .unwrap();
    eventually("the refusal is counted", || async {
        desk.app
            .get("/metrics")
            .await
            .text
            .contains("linedesk_attachments_failed_total 1")
    })
    .await;
    assert_eq!(
        get_with_token(
            &desk.app,
            "/api/content/line-demo-5002",
            Some("dev-bob-token")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

async fn upload(app: &TestApp, token: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let client = awc::Client::builder().timeout(PATIENCE).finish();
    let mut response = client
        .post(format!("{}/api/content?name=receipt.png", app.address))
        .bearer_auth(token)
        .insert_header(("content-type", "image/png"))
        .send_body(bytes)
        .await
        .expect("POST");
    let body = response.body().await.expect("body");
    (
        response.status(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[actix_web::test]
async fn an_agent_upload_is_served_publicly_and_sent_as_an_image() {
    let desk = desk_with(|s| s.content.max_bytes = 4_096).await;
    let mut alice = AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    let user = customer(13);
    let conversation = assigned_conversation(&desk, &mut alice, &user).await;

    let (status, body) = upload(&desk.app, "dev-alice-token", vec![1u8; 4_096]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = body["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("https://desk.example.test/content/up-"),
        "{url}"
    );
    let public_path = url.trim_start_matches("https://desk.example.test");
    assert_eq!(
        get_with_token(&desk.app, public_path, None).await,
        (StatusCode::OK, vec![1u8; 4_096])
    );
    alice
        .send(json!({"type": "send", "conversation_id": conversation, "client_msg_id": "u-1", "image_url": url}))
        .await;
    final_delivery(&mut alice, "u-1").await;
    let image = &desk.deliveries_to(&user, 1).await[0].messages[0];
    assert_eq!(image["type"], "image");
    assert_eq!(image["originalContentUrl"], url);

    // Over the limit: 413 with a JSON body, and nothing stored.
    let files = || {
        std::fs::read_dir(desk.app.settings.storage.path.join("content"))
            .unwrap()
            .count()
    };
    let stored = files();
    let (status, body) = upload(&desk.app, "dev-alice-token", vec![1u8; 4_097]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], "payload_too_large");
    assert_eq!(files(), stored);
    // No token, no upload.
    let (status, _) = upload(&desk.app, "not-a-token", vec![1u8; 10]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn switched_off_attachments_are_refused_cleanly_both_ways() {
    let desk = desk_with(|s| {
        s.automated_messages = defaults().automated_messages;
        s.workstreams[0].customer_attachments = false;
        s.workstreams[0].agent_attachments = false;
    })
    .await;
    let user = customer(14);
    desk.line
        .register_content("6001", "image/jpeg", vec![1u8; 10]);
    desk.line
        .send_webhook("demo", vec![image_event(&desk.line, &user, "6001")])
        .await
        .unwrap();
    let told = desk.deliveries_to(&user, 1).await;
    let said: Vec<String> = told.iter().flat_map(texts).collect();
    assert!(
        said.iter()
            .any(|t| t.contains("ファイルや画像はお受けできません")),
        "{said:?}"
    );
    assert!(
        desk.line
            .requests()
            .iter()
            .all(|r| !r.path.contains("/content")),
        "nothing downloaded"
    );

    let mut alice = AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    let conversation = accept_next_offer(&mut alice).await;
    let before = desk.line.deliveries().len();
    alice
        .send(
            json!({"type": "send", "conversation_id": conversation, "client_msg_id": "a-1",
            "image_url": "https://desk.example.test/content/up-x"}),
        )
        .await;
    let error = alice.expect("error").await;
    assert_eq!(error["code"], "not_allowed", "{error}");
    alice
        .send(json!({"type": "send", "conversation_id": conversation, "client_msg_id": "a-2", "text": "text is fine"}))
        .await;
    final_delivery(&mut alice, "a-2").await;
    let after: Vec<String> = desk.line.deliveries()[before..]
        .iter()
        .flat_map(texts)
        .collect();
    assert!(after.iter().all(|t| !t.contains("up-x")), "{after:?}");
    assert!(after.iter().any(|t| t == "text is fine"));
}

#[actix_web::test]
async fn a_restart_with_messages_in_the_outbox_delivers_each_exactly_once() {
    use crate::helpers::ServerProcess;
    let line = FakeLine::start(FakeLineConfig::from_settings(&defaults())).unwrap();
    let push = "/v2/bot/message/push";
    // LINE takes the first push but its answer is lost; then LINE is down.
    line.inject(Fault::lose_response().on(push));
    line.inject(Fault::server_error().on(push).always());
    let data = tempfile::tempdir().unwrap();
    let base = line.base_url();
    let env = [
        ("LINEDESK__LINE__API_BASE", base.as_str()),
        ("LINEDESK__LINE__DATA_API_BASE", base.as_str()),
        ("LINEDESK__LINE__REPLY_TOKEN_TTL_MS", "0"),
        ("LINEDESK__LINE__RETRY_BASE_MS", "20"),
        ("LINEDESK__LINE__RETRY_MAX_MS", "100"),
    ];
    // Only the agent's messages go out: the push faults are theirs.
    let overlay = data.path().join("linedesk.toml");
    std::fs::write(&overlay, "automated_messages = []\n").unwrap();
    let args = ["--config", overlay.to_str().unwrap()];
    let server = ServerProcess::start_with(data.path(), &args, &env);
    line.set_webhook_target(Some(server.address.clone()))
        .unwrap();
    let user = customer(20);
    let sent = line
        .send_text_as(&user, "where is my parcel?")
        .await
        .unwrap();
    assert_eq!(sent.status, StatusCode::OK);
    let mut alice = AgentClient::connect_to(&server.address, "dev-alice-token").await;
    alice.expect("hello").await;
    let conversation = accept_next_offer(&mut alice).await;
    let texts_sent = ["first", "second", "third"];
    for (i, text) in texts_sent.iter().enumerate() {
        let id = format!("k-{i}");
        alice
            .send(json!({"type": "send", "conversation_id": conversation, "client_msg_id": id, "text": text}))
            .await;
        alice
            .expect_matching(|f| f["type"] == "ack" && f["client_msg_id"] == id.as_str())
            .await;
    }
    // Every message was tried (and kept) before the crash.
    line.wait_until(
        |r| r.requests().filter(|q| q.path == push).count() >= 4,
        PATIENCE,
    )
    .await
    .unwrap();
    drop(alice);
    server.signal_and_wait("KILL");
    // The first push: LINE took it, linedesk never heard.
    let first_key = line
        .requests()
        .into_iter()
        .find(|r| r.path == push)
        .and_then(|r| r.retry_key)
        .unwrap();

    line.clear_faults();
    let server = ServerProcess::start_with(data.path(), &args, &env);
    line.set_webhook_target(Some(server.address.clone()))
        .unwrap();
    line.wait_until(
        |r| {
            r.deliveries().filter(|d| d.to == user).count() >= 3
                && r.requests()
                    .filter(|q| q.path == push && q.status == Some(409))
                    .count()
                    >= 1
        },
        PATIENCE,
    )
    .await
    .unwrap();
    let delivered: Vec<Delivery> = line
        .deliveries()
        .into_iter()
        .filter(|d| d.to == user)
        .collect();
    let said: Vec<String> = delivered.iter().flat_map(texts).collect();
    assert_eq!(said.len(), 3, "each message exactly once: {said:?}");
    for text in texts_sent {
        assert!(
            said.iter().any(|s| s == text),
            "{text} missing from {said:?}"
        );
    }
    // After the restart linedesk sent it again with the key it stored: LINE said 409, and
    // the customer saw it once.
    let conflict = line
        .requests()
        .into_iter()
        .find(|r| r.path == push && r.status == Some(409))
        .unwrap();
    assert_eq!(conflict.retry_key.as_ref(), Some(&first_key));
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));
}

#[actix_web::test]
async fn outside_operating_hours_the_customer_is_told_instead_of_a_queue_position() {
    let desk = desk_with_messages(|s| {
        // Open no day of the week: always outside the hours.
        s.workstreams[0].operating_hours = Some(linedesk::settings::OperatingHoursSettings {
            utc_offset: "+09:00".into(),
            days: Vec::new(),
            open: "09:00".into(),
            close: "18:00".into(),
        });
    })
    .await;
    let user = customer(30);
    desk.write(&user, "hello?").await;
    let said: Vec<String> = desk
        .deliveries_to(&user, 1)
        .await
        .iter()
        .flat_map(texts)
        .collect();
    assert_eq!(
        said,
        [
            "お問い合わせありがとうございます。",
            "ただいま営業時間外です。営業時間内に順番にご返信いたします。"
        ]
    );
    // Still queued: the first agent in gets it.
    let mut alice = AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    alice.expect("offer").await;
}

#[test]
fn operating_hours_are_checked_with_the_key_named() {
    for (hours, key) in [
        (
            r#"{ utc_offset = "JST", days = ["mon"], open = "09:00", close = "18:00" }"#,
            "utc_offset",
        ),
        (
            r#"{ utc_offset = "+09:00", days = ["funday"], open = "09:00", close = "18:00" }"#,
            "days",
        ),
        (
            r#"{ utc_offset = "+09:00", days = ["mon"], open = "9am", close = "18:00" }"#,
            "open",
        ),
    ] {
        let toml = format!("{}operating_hours = {hours}\n", defaults_toml_workstream());
        let err = crate::helpers::refused_overlay(&toml);
        assert!(
            err.contains(&format!("workstreams[0].operating_hours.{key}")),
            "{err}"
        );
    }
}

/// The default workstream, as an overlay file would write it.
fn defaults_toml_workstream() -> String {
    "[[workstreams]]\nid = \"support\"\naccount = \"demo\"\nlanguage = \"ja\"\ndefault_queue = \"general\"\nkeep_same_agent = true\ncapacity_units = 1\n".into()
}

#[actix_web::test]
async fn a_restarted_conversation_does_not_tell_the_customer_twice() {
    use linedesk_actors::conversation::{AskConversation, Question};
    use linedesk_actors::domain::ConversationKey;
    let desk = desk_with_messages(|_| {}).await;
    let (first, user) = (customer(31), customer(32));
    desk.write(&first, "hello").await;
    desk.deliveries_to(&first, 1).await;
    desk.write(&user, "hello").await;
    let told = desk.deliveries_to(&user, 1).await;
    assert!(
        texts(&told[0])[1].contains("2番目"),
        "{:?}",
        texts(&told[0])
    );
    // The first customer is taken: the second is now first in line.
    let mut alice = AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    accept_next_offer(&mut alice).await;
    let conversation = format!("demo.user.{user}.1");
    let system_entries = |transcript: Vec<Value>| {
        transcript
            .iter()
            .filter(|e| e["author"]["type"] == "system")
            .count()
    };
    assert_eq!(system_entries(desk.transcript(&conversation).await), 2);
    // The actor fails and its supervisor brings it back from storage: it routes the
    // conversation again (its position changed), but the customer was told already.
    let key = ConversationKey::parse(&format!("demo/user/{user}")).unwrap();
    desk.app
        .registry
        .send(AskConversation {
            key,
            question: Question::InjectFault,
        })
        .await
        .unwrap()
        .unwrap();
    desk.write(&user, "still there?").await;
    let transcript = desk.transcript(&conversation).await;
    assert_eq!(system_entries(transcript), 2);
    let to_user = desk
        .line
        .deliveries()
        .into_iter()
        .filter(|d| d.to == user)
        .count();
    assert_eq!(to_user, 1);
}

#[actix_web::test]
async fn a_download_cut_short_by_a_crash_is_resumed_after_the_restart() {
    use crate::helpers::ServerProcess;
    let line = FakeLine::start(FakeLineConfig::from_settings(&defaults())).unwrap();
    line.register_content("7001", "image/png", vec![9u8; 2_000]);
    // LINE's content API does not answer before the crash.
    line.inject(Fault::hang(Duration::from_secs(120)).on("/v2/bot/message/7001/content"));
    let data = tempfile::tempdir().unwrap();
    let base = line.base_url();
    let env = [
        ("LINEDESK__LINE__API_BASE", base.as_str()),
        ("LINEDESK__LINE__DATA_API_BASE", base.as_str()),
        ("LINEDESK__LINE__REQUEST_TIMEOUT_MS", "60000"),
    ];
    let server = ServerProcess::start(data.path(), &env);
    line.set_webhook_target(Some(server.address.clone()))
        .unwrap();
    let user = customer(40);
    let status = line
        .send_webhook("demo", vec![image_event(&line, &user, "7001")])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    line.wait_until(
        |r| {
            r.requests()
                .any(|q| q.path == "/v2/bot/message/7001/content")
        },
        PATIENCE,
    )
    .await
    .unwrap();
    server.signal_and_wait("KILL");

    let server = ServerProcess::start(data.path(), &env);
    let client = awc::Client::builder().timeout(PATIENCE).finish();
    let url = format!("{}/api/content/line-demo-7001", server.address);
    eventually("the download resumes", || async {
        let response = client.get(&url).bearer_auth("dev-bob-token").send().await;
        response.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));
}

#[actix_web::test]
async fn sends_to_line_keep_under_the_accounts_rate_limit() {
    // 5 requests a second, no burst: four customers greeted at once are spaced out.
    let desk = desk_with_messages(|s| {
        s.line.reply_token_ttl_ms = 0;
        s.line.requests_per_second = 5.0;
        s.line.burst = 1;
    })
    .await;
    let users: Vec<String> = (50..54).map(customer).collect();
    for user in &users {
        desk.write(user, "hello").await;
    }
    desk.line
        .wait_until(|r| r.deliveries().count() >= users.len(), PATIENCE)
        .await
        .unwrap();
    let mut at: Vec<u64> = desk
        .line
        .requests()
        .iter()
        .filter(|r| r.path == "/v2/bot/message/push")
        .map(|r| r.received_at_ms)
        .collect();
    at.sort_unstable();
    assert_eq!(at.len(), users.len());
    // The limiter releases them 200 ms apart; they are timed on arrival, so a request held up
    // on its way (a loaded machine) narrows the gap after it by that much. Without the limit
    // all four arrive within a few milliseconds.
    for pair in at.windows(2) {
        assert!(pair[1] - pair[0] >= 100, "pushes at {at:?}");
    }
    assert!(at[at.len() - 1] - at[0] >= 500, "pushes at {at:?}");
}
