//! The real binary: its first stdout line, graceful shutdown on SIGTERM/SIGINT, `kill -9` right
//! after a 200, a restart on the same data folder that finds every acknowledged event, and one
//! that answers webhooks while routing gets the open conversations back.

use awc::http::StatusCode;

use linedesk::startup::Application;

use crate::agents::AgentClient;
use crate::helpers::{stored_events, stored_ids, ServerProcess, PATIENCE};
use crate::line_payloads::{now_ms, text_event, text_event_at};

const SECRET: &str = "linedesk-demo-channel-secret-dev";

async fn post(address: &str, events: Vec<serde_json::Value>) -> StatusCode {
    crate::helpers::post_signed_to(address, events).await
}

/// The same event each time for the same `n`, as LINE redelivers it (its `timestamp` too).
fn event(n: usize) -> serde_json::Value {
    static SENT_AT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let user = format!("U{:032x}", n % 7);
    text_event_at(
        &user,
        &format!("01J1000000000000000000{n:04}"),
        &format!("event {n}"),
        *SENT_AT.get_or_init(now_ms),
    )
}

#[actix_web::test]
async fn the_server_prints_its_address_first_and_stops_cleanly_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    assert!(server.address.starts_with("http://127.0.0.1:"));
    let health = awc::Client::default()
        .get(format!("{}/healthz", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    for n in 0..5 {
        assert_eq!(post(&server.address, vec![event(n)]).await, StatusCode::OK);
    }

    let status = server.signal_and_wait("TERM");

    assert_eq!(status.code(), Some(0), "graceful exit");
    let journal = ServerProcess::journal_of(data.path());
    assert_eq!(stored_ids(&stored_events(&journal)).len(), 5);
}

#[actix_web::test]
async fn a_sigterm_as_soon_as_the_address_is_printed_stops_gracefully() {
    // The signal handlers exist before the address line: a supervisor may stop the server at once.
    for _ in 0..3 {
        let data = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(data.path(), &[]);
        assert_eq!(server.signal_and_wait("TERM").code(), Some(0));
    }
}

#[actix_web::test]
async fn a_restart_after_sigint_finds_every_event_and_keeps_deduplicating() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    assert_eq!(
        post(&server.address, (0..10).map(event).collect()).await,
        StatusCode::OK
    );
    assert_eq!(server.signal_and_wait("INT").code(), Some(0));

    let server = ServerProcess::start(data.path(), &[]);
    // A redelivery after the restart is acknowledged and not stored again; new events continue.
    assert_eq!(
        post(&server.address, (5..15).map(event).collect()).await,
        StatusCode::OK
    );
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));

    let journal = ServerProcess::journal_of(data.path());
    let ids = stored_ids(&stored_events(&journal));
    let expected: Vec<String> = (0..15)
        .map(|n| event(n)["webhookEventId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(journal.last_seq(), 15);
}

#[actix_web::test]
async fn at_a_restart_redelivery_checks_past_the_window_go_and_recent_ones_stay() {
    const DAY_MS: i64 = 86_400_000;
    let data = tempfile::tempdir().unwrap();
    let window = [("LINEDESK__STORAGE__REDELIVERY_WINDOW_DAYS", "2")];
    let now = linedesk_actors::conversation::now_ms();
    let at = |n: usize, timestamp_ms: i64| {
        let mut e = event(n);
        e["timestamp"] = timestamp_ms.into();
        e
    };
    let (recent, old) = (at(1, now), at(2, now - 3 * DAY_MS));
    let server = ServerProcess::start(data.path(), &window);
    assert_eq!(
        post(&server.address, vec![recent.clone(), old.clone()]).await,
        StatusCode::OK
    );
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));

    // The journal removes expired checks when it opens, before it takes any event.
    let server = ServerProcess::start(data.path(), &window);
    let redelivered: Vec<_> = [recent, old]
        .into_iter()
        .map(|mut e| {
            e["deliveryContext"]["isRedelivery"] = true.into();
            e
        })
        .collect();
    assert_eq!(post(&server.address, redelivered).await, StatusCode::OK);
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));

    let journal = ServerProcess::journal_of(data.path());
    let id = |n: usize| event(n)["webhookEventId"].as_str().unwrap().to_owned();
    assert_eq!(
        stored_ids(&stored_events(&journal)),
        [id(1), id(2), id(2)],
        "three days old, past the window: stored again; today's: recognised"
    );
}

#[actix_web::test]
async fn kill_9_right_after_a_200_loses_no_acknowledged_event() {
    for durability in ["flush", "os"] {
        kill_9_after_200s(durability).await;
    }
}

/// sled's own timer is set to a minute, so that what it has on disk at the kill is only what
/// other writes pushed out; whatever of the run's checks and sequence number the kill cut off,
/// the event log gives back at the restart. (The journal's unit test
/// `a_batch_the_database_lost_in_a_crash_is_recovered_from_the_event_log` cuts them for sure.)
async fn kill_9_after_200s(durability: &str) {
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("LINEDESK__STORAGE__DURABILITY", durability),
        ("LINEDESK__STORAGE__FLUSH_EVERY_MS", "60000"),
    ];
    let server = ServerProcess::start(data.path(), &env);
    // Concurrent deliveries, so that some share a flush; every one that got 200 must survive.
    let mut acknowledged = Vec::new();
    let requests = (0..20).map(|r| {
        let address = server.address.clone();
        let events: Vec<_> = (r * 5..r * 5 + 5).map(event).collect();
        let ids: Vec<String> = events
            .iter()
            .map(|e| e["webhookEventId"].as_str().unwrap().to_owned())
            .collect();
        async move { (post(&address, events).await, ids) }
    });
    for (status, ids) in futures_util::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK);
        acknowledged.extend(ids);
    }

    let status = server.signal_and_wait("KILL");
    assert_eq!(status.code(), None, "killed by a signal");

    // Restarted, it still recognises every acknowledged event: LINE's redelivery of the first
    // five is answered and not stored again.
    let server = ServerProcess::start(data.path(), &env);
    assert_eq!(
        post(&server.address, (0..5).chain(100..102).map(event).collect()).await,
        StatusCode::OK
    );
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));
    let journal = ServerProcess::journal_of(data.path());
    let mut stored = stored_ids(&stored_events(&journal));
    stored.sort();
    acknowledged
        .extend((100..102).map(|n| event(n)["webhookEventId"].as_str().unwrap().to_owned()));
    acknowledged.sort();
    assert_eq!(stored, acknowledged, "durability = {durability}");
    // Past what the killed run had leased: a kill leaves numbers unused, never reused.
    assert!(
        journal.last_seq() > 102,
        "durability = {durability}: {}",
        journal.last_seq()
    );
}

#[actix_web::test]
async fn json_logs_name_the_accounts_and_never_show_secrets_or_customer_text() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[("LINEDESK__LOG__FORMAT", "json")]);
    let secret_text = "my card number is 4111-1111";
    let mut events = vec![text_event(
        "U0000000000000000000000000000000a",
        "01J20000000000000000000001",
        secret_text,
    )];
    events[0]["replyToken"] = serde_json::json!("reply-token-should-not-be-logged");
    assert_eq!(post(&server.address, events).await, StatusCode::OK);
    // A refused request is logged at warn, without its body.
    let refused = awc::Client::default()
        .post(format!("{}/line/webhook/demo", server.address))
        .insert_header(("x-line-signature", "AAAA"))
        .send_body(format!("{{\"text\":\"{secret_text}\"}}"))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));

    let logs = ServerProcess::logs(data.path());
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("JSON log line ({e}): {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["callback_url"]
        .as_str()
        .is_some_and(|u| u.ends_with("/line/webhook/demo"))));
    assert!(lines
        .iter()
        .any(|l| l["level"] == "WARN" && l["code"] == "invalid_signature"));
    for forbidden in [
        secret_text,
        SECRET,
        "linedesk-demo-channel-access-token-dev",
        "reply-token-should-not-be-logged",
    ] {
        assert!(!logs.contains(forbidden), "`{forbidden}` in logs:\n{logs}");
    }
}

/// What the customer wrote, in transcript order (automated messages left out).
async fn transcript(address: &str, id: &str) -> Vec<String> {
    crate::helpers::transcript_of(address, id)
        .await
        .iter()
        .filter(|e| e["author"]["type"] == "customer")
        .map(|e| e["preview"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn conversations_survive_kill_9_and_sigterm_with_state_transcript_and_order() {
    let data = tempfile::tempdir().unwrap();
    // A snapshot every 3 events, so recovery needs both the snapshot and the journal after it.
    let env = [("LINEDESK__CONVERSATION__SNAPSHOT_EVERY", "3")];
    let user = "U0000000000000000000000000000c0de";
    let id = format!("demo.user.{user}.1");
    let sent_at = now_ms();
    let message = |n: usize| {
        text_event_at(
            user,
            &format!("01J4000000000000000000{n:04}"),
            &format!("message {n}"),
            sent_at,
        )
    };
    let expected = |n: usize| (0..n).map(|i| format!("message {i}")).collect::<Vec<_>>();

    let server = ServerProcess::start(data.path(), &env);
    for n in 0..10 {
        assert_eq!(
            post(&server.address, vec![message(n)]).await,
            StatusCode::OK
        );
    }
    assert_eq!(transcript(&server.address, &id).await, expected(10));
    // Acknowledged but possibly not yet applied when the process dies:
    assert_eq!(
        post(&server.address, vec![message(10), message(11)]).await,
        StatusCode::OK
    );
    assert_eq!(server.signal_and_wait("KILL").code(), None);

    let server = ServerProcess::start(data.path(), &env);
    // LINE redelivers an event it already had a 200 for: acknowledged, not applied twice.
    let mut redelivered = message(5);
    redelivered["deliveryContext"]["isRedelivery"] = serde_json::json!(true);
    assert_eq!(
        post(&server.address, vec![redelivered, message(12)]).await,
        StatusCode::OK
    );
    assert_eq!(transcript(&server.address, &id).await, expected(13));
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));

    let server = ServerProcess::start(data.path(), &env);
    assert_eq!(transcript(&server.address, &id).await, expected(13));
    let client = awc::Client::builder().timeout(PATIENCE).finish();
    let doc = crate::helpers::admin_get(
        &client,
        &server.address,
        &format!("/api/conversations/{id}"),
    )
    .await;
    assert_eq!(doc.body["status"], "queued");
    assert_eq!(doc.body["transitions"].as_array().unwrap().len(), 2);
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));
}

/// The value of an unlabelled sample in `/metrics`.
async fn metric(address: &str, name: &str) -> String {
    let mut response = awc::Client::builder()
        .timeout(PATIENCE)
        .finish()
        .get(format!("{address}/metrics"))
        .send()
        .await
        .unwrap();
    let body = response.body().await.unwrap();
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .to_owned()
}

#[actix_web::test]
async fn after_a_restart_webhooks_are_answered_before_routing_is_restored_and_agents_then_get_the_restored_conversations(
) {
    let data = tempfile::tempdir().unwrap();
    let classified = |address: String, id: String| async move {
        let routing = crate::helpers::routing_once_classified(&address, &id).await;
        assert_eq!(routing["queue"], "general");
    };
    let waiting_user = "U00000000000000000000000000000a01";
    let waiting = format!("demo.user.{waiting_user}.1");
    let server = ServerProcess::start(data.path(), &[]);
    let first = text_event(waiting_user, "01J5000000000000000000000001", "hello");
    assert_eq!(post(&server.address, vec![first]).await, StatusCode::OK);
    // Classified, so saved with its queue, before the server stops.
    classified(server.address.clone(), waiting.clone()).await;
    assert_eq!(server.signal_and_wait("TERM").code(), Some(0));

    // The same data folder, in this process, with the restore held back by the test.
    let mut settings = crate::helpers::test_settings(data.path());
    settings.routing.restore_chunk = 1;
    let mut app = Application::build(settings).await.unwrap();
    let restore = app.take_routing_restore().unwrap();
    let address = format!("http://{}", app.address());
    actix_web::rt::spawn(app.run_until_stopped());

    assert_eq!(
        metric(&address, "linedesk_routing_restore_complete").await,
        "0"
    );
    let newcomer_user = "U00000000000000000000000000000a02";
    let newcomer = format!("demo.user.{newcomer_user}.1");
    let during = text_event(newcomer_user, "01J5000000000000000000000002", "hi");
    assert_eq!(post(&address, vec![during]).await, StatusCode::OK);
    // Queued: its conversation told the router before the restore reads it.
    classified(address.clone(), newcomer.clone()).await;
    // An agent connecting now is let in once routing is restored.
    let alice = actix_web::rt::spawn({
        let address = address.clone();
        async move {
            let mut alice = AgentClient::connect_to(&address, "dev-alice-token").await;
            let hello = alice.expect("hello").await;
            (alice, hello)
        }
    });

    // Both conversations are open in storage; routing knows the newcomer already, so only the
    // one that waited across the restart is restored.
    assert_eq!(restore.run().await.unwrap(), 1);
    let (mut alice, hello) = alice.await.unwrap();
    assert_eq!(hello["conversations"], serde_json::json!([]));
    // Offered oldest first: the one that waited across the restart, then the newcomer.
    assert_eq!(alice.expect("offer").await["conversation_id"], waiting);
    assert_eq!(alice.expect("offer").await["conversation_id"], newcomer);
    assert_eq!(
        metric(&address, "linedesk_routing_restore_complete").await,
        "1"
    );
    assert_eq!(
        metric(&address, "linedesk_routing_restored_conversations").await,
        "1"
    );
}

/// The newest of sled's page-table snapshots in a data folder (`snap.<lsn>`).
fn newest_sled_snapshot(data: &std::path::Path) -> Option<String> {
    std::fs::read_dir(data.join("db"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("snap."))
        .max()
}

#[actix_web::test]
async fn a_clean_stop_leaves_a_database_snapshot_so_the_next_start_does_not_replay_the_log() {
    for on_stop in ["true", "false"] {
        let data = tempfile::tempdir().unwrap();
        let env = [("LINEDESK__STORAGE__SNAPSHOT_ON_STOP", on_stop)];
        let server = ServerProcess::start(data.path(), &env);
        for n in 0..20 {
            assert_eq!(post(&server.address, vec![event(n)]).await, StatusCode::OK);
        }
        let while_running = newest_sled_snapshot(data.path());
        assert_eq!(server.signal_and_wait("TERM").code(), Some(0));
        let after_stop = newest_sled_snapshot(data.path());
        if on_stop == "true" {
            assert!(
                after_stop > while_running,
                "a snapshot past the run's writes: {while_running:?} → {after_stop:?}"
            );
        } else {
            assert_eq!(after_stop, while_running, "switched off: none written");
        }
        let journal = ServerProcess::journal_of(data.path());
        assert_eq!(stored_ids(&stored_events(&journal)).len(), 20);
        // Each chat's later messages changed no state, so only the stop's snapshots cover them:
        // the conversations were still running when the signal came, and nothing is left to
        // resume.
        assert_eq!(journal.pending_conversations(), []);
    }
}
