//! Agents over a real websocket: sign-in, offers, accept, reply, the conversation states, and
//! every kind of bad frame.

use awc::http::StatusCode;
use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::helpers::{
    routing_once_classified, spawn_app, spawn_app_with, TestApp, DESTINATION, PATIENCE,
};
use crate::line_payloads::{callback, text_event};

type Socket = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

/// A websocket agent client.
pub struct AgentClient {
    socket: Socket,
    /// Frames read while looking for another type, in order.
    pub seen: Vec<Value>,
}

impl AgentClient {
    pub async fn connect(app: &TestApp, token: &str) -> Self {
        Self::connect_to(&app.address, token).await
    }

    pub async fn connect_to(address: &str, token: &str) -> Self {
        let (response, socket) = awc::Client::builder()
            .timeout(PATIENCE)
            .finish()
            .ws(format!("{address}/agent/ws"))
            .bearer_auth(token)
            .connect()
            .await
            .expect("websocket connects");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        Self {
            socket,
            seen: Vec::new(),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.socket
            .send(ws::Message::Text(frame.to_string().into()))
            .await
            .expect("frame sent");
    }

    /// The next text frame, answering pings on the way.
    pub async fn next(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("valid frame");
            match frame {
                ws::Frame::Text(bytes) => {
                    let frame: Value = serde_json::from_slice(&bytes).expect("JSON frame");
                    if std::env::var_os("TEST_LOG").is_some() {
                        eprintln!("agent client got {frame}");
                    }
                    return frame;
                }
                ws::Frame::Ping(bytes) => {
                    let _ = self.socket.send(ws::Message::Pong(bytes)).await;
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next frame of type `kind`; frames of other types are kept in `seen`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        self.expect_matching(|f| f["type"] == kind).await
    }

    /// A frame `wanted` accepts that already arrived (while waiting for another), taken out of
    /// `seen`.
    pub fn take_seen(&mut self, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        let at = self.seen.iter().position(wanted)?;
        Some(self.seen.remove(at))
    }

    /// The next frame `wanted` accepts; the others are kept in `seen`. Gives up after
    /// `PATIENCE` in all (other frames and pings arriving meanwhile do not extend it).
    pub async fn expect_matching(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let search = async {
            loop {
                let frame = self.next().await;
                if wanted(&frame) {
                    return frame;
                }
                self.seen.push(frame);
            }
        };
        match tokio::time::timeout(PATIENCE, search).await {
            Ok(frame) => frame,
            Err(_) => panic!(
                "the awaited frame did not come in time; frames seen meanwhile: {:?}",
                self.seen
            ),
        }
    }
}

/// Every event of these tests gets its own `webhookEventId`.
static NEXT_EVENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Takes the agent's next offer: accepts it and waits for `assigned`; returns its id.
pub async fn accept_next_offer(agent: &mut AgentClient) -> String {
    let id = agent.expect("offer").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    agent
        .send(json!({"type": "accept", "conversation_id": id}))
        .await;
    agent.expect("assigned").await;
    id
}

async fn customer_writes(app: &TestApp, user: &str, _n: usize, text: &str) {
    let n = NEXT_EVENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let event = text_event(user, &format!("01J5{n:022}"), text);
    let answer = app.post_signed(&callback(DESTINATION, vec![event])).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

fn user(n: usize) -> String {
    format!("U{n:032x}")
}

/// One agent, one queue, no rules: the simplest routing to test against.
fn solo(s: &mut linedesk::settings::Settings) {
    s.rules.clear();
    s.agents.retain(|a| a.id.as_str() == "alice");
}

#[actix_web::test]
async fn a_bad_token_is_refused_with_401_before_the_upgrade() {
    let app = spawn_app().await;
    for token in [None, Some("nope")] {
        let mut request = awc::Client::default().ws(format!("{}/agent/ws", app.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match request.connect().await {
            Err(awc::error::WsClientError::InvalidResponseStatus(status)) => {
                assert_eq!(status, StatusCode::UNAUTHORIZED)
            }
            other => panic!("expected 401, got {:?}", other.map(|(r, _)| r.status())),
        }
    }
    // Browsers can't set headers: the token may come in the query.
    let (response, _socket) = awc::Client::default()
        .ws(format!("{}/agent/ws?token=dev-alice-token", app.address))
        .connect()
        .await
        .expect("query token accepted");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
}

#[actix_web::test]
async fn hello_names_the_agent_and_ping_gets_pong() {
    let app = spawn_app().await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    let hello = alice.expect("hello").await;
    assert_eq!(hello["agent"], json!({"id": "alice", "name": "Alice"}));
    assert_eq!(hello["presence"], "available");
    assert_eq!(hello["conversations"], json!([]));
    alice.send(json!({"type": "ping"})).await;
    alice.expect("pong").await;
}

#[actix_web::test]
async fn a_customer_message_reaches_the_agent_as_an_offer_then_accept_reply_ack_and_transcript() {
    let app = spawn_app_with(solo).await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    let u = user(1);
    customer_writes(&app, &u, 1, "注文した商品が届きません").await;

    let offer = alice.expect("offer").await;
    let id = format!("demo.user.{u}.1");
    assert_eq!(offer["conversation_id"], id);
    assert_eq!(offer["queue"], "general");
    assert_eq!(
        offer["recent_messages"][0]["preview"],
        "注文した商品が届きません"
    );
    assert!(offer["expires_at_ms"].as_i64().unwrap() > 0);

    alice
        .send(json!({"type": "accept", "conversation_id": id}))
        .await;
    alice.expect("assigned").await;
    alice
        .send(json!({"type": "send", "conversation_id": id, "client_msg_id": "c-1", "text": "お調べします"}))
        .await;
    let ack = alice.expect("ack").await;
    assert_eq!(ack["client_msg_id"], "c-1");

    // The customer writes again: the agent sees it.
    customer_writes(&app, &u, 2, "ありがとう").await;
    let message = alice
        .expect_matching(|f| f["type"] == "message" && f["from"] == "customer")
        .await;
    assert_eq!(message["from"], "customer");
    assert_eq!(message["preview"], "ありがとう");

    let doc = app
        .admin_get(&format!("/api/conversations/{id}"))
        .await
        .body;
    assert_eq!(doc["status"], "active");
    assert_eq!(doc["agent"], "alice");
    let transcript: Vec<(String, String)> = doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["author"]["type"].as_str().unwrap().to_owned(),
                e["preview"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        transcript,
        [
            ("customer".into(), "注文した商品が届きません".into()),
            ("agent".into(), "お調べします".into()),
            ("customer".into(), "ありがとう".into()),
        ]
    );

    // A retried send (same client_msg_id) is acknowledged and stored once.
    alice
        .send(json!({"type": "send", "conversation_id": id, "client_msg_id": "c-1", "text": "お調べします"}))
        .await;
    alice.expect("ack").await;
    let doc = app
        .admin_get(&format!("/api/conversations/{id}"))
        .await
        .body;
    assert_eq!(doc["transcript"].as_array().unwrap().len(), 3);
}

#[actix_web::test]
async fn set_waiting_end_and_wrap_up_done_move_the_conversation_and_tell_the_agent() {
    let app = spawn_app_with(solo).await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    let u = user(2);
    customer_writes(&app, &u, 1, "hello").await;
    let id = accept_next_offer(&mut alice).await;

    for (frame, status) in [
        ("set_waiting", "waiting"),
        ("end", "wrap_up"),
        ("wrap_up_done", "closed"),
    ] {
        alice
            .send(json!({"type": frame, "conversation_id": id}))
            .await;
        let changed = alice.expect("conversation").await;
        assert_eq!(changed["status"], status, "after {frame}");
    }
    let doc = app
        .admin_get(&format!("/api/conversations/{id}"))
        .await
        .body;
    assert_eq!(doc["status"], "closed");
}

#[actix_web::test]
async fn a_rejected_offer_goes_to_the_next_agent() {
    let app = spawn_app_with(|s| s.rules.clear()).await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    let mut bob = AgentClient::connect(&app, "dev-bob-token").await;
    bob.expect("hello").await;
    customer_writes(&app, &user(3), 1, "hi").await;

    // Highest capacity: alice (3) before bob (2).
    let offer = alice.expect("offer").await;
    let id = offer["conversation_id"].as_str().unwrap().to_owned();
    alice
        .send(json!({"type": "reject", "conversation_id": id}))
        .await;
    alice.expect("offer_revoked").await;
    let offer_to_bob = bob.expect("offer").await;
    assert_eq!(offer_to_bob["conversation_id"], id);
    bob.send(json!({"type": "accept", "conversation_id": id}))
        .await;
    bob.expect("assigned").await;
    // Alice can't take what was offered to bob.
    alice
        .send(json!({"type": "accept", "conversation_id": id}))
        .await;
    let error = alice.expect("error").await;
    assert_eq!(error["code"], "not_offered");
    assert_eq!(error["ref"], id);
}

#[actix_web::test]
async fn an_offer_that_times_out_goes_to_the_next_agent() {
    let app = spawn_app_with(|s| {
        s.rules.clear();
        for q in &mut s.queues {
            q.offer_timeout_ms = 200;
        }
    })
    .await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    let mut bob = AgentClient::connect(&app, "dev-bob-token").await;
    bob.expect("hello").await;
    customer_writes(&app, &user(4), 1, "hi").await;
    let id = alice.expect("offer").await["conversation_id"].clone();
    let revoked = alice.expect("offer_revoked").await;
    assert_eq!(revoked["reason"], "offer expired");
    assert_eq!(bob.expect("offer").await["conversation_id"], id);
}

#[actix_web::test]
async fn every_bad_frame_gets_an_error_frame_and_the_connection_stays_open() {
    let app = spawn_app_with(|s| s.rules.clear()).await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    let cases: Vec<(Value, &str)> = vec![
        (json!("not an object"), "bad_frame"),
        (json!({"no": "type"}), "bad_frame"),
        (json!({"type": "dance"}), "unknown_type"),
        (json!({"type": "accept"}), "bad_frame"),
        (
            json!({"type": "accept", "conversation_id": "garbage"}),
            "bad_frame",
        ),
        (
            json!({"type": "accept", "conversation_id": "demo.user.Unobody.1"}),
            "not_offered",
        ),
        (json!({"type": "presence", "status": "sleepy"}), "bad_frame"),
        (
            json!({"type": "send", "conversation_id": "demo.user.Unobody.1", "client_msg_id": "x"}),
            "bad_frame",
        ),
        (
            json!({"type": "send", "conversation_id": "demo.user.Unobody.1", "client_msg_id": "x", "text": "hi"}),
            "invalid_state",
        ),
        (
            json!({"type": "end", "conversation_id": "demo.user.Unobody.1"}),
            "invalid_state",
        ),
        (
            json!({"type": "transfer", "conversation_id": "demo.user.Unobody.1"}),
            "bad_frame",
        ),
        (
            json!({"type": "transfer", "conversation_id": "demo.user.Unobody.1", "queue": "billing"}),
            "invalid_state",
        ),
    ];
    for (frame, code) in cases {
        let text = match &frame {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        alice
            .socket
            .send(ws::Message::Text(text.into()))
            .await
            .unwrap();
        let error = alice.expect("error").await;
        assert_eq!(error["code"], code, "for {frame}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Still open and answering.
    alice.send(json!({"type": "ping"})).await;
    alice.expect("pong").await;

    // Acting on someone else's conversation.
    let u = user(5);
    customer_writes(&app, &u, 1, "hi").await;
    let id = accept_next_offer(&mut alice).await;
    let mut bob = spawn_bob(&app).await;
    bob.send(
        json!({"type": "send", "conversation_id": id, "client_msg_id": "b1", "text": "mine?"}),
    )
    .await;
    let error = bob.expect("error").await;
    assert_eq!(error["code"], "not_yours");
}

async fn spawn_bob(app: &TestApp) -> AgentClient {
    let mut bob = AgentClient::connect(app, "dev-bob-token").await;
    bob.expect("hello").await;
    bob
}

#[actix_web::test]
async fn two_connections_of_one_agent_both_get_the_offer_and_the_first_accept_wins() {
    let app = spawn_app_with(solo).await;
    let mut tab1 = AgentClient::connect(&app, "dev-alice-token").await;
    tab1.expect("hello").await;
    let mut tab2 = AgentClient::connect(&app, "dev-alice-token").await;
    tab2.expect("hello").await;
    customer_writes(&app, &user(6), 1, "hi").await;
    let id = tab1.expect("offer").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(tab2.expect("offer").await["conversation_id"], id);
    tab1.send(json!({"type": "accept", "conversation_id": id}))
        .await;
    tab1.expect("assigned").await;
    tab2.expect("assigned").await;
    tab2.send(json!({"type": "accept", "conversation_id": id}))
        .await;
    assert_eq!(tab2.expect("error").await["code"], "not_offered");
    // A reply from one tab shows in the other.
    tab1.send(json!({"type": "send", "conversation_id": id, "client_msg_id": "t1", "text": "hello from tab 1"})).await;
    tab1.expect("ack").await;
    let echoed = tab2.expect("message").await;
    assert_eq!(echoed["from"], "agent");
    assert_eq!(echoed["preview"], "hello from tab 1");
    // Not to the tab that sent it, which has its `ack`: a presence change fans out to both tabs
    // after the echo did, so it would find the echo in tab 1 first.
    tab1.send(json!({"type": "presence", "status": "away"}))
        .await;
    tab1.expect_matching(|f| f["type"] == "presence" && f["status"] == "away")
        .await;
    tab2.expect_matching(|f| f["type"] == "presence" && f["status"] == "away")
        .await;
    assert!(
        tab1.take_seen(|f| f["type"] == "message").is_none(),
        "{:?}",
        tab1.seen
    );
}

#[actix_web::test]
async fn capacity_full_makes_the_agent_busy_and_freed_capacity_serves_the_oldest_waiting_at_once() {
    let app = spawn_app_with(|s| {
        solo(s);
        s.agents[0].capacity = 1;
    })
    .await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    customer_writes(&app, &user(7), 1, "first").await;
    let first = accept_next_offer(&mut alice).await;
    alice
        .expect_matching(|f| f["type"] == "presence" && f["status"] == "busy")
        .await;
    customer_writes(&app, &user(8), 1, "second").await;
    customer_writes(&app, &user(9), 1, "third").await;
    // Each conversation routes itself once stored: only once both reached the router can the
    // older be served first.
    for u in [user(8), user(9)] {
        routing_once_classified(&app.address, &format!("demo.user.{u}.1")).await;
    }
    // Nothing offered while full; ending and finishing the first frees the capacity.
    alice
        .send(json!({"type": "end", "conversation_id": first}))
        .await;
    alice.expect("conversation").await;
    alice
        .send(json!({"type": "wrap_up_done", "conversation_id": first}))
        .await;
    let next = alice.expect("offer").await;
    assert_eq!(
        next["conversation_id"],
        format!("demo.user.{}.1", user(8)),
        "the oldest waiting"
    );
    assert!(
        alice.seen.iter().all(|f| f["type"] != "offer"),
        "no offer while at capacity: {:?}",
        alice.seen
    );
}

#[actix_web::test]
async fn reconnecting_within_the_grace_gets_the_conversations_back_in_hello() {
    let app = spawn_app_with(solo).await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    customer_writes(&app, &user(10), 1, "hi").await;
    let id = accept_next_offer(&mut alice).await;
    drop(alice);
    let mut again = AgentClient::connect(&app, "dev-alice-token").await;
    let hello = again.expect("hello").await;
    assert_eq!(hello["conversations"][0]["conversation_id"], id);
    let doc = app
        .admin_get(&format!("/api/conversations/{id}"))
        .await
        .body;
    assert_eq!(doc["status"], "active");
}

#[actix_web::test]
async fn past_the_grace_the_conversations_go_back_to_the_queue() {
    let app = spawn_app_with(|s| {
        s.rules.clear();
        s.routing.reconnect_grace_ms = 200;
    })
    .await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    customer_writes(&app, &user(11), 1, "hi").await;
    let id = accept_next_offer(&mut alice).await;
    drop(alice);

    let mut bob = spawn_bob(&app).await;
    let offer = bob.expect("offer").await;
    assert_eq!(offer["conversation_id"], id);
    let doc = app
        .admin_get(&format!("/api/conversations/{id}"))
        .await
        .body;
    assert_eq!(doc["status"], "queued");
    let requeued = doc["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(requeued["cause"]["type"], "requeued");
}

#[actix_web::test]
async fn an_agent_who_misses_offers_in_a_row_is_set_away() {
    let app = spawn_app_with(|s| {
        solo(s);
        s.routing.missed_offers_to_away = 2;
    })
    .await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    customer_writes(&app, &user(12), 1, "one").await;
    customer_writes(&app, &user(13), 1, "two").await;
    for _ in 0..2 {
        let id = alice.expect("offer").await["conversation_id"].clone();
        alice
            .send(json!({"type": "reject", "conversation_id": id}))
            .await;
    }
    alice
        .expect_matching(|f| f["type"] == "presence" && f["status"] == "away")
        .await;
    // Available again, she gets new conversations (not the two she declined).
    alice
        .send(json!({"type": "presence", "status": "available"}))
        .await;
    customer_writes(&app, &user(14), 1, "three").await;
    let offer = alice.expect("offer").await;
    assert_eq!(
        offer["conversation_id"],
        format!("demo.user.{}.1", user(14))
    );
}

async fn signed_post(address: &str, user: &str, text: &str) {
    let n = NEXT_EVENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let event = text_event(user, &format!("01J6{n:022}"), text);
    let status = crate::helpers::post_signed_to(address, vec![event]).await;
    assert_eq!(status, StatusCode::OK);
}

/// The server on data folder `folder`, configured for alice alone: capacity 1, no rules.
fn start_alice_alone(folder: &std::path::Path) -> crate::helpers::ServerProcess {
    let overlay = folder.join("linedesk.toml");
    std::fs::write(
        &overlay,
        "rules = []\n[[agents]]\nid = \"alice\"\nname = \"Alice\"\ntoken = \"dev-alice-token\"\ncapacity = 1\nqueues = [\"general\"]\n",
    )
    .unwrap();
    let args = ["--config", overlay.to_str().unwrap()];
    crate::helpers::ServerProcess::start_with(folder, &args, &[])
}

#[actix_web::test]
async fn after_a_restart_waiting_conversations_are_offered_again_and_agents_get_theirs_back() {
    let data = tempfile::tempdir().unwrap();
    let server = start_alice_alone(data.path());
    let mut alice = AgentClient::connect_to(&server.address, "dev-alice-token").await;
    alice.expect("hello").await;
    let (a, b) = (user(30), user(31));
    signed_post(&server.address, &a, "first").await;
    let first = accept_next_offer(&mut alice).await;
    signed_post(&server.address, &b, "second, waiting").await;
    drop(alice);
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));

    let server = start_alice_alone(data.path());
    let mut alice = AgentClient::connect_to(&server.address, "dev-alice-token").await;
    let hello = alice.expect("hello").await;
    assert_eq!(hello["conversations"], json!([{"conversation_id": first}]));
    // Still at capacity: the waiting one comes as soon as the first is done.
    alice
        .send(json!({"type": "end", "conversation_id": first}))
        .await;
    alice
        .send(json!({"type": "wrap_up_done", "conversation_id": first}))
        .await;
    let offer = alice.expect("offer").await;
    assert_eq!(offer["conversation_id"], format!("demo.user.{b}.1"));
    assert!(
        alice.seen.iter().all(|f| f["type"] != "offer"),
        "{:?}",
        alice.seen
    );
    drop(alice);
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));
}

/// What agents and the customer wrote, in transcript order, as "author: preview".
async fn written(address: &str, id: &str) -> Vec<String> {
    crate::helpers::transcript_of(address, id)
        .await
        .iter()
        .filter(|e| e["author"]["type"] != "system")
        .map(|e| {
            format!(
                "{}: {}",
                e["author"]["type"].as_str().unwrap(),
                e["preview"].as_str().unwrap()
            )
        })
        .collect()
}

/// An agent's `ack` means stored: a `kill -9` right after loses none of their messages or
/// notes, and a `send` retried after the restart is stored once.
#[actix_web::test]
async fn agents_acknowledged_messages_survive_kill_9_and_a_retried_send_is_stored_once() {
    let data = tempfile::tempdir().unwrap();
    let server = start_alice_alone(data.path());
    let mut alice = AgentClient::connect_to(&server.address, "dev-alice-token").await;
    alice.expect("hello").await;
    let u = user(40);
    signed_post(&server.address, &u, "where is my order?").await;
    let id = accept_next_offer(&mut alice).await;
    let send = |c: &str, text: &str| json!({"type": "send", "conversation_id": id, "client_msg_id": c, "text": text});
    for (c, text) in [("c1", "let me check"), ("c2", "found it")] {
        alice.send(send(c, text)).await;
        assert_eq!(alice.expect("ack").await["client_msg_id"], c);
    }
    alice
        .send(json!({"type": "note", "conversation_id": id, "text": "VIP"}))
        .await;
    // Stored with the reply after it, ahead of the conversation's next snapshot.
    signed_post(&server.address, &u, "hello?").await;
    alice
        .expect_matching(|f| f["type"] == "message" && f["from"] == "customer")
        .await;
    // Handled in order: its ack follows the note's save.
    alice.send(send("c3", "it ships today")).await;
    assert_eq!(alice.expect("ack").await["client_msg_id"], "c3");
    let expected = [
        "customer: where is my order?",
        "agent: let me check",
        "agent: found it",
        "agent: VIP",
        "customer: hello?",
        "agent: it ships today",
    ];
    assert_eq!(written(&server.address, &id).await, expected);
    drop(alice);
    assert_eq!(server.signal_and_wait("KILL").code(), None);

    let server = start_alice_alone(data.path());
    assert_eq!(written(&server.address, &id).await, expected);
    let mut alice = AgentClient::connect_to(&server.address, "dev-alice-token").await;
    alice.expect("hello").await;
    alice.send(send("c2", "found it")).await;
    assert_eq!(alice.expect("ack").await["client_msg_id"], "c2");
    signed_post(&server.address, &u, "thanks!").await;
    alice
        .expect_matching(|f| f["type"] == "message" && f["from"] == "customer")
        .await;
    let mut all = expected.to_vec();
    all.push("customer: thanks!");
    assert_eq!(written(&server.address, &id).await, all);
    drop(alice);
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));

    let server = start_alice_alone(data.path());
    assert_eq!(written(&server.address, &id).await, all);
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));
}

#[actix_web::test]
async fn a_silent_connection_is_closed_within_two_heartbeats() {
    let app = spawn_app_with(|s| s.routing.heartbeat_interval_ms = 100).await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    // Read without answering pings, as a dead client would, until the server hangs up.
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match alice.socket.next().await {
                None | Some(Err(_)) | Some(Ok(ws::Frame::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closed the silent connection");
}

#[actix_web::test]
async fn fifty_agents_accepting_at_once_never_exceed_capacity_or_share_a_conversation() {
    const AGENTS: usize = 50;
    const CAPACITY: u32 = 2;
    let app = spawn_app_with(|s| {
        s.rules.clear();
        let template = s.agents[0].clone();
        s.agents = (0..AGENTS)
            .map(|i| linedesk::settings::AgentSettings {
                id: linedesk_actors::domain::AgentId::parse(format!("agent-{i}")).unwrap(),
                name: format!("Agent {i}"),
                token: format!("token-{i}").into(),
                capacity: CAPACITY,
                queues: vec!["general".into()],
                ..template.clone()
            })
            .collect();
    })
    .await;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let mut agent = AgentClient::connect(&app, &format!("token-{i}")).await;
        agent.expect("hello").await;
        agents.push(agent);
    }
    // More customers than the agents can hold: 150 for 100 places.
    for batch in 0..3 {
        let events = (0..50)
            .map(|i| {
                let n = NEXT_EVENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                text_event(
                    &user(1_000 + batch * 50 + i),
                    &format!("01J7{n:022}"),
                    "help",
                )
            })
            .collect();
        let answer = app.post_signed(&callback(DESTINATION, events)).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    // Every agent accepts every offer it sees, all at once, until it holds its capacity.
    let runs = agents.iter_mut().map(|agent| async move {
        let mut held = Vec::new();
        while held.len() < CAPACITY as usize {
            let frame = agent
                .expect_matching(|f| f["type"] == "offer" || f["type"] == "assigned")
                .await;
            let id = frame["conversation_id"].as_str().unwrap().to_owned();
            if frame["type"] == "offer" {
                agent
                    .send(json!({"type": "accept", "conversation_id": id}))
                    .await;
            } else {
                held.push(id);
            }
        }
        held
    });
    let held: Vec<Vec<String>> = futures_util::future::join_all(runs).await;
    let mut all: Vec<&String> = held.iter().flatten().collect();
    assert!(held.iter().all(|h| h.len() == CAPACITY as usize));
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        AGENTS * CAPACITY as usize,
        "no conversation assigned twice"
    );

    let active = app
        .admin_get("/api/conversations?status=active&limit=500")
        .await
        .body;
    let items = active["items"].as_array().unwrap();
    assert_eq!(items.len(), AGENTS * CAPACITY as usize);
    let mut per_agent = std::collections::HashMap::new();
    for item in items {
        *per_agent
            .entry(item["agent"].as_str().unwrap().to_owned())
            .or_insert(0u32) += 1;
    }
    assert!(per_agent.values().all(|n| *n <= CAPACITY), "{per_agent:?}");
    let queued = app
        .admin_get("/api/conversations?status=queued&limit=500")
        .await
        .body;
    assert_eq!(
        queued["items"].as_array().unwrap().len(),
        50,
        "the rest keep waiting"
    );
}

#[actix_web::test]
async fn transfer_to_a_queue_requeues_with_its_age_and_to_an_agent_offers_it_to_them() {
    let app = spawn_app_with(|s| s.rules.clear()).await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    customer_writes(&app, &user(40), 1, "I need billing").await;
    let id = accept_next_offer(&mut alice).await;

    // Unknown targets are refused and nothing changes.
    alice
        .send(json!({"type": "transfer", "conversation_id": id, "queue": "nowhere"}))
        .await;
    assert_eq!(alice.expect("error").await["code"], "bad_target");
    alice
        .send(json!({"type": "transfer", "conversation_id": id, "agent_id": "alice"}))
        .await;
    assert_eq!(alice.expect("error").await["code"], "bad_target");

    // To bob, who is connected: offered to him alone.
    let mut bob = spawn_bob(&app).await;
    alice
        .send(json!({"type": "transfer", "conversation_id": id, "agent_id": "bob"}))
        .await;
    let offer = bob.expect("offer").await;
    assert_eq!(offer["conversation_id"], id);
    bob.send(json!({"type": "accept", "conversation_id": id}))
        .await;
    bob.expect("assigned").await;
    let doc = app
        .admin_get(&format!("/api/conversations/{id}"))
        .await
        .body;
    assert_eq!(doc["agent"], "bob");

    // Bob sends it to the billing queue: alice (billing) is offered it, with its age kept.
    bob.send(json!({"type": "transfer", "conversation_id": id, "queue": "billing"}))
        .await;
    let offer = alice
        .expect_matching(|f| f["type"] == "offer" && f["conversation_id"] == id.as_str())
        .await;
    assert_eq!(offer["queue"], "billing");
    let doc = app
        .admin_get(&format!("/api/conversations/{id}"))
        .await
        .body;
    let transitions = doc["transitions"].as_array().unwrap();
    assert_eq!(transitions.last().unwrap()["cause"]["type"], "transferred");
    assert_eq!(
        transitions.last().unwrap()["cause"]["to"],
        json!({"type": "queue", "id": "billing"})
    );
}

/// Rules send "refund" messages to the billing queue needing billing ≥ 5: alice has 7, bob none.
fn billing_for_both(s: &mut linedesk::settings::Settings, skill_match: &str) {
    for agent in &mut s.agents {
        agent.queues = vec!["general".into(), "billing".into()];
    }
    for queue in &mut s.queues {
        queue.skill_match = skill_match.into();
    }
}

/// Alice (billing 7) set do-not-disturb, and bob (no billing skill) connected.
async fn alice_busy_elsewhere_and_bob(app: &TestApp) -> (AgentClient, AgentClient) {
    let mut alice = AgentClient::connect(app, "dev-alice-token").await;
    alice.expect("hello").await;
    alice
        .send(json!({"type": "presence", "status": "do_not_disturb"}))
        .await;
    alice
        .expect_matching(|f| f["type"] == "presence" && f["status"] == "do_not_disturb")
        .await;
    (alice, spawn_bob(app).await)
}

#[actix_web::test]
async fn closest_skill_match_falls_back_to_an_under_qualified_agent() {
    let app = spawn_app_with(|s| billing_for_both(s, "closest")).await;
    let (_alice, mut bob) = alice_busy_elsewhere_and_bob(&app).await;
    customer_writes(&app, &user(50), 1, "I want a refund").await;
    let offer = bob.expect("offer").await;
    assert_eq!(offer["queue"], "billing");
}

#[actix_web::test]
async fn exact_skill_match_waits_for_a_qualified_agent() {
    let app = spawn_app_with(|s| billing_for_both(s, "exact")).await;
    let (mut alice, mut bob) = alice_busy_elsewhere_and_bob(&app).await;
    customer_writes(&app, &user(51), 1, "I want a refund").await;
    // Bob lacks the skill; the conversation waits until alice is available.
    alice
        .send(json!({"type": "presence", "status": "available"}))
        .await;
    let offer = alice.expect("offer").await;
    assert_eq!(offer["queue"], "billing");
    bob.send(json!({"type": "ping"})).await;
    bob.expect("pong").await;
    assert!(
        bob.seen.iter().all(|f| f["type"] != "offer"),
        "{:?}",
        bob.seen
    );
}

#[actix_web::test]
async fn round_robin_shares_100_conversations_evenly_among_4_agents() {
    const AGENTS: usize = 4;
    const CONVERSATIONS: usize = 100;
    let app = spawn_app_with(|s| {
        s.rules.clear();
        for queue in &mut s.queues {
            queue.assignment = "round_robin".into();
        }
        let template = s.agents[0].clone();
        s.agents = (0..AGENTS)
            .map(|i| linedesk::settings::AgentSettings {
                id: linedesk_actors::domain::AgentId::parse(format!("rr-{i}")).unwrap(),
                name: format!("RR {i}"),
                token: format!("rr-token-{i}").into(),
                capacity: CONVERSATIONS as u32,
                queues: vec!["general".into()],
                ..template.clone()
            })
            .collect();
    })
    .await;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let mut agent = AgentClient::connect(&app, &format!("rr-token-{i}")).await;
        agent.expect("hello").await;
        agents.push(agent);
    }
    let events = (0..CONVERSATIONS)
        .map(|i| {
            let n = NEXT_EVENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            text_event(&user(2_000 + i), &format!("01J8{n:022}"), "hello")
        })
        .collect();
    let answer = app.post_signed(&callback(DESTINATION, events)).await;
    assert_eq!(answer.status, StatusCode::OK);

    // Offers arrive all at once; each agent accepts each one and counts its assignments.
    let runs = agents.iter_mut().map(|agent| async move {
        let mut assigned = 0;
        while assigned < CONVERSATIONS / AGENTS {
            let frame = agent
                .expect_matching(|f| f["type"] == "offer" || f["type"] == "assigned")
                .await;
            if frame["type"] == "offer" {
                let id = frame["conversation_id"].clone();
                agent
                    .send(json!({"type": "accept", "conversation_id": id}))
                    .await;
            } else {
                assigned += 1;
            }
        }
        assigned
    });
    let counts = futures_util::future::join_all(runs).await;
    assert_eq!(counts, vec![CONVERSATIONS / AGENTS; AGENTS]);
    let active = app
        .admin_get("/api/conversations?status=active&limit=500")
        .await
        .body;
    let mut per_agent = std::collections::HashMap::new();
    for item in active["items"].as_array().unwrap() {
        *per_agent
            .entry(item["agent"].as_str().unwrap().to_owned())
            .or_insert(0usize) += 1;
    }
    assert_eq!(per_agent.len(), AGENTS);
    assert!(
        per_agent.values().all(|n| *n == CONVERSATIONS / AGENTS),
        "{per_agent:?}"
    );
}

#[actix_web::test]
async fn a_message_written_between_the_offer_and_the_accept_comes_with_assigned() {
    let app = spawn_app().await;
    let mut alice = AgentClient::connect(&app, "dev-alice-token").await;
    alice.expect("hello").await;
    let customer = user(77);
    customer_writes(&app, &customer, 1, "first question").await;
    let offer = alice.expect("offer").await;
    let id = offer["conversation_id"].as_str().unwrap().to_owned();
    customer_writes(&app, &customer, 2, "and a second one").await;
    alice
        .send(json!({"type": "accept", "conversation_id": id}))
        .await;
    let assigned = alice.expect("assigned").await;
    let previews: Vec<&str> = assigned["recent_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["preview"].as_str().unwrap())
        .collect();
    assert_eq!(previews, ["first question", "and a second one"]);
}
