//! The callback URL as LINE uses it: signed deliveries, redeliveries, every event type, and
//! every kind of bad input (each refused with a JSON error and nothing stored).

use awc::http::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, stored_ids, Answer, TestApp, DESTINATION};
use crate::line_payloads::{callback, every_event, text_event};
use linedesk::fake_line::schema::OpenApi;

const USER: &str = "U4af4980629ec1f5ca4e3e0c9a4f0e4b1";

fn ulid(n: usize) -> String {
    format!("01J0000000000000000000{n:04}")
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "body: {}", answer.text);
    assert_eq!(answer.body["code"], code, "body: {}", answer.text);
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "a message for people: {}",
        answer.text
    );
}

async fn assert_nothing_stored(app: &TestApp) {
    assert!(app.stored_events().is_empty(), "nothing may be stored");
    assert_eq!(app.journal.last_seq(), 0);
}

fn metric(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {line_start} in\n{metrics}"))
}

#[actix_web::test]
async fn a_signed_webhook_is_stored_and_answered_200() {
    let app = spawn_app().await;
    let body = callback(DESTINATION, vec![text_event(USER, &ulid(1), "hello")]);

    let answer = app.post_signed(&body).await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let stored = app.stored_events();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].conversation.to_string(),
        format!("demo/user/{USER}")
    );
    assert_eq!(stored[0].v, linedesk::storage::JOURNAL_FORMAT_VERSION);
    let event: Value = serde_json::from_str(stored[0].event.get()).unwrap();
    assert_eq!(event, body["events"][0], "stored exactly as received");
}

#[actix_web::test]
async fn the_verification_request_with_no_events_is_answered_200() {
    let app = spawn_app().await;
    let answer = app
        .post_signed(&json!({"destination": DESTINATION, "events": []}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_nothing_stored(&app).await;
}

#[actix_web::test]
async fn webhook_with_a_missing_or_bad_signature_is_rejected_with_401() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&callback(
        DESTINATION,
        vec![text_event(USER, &ulid(1), "hi")],
    ))
    .unwrap();
    let other_secret = linedesk::line::signature::sign(b"not-the-channel-secret", &body);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let right_for_original =
        linedesk::line::signature::sign(app.channel_secret("demo").as_bytes(), &body);

    for (what, bytes, signature) in [
        ("missing", body.clone(), None),
        ("empty", body.clone(), Some(String::new())),
        ("not base64", body.clone(), Some("***".to_owned())),
        ("another secret", body.clone(), Some(other_secret)),
        ("tampered body", tampered, Some(right_for_original)),
    ] {
        let answer = app.post_webhook("demo", bytes, signature).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            answer.text
        );
        assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_signature");
    }
    assert_nothing_stored(&app).await;
    let metrics = app.get("/metrics").await.text;
    assert_eq!(
        metric(
            &metrics,
            "linedesk_webhook_requests_rejected_total{code=\"invalid_signature\"}"
        ),
        5
    );
}

#[actix_web::test]
async fn webhook_for_an_unknown_account_is_rejected_with_404() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&callback(
        DESTINATION,
        vec![text_event(USER, &ulid(1), "hi")],
    ))
    .unwrap();
    let sig = linedesk::line::signature::sign(app.channel_secret("demo").as_bytes(), &body);
    let answer = app.post_webhook("nobody", body, Some(sig)).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "unknown_account");
    assert_nothing_stored(&app).await;
}

#[actix_web::test]
async fn a_body_over_the_limit_is_rejected_with_413() {
    let app = spawn_app_with(|s| s.server.max_body_bytes = 4096).await;
    let big = "x".repeat(5000);
    let body = serde_json::to_vec(&callback(
        DESTINATION,
        vec![text_event(USER, &ulid(1), &big)],
    ))
    .unwrap();
    let answer = app.post_signed_bytes("demo", body).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Without a Content-Length (chunked), the limit is enforced while reading.
    let body = serde_json::to_vec(&callback(
        DESTINATION,
        vec![text_event(USER, &ulid(2), &big)],
    ))
    .unwrap();
    let sig = linedesk::line::signature::sign(app.channel_secret("demo").as_bytes(), &body);
    let chunks: Vec<Result<actix_web::web::Bytes, std::io::Error>> = body
        .chunks(1000)
        .map(|c| Ok(actix_web::web::Bytes::copy_from_slice(c)))
        .collect();
    let mut response = awc::Client::default()
        .post(format!("{}/line/webhook/demo", app.address))
        .insert_header(("x-line-signature", sig))
        .send_stream(futures_util::stream::iter(chunks))
        .await
        .expect("chunked request");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["code"], "payload_too_large");

    assert_nothing_stored(&app).await;
}

#[actix_web::test]
async fn a_body_that_is_not_a_webhook_is_rejected_with_400() {
    let app = spawn_app().await;
    let good = text_event(USER, &ulid(1), "hi");
    let mut no_id = good.clone();
    no_id.as_object_mut().unwrap().remove("webhookEventId");
    let mut no_message = good.clone();
    no_message.as_object_mut().unwrap().remove("message");
    let mut text_without_text = good.clone();
    text_without_text["message"]
        .as_object_mut()
        .unwrap()
        .remove("text");
    let mut bad_timestamp = good.clone();
    bad_timestamp["timestamp"] = json!("yesterday");

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"hello".to_vec()),
        ("empty", Vec::new()),
        ("a JSON array", b"[]".to_vec()),
        (
            "no events",
            serde_json::to_vec(&json!({"destination": DESTINATION})).unwrap(),
        ),
        (
            "events not an array",
            serde_json::to_vec(&json!({"destination": DESTINATION, "events": {}})).unwrap(),
        ),
        // One bad event refuses the whole delivery, including the good one before it.
        (
            "no webhookEventId",
            serde_json::to_vec(&callback(DESTINATION, vec![good.clone(), no_id])).unwrap(),
        ),
        (
            "message event without message",
            serde_json::to_vec(&callback(DESTINATION, vec![no_message])).unwrap(),
        ),
        (
            "text without text",
            serde_json::to_vec(&callback(DESTINATION, vec![text_without_text])).unwrap(),
        ),
        (
            "timestamp not a number",
            serde_json::to_vec(&callback(DESTINATION, vec![bad_timestamp])).unwrap(),
        ),
    ];
    for (what, body) in cases {
        let answer = app.post_signed_bytes("demo", body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            answer.text
        );
        assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_body");
    }
    assert_nothing_stored(&app).await;
}

#[actix_web::test]
async fn a_redelivered_event_is_acknowledged_and_stored_once() {
    let app = spawn_app().await;
    let first = text_event(USER, &ulid(1), "once");
    let mut again = first.clone();
    again["deliveryContext"]["isRedelivery"] = json!(true);

    assert_eq!(
        app.post_signed(&callback(DESTINATION, vec![first.clone()]))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.post_signed(&callback(DESTINATION, vec![again]))
            .await
            .status,
        StatusCode::OK
    );
    // The same id twice in one delivery counts once too.
    let next = text_event(USER, &ulid(2), "twice in one");
    let answer = app
        .post_signed(&callback(DESTINATION, vec![next.clone(), next, first]))
        .await;
    assert_eq!(answer.status, StatusCode::OK);

    assert_eq!(stored_ids(&app.stored_events()), [ulid(1), ulid(2)]);
    let metrics = app.get("/metrics").await.text;
    assert_eq!(
        metric(&metrics, "linedesk_webhook_events_duplicate_total"),
        3
    );
}

#[actix_web::test]
async fn a_batch_of_100_events_is_stored_in_order() {
    let app = spawn_app().await;
    let users = [
        "Uaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "Ubbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    ];
    let events: Vec<Value> = (0..100)
        .map(|i| text_event(users[i % 2], &ulid(i), &format!("message {i}")))
        .collect();

    let answer = app.post_signed(&callback(DESTINATION, events)).await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let stored = app.stored_events();
    assert_eq!(stored_ids(&stored), (0..100).map(ulid).collect::<Vec<_>>());
    for user in users {
        let key =
            linedesk_actors::domain::ConversationKey::parse(&format!("demo/user/{user}")).unwrap();
        let texts: Vec<String> = stored
            .iter()
            .filter(|e| e.conversation == key)
            .map(|e| {
                let v: Value = serde_json::from_str(e.event.get()).unwrap();
                v["message"]["text"].as_str().unwrap().to_owned()
            })
            .collect();
        let expected: Vec<String> = (0..100)
            .filter(|i| users[i % 2] == user)
            .map(|i| format!("message {i}"))
            .collect();
        assert_eq!(texts, expected, "order of {user}");
    }
}

#[actix_web::test]
async fn concurrent_deliveries_for_one_user_keep_each_deliverys_order() {
    let app = spawn_app().await;
    // 8 deliveries in flight at once, 10 events each; each delivery's events stay in order and
    // every event is stored.
    let requests = (0..8).map(|d| {
        let events = (0..10)
            .map(|i| text_event(USER, &ulid(d * 10 + i), &format!("{d}-{i}")))
            .collect();
        let body = callback(DESTINATION, events);
        let app = &app;
        async move { app.post_signed(&body).await.status }
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK);
    }
    let ids = stored_ids(&app.stored_events());
    assert_eq!(ids.len(), 80);
    for d in 0..8 {
        let positions: Vec<usize> = (0..10)
            .map(|i| ids.iter().position(|id| *id == ulid(d * 10 + i)).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "delivery {d} kept its order"
        );
    }
    let metrics = app.get("/metrics").await.text;
    // One event log fsync per writer batch: concurrent deliveries share them.
    let syncs = metric(&metrics, "linedesk_journal_event_log_syncs_total");
    let batches = metric(&metrics, "linedesk_journal_batches_total");
    assert!((1..=8).contains(&syncs), "{syncs} syncs");
    assert_eq!(syncs, batches);
}

#[actix_web::test]
async fn unicode_and_emoji_text_is_stored_byte_for_byte() {
    let app = spawn_app().await;
    let text = "こんにちは 👋🏽 Ünïcödé \u{1F469}\u{200D}\u{1F4BB} \"quoted\" \\ back\nslash";
    let mut event = text_event(USER, &ulid(1), text);
    event["message"]["emojis"] = json!([{"index": 6, "length": 6, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}]);
    // LINE may escape non-ASCII; the stored bytes must be the ones that were signed.
    let escaped = serde_json::to_string(&callback(DESTINATION, vec![event.clone()]))
        .unwrap()
        .replace("こんにちは", "\\u3053\\u3093\\u306b\\u3061\\u306f");

    let answer = app
        .post_signed_bytes("demo", escaped.clone().into_bytes())
        .await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let stored = app.stored_events();
    assert!(escaped.contains(stored[0].event.get()), "raw bytes kept");
    let parsed: Value = serde_json::from_str(stored[0].event.get()).unwrap();
    assert_eq!(parsed["message"]["text"], text);
}

#[actix_web::test]
async fn every_event_and_message_type_is_accepted_and_stored() {
    // Every event kept: covered ones would otherwise leave after the retention.
    let app = spawn_app_with(|s| s.storage.journal_retention_secs = 0).await;
    let schema = OpenApi::webhook();
    let payloads = every_event(DESTINATION);
    let mut covered: Vec<String> = payloads
        .iter()
        .map(|(_, e)| match e["type"].as_str().unwrap() {
            "message" => format!("message/{}", e["message"]["type"].as_str().unwrap()),
            other => other.to_owned(),
        })
        .collect();
    covered.sort();
    covered.dedup();
    let mut expected = vec![
        "accountLink",
        "activated",
        "beacon",
        "botResumed",
        "botSuspended",
        "deactivated",
        "delivery",
        "follow",
        "join",
        "leave",
        "memberJoined",
        "memberLeft",
        "membership",
        "module",
        "postback",
        "unfollow",
        "unsend",
        "videoPlayComplete",
        "message/text",
        "message/image",
        "message/video",
        "message/audio",
        "message/file",
        "message/location",
        "message/sticker",
    ];
    expected.sort();
    for name in expected {
        assert!(
            covered.iter().any(|c| c == name),
            "a payload of type {name}"
        );
    }

    for (name, event) in &payloads {
        let body = callback(DESTINATION, vec![event.clone()]);
        schema
            .validate("CallbackRequest", &body)
            .unwrap_or_else(|e| panic!("{name} matches LINE's CallbackRequest schema: {e:?}"));
        let answer = app.post_signed(&body).await;
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text);
    }

    let stored = app.stored_events();
    let expected: Vec<String> = payloads
        .iter()
        .map(|(_, e)| e["webhookEventId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored_ids(&stored), expected);
    for ((name, sent), kept) in payloads.iter().zip(&stored) {
        let kept: Value = serde_json::from_str(kept.event.get()).unwrap();
        assert_eq!(&kept, sent, "{name} kept whole, unknown fields included");
    }
    let metrics = app.get("/metrics").await.text;
    assert_eq!(
        metric(&metrics, "linedesk_webhook_events_unknown_type_total"),
        2
    );
}

#[actix_web::test]
async fn group_and_room_events_belong_to_the_group_or_room() {
    let app = spawn_app().await;
    let mut in_group = text_event(USER, &ulid(1), "in a group");
    in_group["source"] =
        json!({"type": "group", "groupId": "Ca56f94637c6e5c8ab23d4b4c3b7a2e91", "userId": USER});
    let mut in_room = text_event(USER, &ulid(2), "in a room");
    in_room["source"] =
        json!({"type": "room", "roomId": "Ra8dbf4673c4c812cd491258042226c99", "userId": USER});
    let answer = app
        .post_signed(&callback(DESTINATION, vec![in_group, in_room]))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let keys: Vec<String> = app
        .stored_events()
        .iter()
        .map(|e| e.conversation.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "demo/group/Ca56f94637c6e5c8ab23d4b4c3b7a2e91",
            "demo/room/Ra8dbf4673c4c812cd491258042226c99"
        ]
    );
}

#[actix_web::test]
async fn durability_os_also_stores_and_answers() {
    let app = spawn_app_with(|s| s.storage.durability = linedesk::settings::Durability::Os).await;
    let answer = app
        .post_signed(&callback(
            DESTINATION,
            vec![text_event(USER, &ulid(1), "fast")],
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(app.stored_events().len(), 1);
    let metrics = app.get("/metrics").await.text;
    assert_eq!(metric(&metrics, "linedesk_journal_flushes_total"), 0);
    assert_eq!(
        metric(&metrics, "linedesk_journal_event_log_syncs_total"),
        0
    );
}

#[actix_web::test]
async fn health_and_unknown_routes_answer_json() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    let missing = app.get("/nope").await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
    let wrong_method = app.get("/line/webhook/demo").await;
    assert_error(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    for path in ["/line/webhook", "/line/webhook/", "/line/webhook/demo/more"] {
        assert_error(&app.get(path).await, StatusCode::NOT_FOUND, "not_found");
    }
}

#[actix_web::test]
async fn metrics_show_which_conversations_a_crash_would_resume_until_snapshots_cover_them() {
    let app = spawn_app().await;
    let events = (0..3)
        .map(|i| text_event(USER, &ulid(i), &format!("hello {i}")))
        .collect();
    assert_eq!(
        app.post_signed(&callback(DESTINATION, events)).await.status,
        StatusCode::OK
    );
    // The first message opens a conversation, a state change that is snapshotted at once; the
    // journal stores that it is covered when it next writes or falls idle.
    crate::helpers::eventually(
        "the conversation's events covered and the checkpoint stored",
        || async {
            let metrics = app.get("/metrics").await.text;
            metric(&metrics, "linedesk_journal_uncovered_conversations ") == 0
                && metric(&metrics, "linedesk_journal_checkpoint_lag_events ") == 0
        },
    )
    .await;
    let metrics = app.get("/metrics").await.text;
    assert_eq!(
        metric(&metrics, "linedesk_journal_long_uncovered_conversations "),
        0
    );
    assert_eq!(app.journal.last_seq(), 3);
}
