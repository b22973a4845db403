//! Conversation actors through the real server: what the webhook stores becomes conversations,
//! seen through the operators' API, across passivation, faults, timers and restarts.

use awc::http::StatusCode;
use linedesk_actors::conversation::{
    AgentAction, ApplyAgentAction, AskConversation, GetRegistryStats, Question,
};
use linedesk_actors::domain::{AgentId, ConversationKey};
use serde_json::{json, Value};

use crate::helpers::{
    eventually, eventually_while_progressing, spawn_app, spawn_app_with, TestApp, DESTINATION,
};
use crate::line_payloads::{callback, text_event};

fn user(n: usize) -> String {
    format!("U{n:032x}")
}

fn event_id(n: usize) -> String {
    format!("01J3{n:022}")
}

fn conversation_id(user: &str, number: u32) -> String {
    format!("demo.user.{user}.{number}")
}

fn previews(doc: &Value) -> Vec<String> {
    doc["transcript"]
        .as_array()
        .unwrap_or_else(|| panic!("a transcript in {doc}"))
        .iter()
        .map(|e| e["preview"].as_str().unwrap().to_owned())
        .collect()
}

async fn post(app: &TestApp, events: Vec<Value>) {
    let answer = app.post_signed(&callback(DESTINATION, events)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

async fn detail(app: &TestApp, id: &str) -> Value {
    let answer = app.admin_get(&format!("/api/conversations/{id}")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body
}

fn with_source(mut event: Value, source: Value) -> Value {
    event["source"] = source;
    event
}

fn event(n: usize, user: &str, kind: &str, body: Value) -> Value {
    let mut e = json!({
        "type": kind,
        "timestamp": 1_700_000_000_000i64 + n as i64,
        "mode": "active",
        "webhookEventId": event_id(n),
        "deliveryContext": {"isRedelivery": false},
        "source": {"type": "user", "userId": user},
    });
    for (k, v) in body.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

#[actix_web::test]
async fn a_customer_message_opens_a_queued_conversation_with_its_transcript() {
    let app = spawn_app().await;
    let u = user(1);
    post(
        &app,
        vec![text_event(&u, &event_id(1), "こんにちは、注文について")],
    )
    .await;

    // Right after the 200, the conversation shows the message: the read catches up first.
    let doc = detail(&app, &conversation_id(&u, 1)).await;
    assert_eq!(doc["status"], "queued");
    assert_eq!(previews(&doc), ["こんにちは、注文について"]);
    let path: Vec<&str> = doc["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert_eq!(path, ["open", "queued"]);
    assert_eq!(doc["transitions"][1]["cause"]["type"], "no_bot");
    assert!(doc["transitions"][1]["at_ms"].as_i64().unwrap() > 0);
    assert_eq!(doc["contact"]["blocked"], false);
}

#[actix_web::test]
async fn the_api_needs_the_admin_token() {
    let app = spawn_app().await;
    for auth in [None, Some("Bearer wrong"), Some("linedesk-dev-admin-token")] {
        let mut request = awc::Client::default().get(format!("{}/api/conversations", app.address));
        if let Some(auth) = auth {
            request = request.insert_header(("authorization", auth));
        }
        let mut response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
    }
    let off = spawn_app_with(|s| s.admin.token = String::new().into()).await;
    let answer = off.admin_get("/api/conversations").await;
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "an empty token turns the API off"
    );
}

#[actix_web::test]
async fn bad_requests_to_the_api_get_clear_errors() {
    let app = spawn_app().await;
    for (path, status, code) in [
        (
            "/api/conversations/not-an-id",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/conversations/demo.user.Unobody.1",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/api/conversations?status=sleeping",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/conversations?limit=0",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/conversations?limit=many",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/conversations?account=Bad%20Id",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/conversations?after=nope",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/conversations?colour=red",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let answer = app.admin_get(path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.text);
        assert_eq!(answer.body["code"], code, "{path}");
    }
}

#[actix_web::test]
async fn the_list_filters_by_account_user_and_status_and_pages() {
    let app = spawn_app().await;
    let events: Vec<Value> = (0..5)
        .map(|i| text_event(&user(i), &event_id(i), "hi"))
        .collect();
    post(&app, events).await;
    for i in 0..5 {
        detail(&app, &conversation_id(&user(i), 1)).await;
    }

    let all = app.admin_get("/api/conversations?account=demo").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(all.body["items"].as_array().unwrap().len(), 5);
    assert!(all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "queued"));

    let one = app
        .admin_get(&format!("/api/conversations?account=demo&user={}", user(3)))
        .await;
    let items = one.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], conversation_id(&user(3), 1));
    assert_eq!(items[0]["messages"], 1);

    let active = app.admin_get("/api/conversations?status=active").await;
    assert!(active.body["items"].as_array().unwrap().is_empty());

    let mut seen = Vec::new();
    let mut path = "/api/conversations?limit=2".to_owned();
    for _ in 0..10 {
        let page = app.admin_get(&path).await;
        seen.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].clone()),
        );
        match page.body["next"].as_str() {
            Some(next) => path = format!("/api/conversations?limit=2&after={next}"),
            None => break,
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 5, "every conversation once across pages");
}

#[actix_web::test]
async fn every_message_type_reads_well_for_agents_and_unsend_hides_the_message() {
    let app = spawn_app().await;
    let u = user(7);
    let events = vec![
        text_event(&u, &event_id(1), "my card is 4111"),
        event(
            2,
            &u,
            "message",
            json!({"message": {"type": "image", "id": "m2", "quoteToken": "q", "contentProvider": {"type": "line"}}}),
        ),
        event(
            3,
            &u,
            "message",
            json!({"message": {"type": "sticker", "id": "m3", "quoteToken": "q", "packageId": "446", "stickerId": "1988", "stickerResourceType": "STATIC", "keywords": ["Thanks"]}}),
        ),
        event(
            4,
            &u,
            "message",
            json!({"message": {"type": "location", "id": "m4", "title": "Shibuya", "latitude": 35.658, "longitude": 139.7016}}),
        ),
        event(
            5,
            &u,
            "message",
            json!({"message": {"type": "file", "id": "m5", "fileName": "receipt.pdf", "fileSize": 2048}}),
        ),
        event(
            6,
            &u,
            "message",
            json!({"message": {"type": "hologram", "id": "m6"}}),
        ),
        event(
            7,
            &u,
            "postback",
            json!({"postback": {"data": "order=42"}, "replyToken": "r"}),
        ),
    ];
    let first_message_id = events[0]["message"]["id"].as_str().unwrap().to_owned();
    post(&app, events).await;
    post(
        &app,
        vec![event(
            8,
            &u,
            "unsend",
            json!({"unsend": {"messageId": first_message_id}}),
        )],
    )
    .await;

    let doc = detail(&app, &conversation_id(&u, 1)).await;
    assert_eq!(
        previews(&doc),
        [
            "[message unsent by the customer]",
            "[image]",
            "[sticker: Thanks]",
            "[location: Shibuya (35.65800, 139.70160)]",
            "[file: receipt.pdf, 2048 bytes]",
            "[hologram message: not shown here, open LINE to see it]",
            "[postback: order=42]",
        ]
    );
    assert_eq!(doc["transcript"][0]["unsent"], true);
    assert!(
        !doc.to_string().contains("4111"),
        "unsent text is gone: {doc}"
    );
}

#[actix_web::test]
async fn unfollow_marks_the_contact_blocked_and_follow_unblocks() {
    let app = spawn_app().await;
    let u = user(8);
    post(&app, vec![text_event(&u, &event_id(1), "hello")]).await;
    post(&app, vec![event(2, &u, "unfollow", json!({}))]).await;
    let doc = detail(&app, &conversation_id(&u, 1)).await;
    assert_eq!(doc["contact"]["blocked"], true);
    post(
        &app,
        vec![event(
            3,
            &u,
            "follow",
            json!({"follow": {"isUnblocked": true}, "replyToken": "r"}),
        )],
    )
    .await;
    let doc = detail(&app, &conversation_id(&u, 1)).await;
    assert_eq!(doc["contact"]["blocked"], false);
    assert_eq!(
        previews(&doc)[1],
        "customer blocked the account; nothing more can be sent"
    );
}

#[actix_web::test]
async fn a_group_is_one_conversation_that_keeps_each_senders_id() {
    let app = spawn_app().await;
    let group = json!({"type": "group", "groupId": "Cgroup0000000000000000000000000001", "userId": user(1)});
    let mut second = text_event(&user(2), &event_id(2), "me too");
    second["source"]["type"] = json!("group");
    second["source"]["groupId"] = json!("Cgroup0000000000000000000000000001");
    post(
        &app,
        vec![
            with_source(text_event(&user(1), &event_id(1), "question"), group),
            second,
        ],
    )
    .await;
    let doc = detail(&app, "demo.group.Cgroup0000000000000000000000000001.1").await;
    let senders: Vec<&str> = doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["author"]["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(senders, [user(1), user(2)]);
}

#[actix_web::test]
async fn concurrent_webhooks_for_one_user_land_in_journal_order() {
    let app = spawn_app().await;
    let u = user(9);
    let requests = (0..20).map(|i| {
        let body = callback(
            DESTINATION,
            vec![text_event(&u, &event_id(i), &format!("m{i}"))],
        );
        let app = &app;
        async move { app.post_signed(&body).await.status }
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK);
    }
    let journal_order: Vec<String> = crate::helpers::stored_events(&app.journal)
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(e.event.get()).unwrap();
            v["message"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    let doc = detail(&app, &conversation_id(&u, 1)).await;
    assert_eq!(previews(&doc), journal_order);
    assert_eq!(journal_order.len(), 20);
}

#[actix_web::test]
async fn an_injected_fault_restarts_one_conversation_while_others_keep_answering() {
    let app = spawn_app().await;
    let (a, b) = (user(10), user(11));
    post(
        &app,
        vec![
            text_event(&a, &event_id(1), "a1"),
            text_event(&b, &event_id(2), "b1"),
        ],
    )
    .await;
    detail(&app, &conversation_id(&a, 1)).await;

    let key_a = ConversationKey::parse(&format!("demo/user/{a}")).unwrap();
    app.registry
        .send(AskConversation {
            key: key_a,
            question: Question::InjectFault,
        })
        .await
        .unwrap()
        .unwrap();
    post(
        &app,
        vec![
            text_event(&a, &event_id(3), "a2"),
            text_event(&b, &event_id(4), "b2"),
        ],
    )
    .await;

    let doc_b = detail(&app, &conversation_id(&b, 1)).await;
    assert_eq!(previews(&doc_b), ["b1", "b2"]);
    assert_eq!(doc_b["actor_restarts"], 0);
    eventually(
        "conversation a restarted from its snapshot and journal",
        || async {
            let answer = app
                .admin_get(&format!("/api/conversations/{}", conversation_id(&a, 1)))
                .await;
            answer.status == StatusCode::OK
                && answer.body["actor_restarts"] == 1
                && previews(&answer.body) == ["a1", "a2"]
        },
    )
    .await;
}

#[actix_web::test]
async fn ten_thousand_conversations_passivate_and_come_back_on_their_next_event() {
    let app = spawn_app_with(|s| {
        s.conversation.idle_passivate_ms = 300;
        s.conversation.snapshot_every = 1_000;
    })
    .await;
    const USERS: usize = 10_000;
    for batch in 0..USERS / 100 {
        let events = (batch * 100..batch * 100 + 100)
            .map(|i| text_event(&user(i), &event_id(i), "first"))
            .collect();
        post(&app, events).await;
    }
    // 10,000 actors' starts, saves and stops: on a loaded machine this takes minutes, so the
    // waits give up on a stall, not on a clock.
    eventually_while_progressing("all 10,000 started", || async {
        let stats = app.registry.send(GetRegistryStats).await.unwrap();
        (stats.started >= USERS as u64, stats.started)
    })
    .await;
    eventually_while_progressing("all passivated", || async {
        let stats = app.registry.send(GetRegistryStats).await.unwrap();
        (stats.live == 0, stats.passivated)
    })
    .await;

    for batch in 0..USERS / 100 {
        let events = (batch * 100..batch * 100 + 100)
            .map(|i| text_event(&user(i), &event_id(USERS + i), "second"))
            .collect();
        post(&app, events).await;
    }
    for i in [0, 4_999, USERS - 1] {
        let doc = detail(&app, &conversation_id(&user(i), 1)).await;
        assert_eq!(previews(&doc), ["first", "second"], "user {i}");
    }
    eventually_while_progressing("every conversation came back", || async {
        let stats = app.registry.send(GetRegistryStats).await.unwrap();
        (stats.started >= 2 * USERS as u64, stats.started)
    })
    .await;
}

#[actix_web::test]
async fn the_queued_timer_closes_an_unanswered_conversation_and_a_new_message_opens_the_next() {
    let app = spawn_app_with(|s| {
        s.conversation.queued_timeout_ms = 300;
        s.conversation.timer_resolution_ms = 50;
    })
    .await;
    let u = user(12);
    post(&app, vec![text_event(&u, &event_id(1), "anyone there?")]).await;
    let id = conversation_id(&u, 1);
    eventually("closed by the queued timer", || async {
        app.admin_get(&format!("/api/conversations/{id}"))
            .await
            .body["status"]
            == "closed"
    })
    .await;
    let doc = detail(&app, &id).await;
    assert_eq!(
        doc["transitions"].as_array().unwrap().last().unwrap()["cause"]["type"],
        "timeout"
    );

    post(&app, vec![text_event(&u, &event_id(2), "hello again")]).await;
    let next = detail(&app, &conversation_id(&u, 2)).await;
    assert_eq!(next["status"], "queued");
    assert_eq!(next["previous"], json!([id]));
    assert_eq!(previews(&next), ["hello again"]);
    let closed = app.admin_get("/api/conversations?status=closed").await;
    assert_eq!(closed.body["items"][0]["id"], id);
}

fn journal_ids(app: &TestApp, user: &str) -> Vec<String> {
    let events = app.stored_events();
    let mine: Vec<_> = events
        .into_iter()
        .filter(|e| e.conversation.source.chat_id() == Some(user))
        .collect();
    crate::helpers::stored_ids(&mine)
}

#[actix_web::test]
async fn covered_events_leave_the_journal_after_retention_and_transcript_and_redelivery_check_stay()
{
    // 3 s: long enough that the first look, right after the post, still finds the events.
    for retention_secs in [3, 0] {
        let keep = retention_secs == 0;
        let app = spawn_app_with(|s| {
            s.conversation.queued_timeout_ms = 300;
            s.conversation.timer_resolution_ms = 50;
            s.storage.journal_retention_secs = retention_secs;
        })
        .await;
        let u = user(13);
        let first = [event_id(1), event_id(2)];
        let anyone = text_event(&u, &first[1], "anyone?");
        post(
            &app,
            vec![text_event(&u, &first[0], "hello"), anyone.clone()],
        )
        .await;
        let id = conversation_id(&u, 1);
        assert_eq!(journal_ids(&app, &u), first, "stored");
        eventually("closed by the queued timer", || async {
            detail(&app, &id).await["status"] == "closed"
        })
        .await;
        if keep {
            assert_eq!(journal_ids(&app, &u), first, "kept after close");
        } else {
            eventually(
                "the covered events left the journal after retention",
                || async { journal_ids(&app, &u).is_empty() },
            )
            .await;
        }
        assert_eq!(previews(&detail(&app, &id).await), ["hello", "anyone?"]);

        // A redelivery is still recognised: it opens no second conversation.
        let mut again = anyone;
        again["deliveryContext"]["isRedelivery"] = json!(true);
        post(&app, vec![again]).await;
        post(&app, vec![text_event(&u, &event_id(3), "back")]).await;
        let next = detail(&app, &conversation_id(&u, 2)).await;
        assert_eq!(previews(&next), ["back"], "keep = {keep}");
        let ids = journal_ids(&app, &u);
        if keep {
            assert_eq!(ids, [&first[..], &[event_id(3)]].concat());
        } else {
            // The new event may already have left too, if it is older than the retention.
            assert!(
                !ids.contains(&first[1]),
                "the redelivery was not stored: {ids:?}"
            );
        }
    }
}

#[actix_web::test]
async fn active_waiting_and_wrap_up_timers_move_their_states() {
    let app = spawn_app_with(|s| {
        s.conversation.active_timeout_ms = 300;
        s.conversation.waiting_timeout_ms = 300;
        s.conversation.wrap_up_ms = 100;
        s.conversation.wrap_up_timeout_ms = 400;
        s.conversation.timer_resolution_ms = 50;
    })
    .await;
    let alice = AgentId::parse("alice").unwrap();
    let act = |u: &str, action| AskConversation {
        key: ConversationKey::parse(&format!("demo/user/{u}")).unwrap(),
        question: Question::Agent(ApplyAgentAction {
            agent: alice.clone(),
            action,
        }),
    };
    let (active, waiting, wrap_up) = (user(20), user(21), user(22));
    post(
        &app,
        vec![
            text_event(&active, &event_id(1), "a"),
            text_event(&waiting, &event_id(2), "w"),
            text_event(&wrap_up, &event_id(3), "e"),
        ],
    )
    .await;
    for u in [&active, &waiting, &wrap_up] {
        app.registry
            .send(act(u, AgentAction::Assign))
            .await
            .unwrap()
            .unwrap();
    }
    app.registry
        .send(act(&waiting, AgentAction::SetWaiting))
        .await
        .unwrap()
        .unwrap();
    app.registry
        .send(act(&wrap_up, AgentAction::End))
        .await
        .unwrap()
        .unwrap();

    for (u, state) in [
        (&active, "active"),
        (&waiting, "waiting"),
        (&wrap_up, "wrap_up"),
    ] {
        let id = conversation_id(u, 1);
        eventually(&format!("{state} closed by its timer"), || async {
            app.admin_get(&format!("/api/conversations/{id}"))
                .await
                .body["status"]
                == "closed"
        })
        .await;
        let doc = detail(&app, &id).await;
        let path: Vec<&str> = doc["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["to"].as_str().unwrap())
            .collect();
        assert_eq!(path.last(), Some(&"closed"));
        assert!(path.contains(&state), "{path:?}");
        assert_eq!(
            doc["transitions"].as_array().unwrap().last().unwrap()["cause"]["type"],
            "timeout"
        );
    }
}
