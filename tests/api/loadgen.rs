//! `linedesk loadgen` against a real server: small bounded runs whose counts must add up
//! exactly (every webhook accepted, every message seen by an agent, every reply acknowledged),
//! the bounds it promises, and its refusal to load anything off this machine.

use std::process::Command;
use std::time::Duration;

use linedesk::loadgen::{self, Load, LoadgenError, Options, Report};

use crate::helpers::{
    spawn_app, spawn_app_with, use_loadgen_agents, ServerProcess, TestApp, PATIENCE,
};

/// Options against `app` with generous bounds: the counts, not the clock, end these runs.
fn options(app: &TestApp) -> Options {
    let mut options = Options::new(&app.address, app.channel_secret("demo").into());
    options.duration = PATIENCE;
    options.timeout = PATIENCE;
    options.drain = PATIENCE;
    options.connections = 8;
    options
}

fn assert_no_errors(report: &Report) {
    assert_eq!(report.errors.total, 0, "{report}");
    assert_eq!(report.requests.failed, 0, "{report}");
}

#[actix_web::test]
async fn every_webhook_is_accepted_and_every_first_message_reaches_an_agent_in_an_offer() {
    let app = spawn_app_with(|s| use_loadgen_agents(s, 2, 150)).await;
    let mut options = options(&app);
    // One message per user: each one opens a conversation and is seen in its offer.
    options.users = 200;
    options.max_requests = Some(200);
    options.agents = 2;

    let report = loadgen::run(options).await.expect("the run completes");

    assert_no_errors(&report);
    assert_eq!(report.requests.sent, 200, "{report}");
    assert_eq!(report.requests.ok, 200, "{report}");
    assert_eq!(report.events.accepted, 200, "{report}");
    assert_eq!(report.latency_ms.webhook.count, 200);
    assert_eq!(report.latency_ms.send_lag.count, 200, "{report}");
    assert!(
        report.latency_ms.send_lag.max <= report.latency_ms.webhook.max,
        "the send lag is part of the webhook's latency: {report}"
    );
    assert_eq!(report.latency_ms.customer_to_offer.count, 200, "{report}");
    assert_eq!(report.latency_ms.customer_to_message.count, 0, "{report}");
    let agents = &report.agent_activity;
    assert_eq!(agents.connected, 2);
    assert_eq!(agents.offers, 200, "{report}");
    assert_eq!(agents.assigned, 200, "{report}");
    assert_eq!(agents.customer_messages_seen, 200, "{report}");
    assert_eq!(agents.replies_sent, 200, "{report}");
    assert_eq!(agents.acks, 200, "{report}");
    assert_eq!(agents.messages_unseen, 0, "{report}");
    assert_eq!(agents.replies_unacked, 0, "{report}");
    assert_eq!(agents.replies_not_delivered, None);
    assert_eq!(report.latency_ms.agent_send_to_ack.count, 200);
    assert_eq!(report.latency_ms.agent_send_to_line.count, 0);
    // The server counted the same webhooks, and stored every event once.
    assert_eq!(report.server.webhooks_accepted, Some(200), "{report}");
    assert_eq!(app.stored_events().len(), 200);
    if cfg!(target_os = "linux") {
        assert!(report.server.rss_bytes_after.unwrap_or(0) > 0, "{report}");
        assert!(report.server.cpu_seconds.is_some(), "{report}");
    }
}

#[actix_web::test]
async fn after_a_warmup_later_messages_reach_the_agents_in_message_frames() {
    let app = spawn_app_with(|s| use_loadgen_agents(s, 2, 50)).await;
    let mut options = options(&app);
    options.users = 20;
    options.events_per_request = 2;
    options.load = Load::Open { rate: 400.0 };
    options.max_requests = Some(100);
    options.warmup = true;
    options.agents = 2;
    options.think = Duration::from_millis(5);

    let report = loadgen::run(options).await.expect("the run completes");

    let warmup = report.warmup.as_ref().expect("a warm-up report");
    assert!(warmup.settled, "{report}");
    assert_eq!(warmup.requests, 10, "one message per user, two per request");
    assert_eq!(warmup.errors, 0, "{report}");
    assert_no_errors(&report);
    assert_eq!(report.requests.sent, 100, "{report}");
    assert_eq!(report.events.accepted, 200, "{report}");
    assert_eq!(report.events.intended_per_second, Some(800.0));
    // Every conversation is already held by an agent: no offers, every message in a frame.
    assert_eq!(report.latency_ms.customer_to_offer.count, 0, "{report}");
    assert_eq!(report.latency_ms.customer_to_message.count, 200, "{report}");
    assert_eq!(report.agent_activity.offers, 0, "{report}");
    assert_eq!(report.agent_activity.replies_sent, 200, "{report}");
    assert_eq!(report.agent_activity.acks, 200, "{report}");
    assert_eq!(report.agent_activity.messages_unseen, 0, "{report}");
    assert_eq!(app.stored_events().len(), 220);
}

#[actix_web::test]
async fn max_requests_and_duration_bound_the_run_in_both_loops() {
    let app = spawn_app().await;

    let mut closed = options(&app);
    closed.max_requests = Some(37);
    let report = loadgen::run(closed).await.expect("closed loop runs");
    assert_no_errors(&report);
    assert_eq!(report.requests.sent, 37, "{report}");
    assert_eq!(report.requests.intended_per_second, None);

    // Paced by tokio's timer (above 1,000/s).
    let mut open = options(&app);
    open.load = Load::Open { rate: 2000.0 };
    open.max_requests = Some(25);
    let report = loadgen::run(open).await.expect("open loop runs");
    assert_no_errors(&report);
    assert_eq!(report.requests.sent, 25, "{report}");

    // Paced by a thread of its own (up to 1,000/s): 50 requests/s for 0.2 s, the ten due
    // before the end, however fast the server is.
    let mut timed = options(&app);
    timed.load = Load::Open { rate: 50.0 };
    timed.duration = Duration::from_millis(200);
    let report = loadgen::run(timed).await.expect("timed run");
    assert_no_errors(&report);
    assert_eq!(report.requests.sent, 10, "{report}");
    assert_eq!(report.latency_ms.webhook.count, 10);

    let mut limited = options(&app);
    limited.load = Load::Open { rate: 1000.0 };
    limited.max_requests = Some(15);
    let report = loadgen::run(limited).await.expect("paced open loop runs");
    assert_no_errors(&report);
    assert_eq!(report.requests.sent, 15, "{report}");

    assert_eq!(app.stored_events().len(), 37 + 25 + 10 + 15);
}

#[actix_web::test]
async fn webhooks_signed_with_the_wrong_secret_are_counted_as_http_401() {
    let app = spawn_app().await;
    let mut options = options(&app);
    options.secret = "not-the-channel-secret".to_owned().into();
    options.max_requests = Some(10);

    let report = loadgen::run(options).await.expect("the run completes");

    assert_eq!(report.requests.sent, 10);
    assert_eq!(report.requests.ok, 0);
    assert_eq!(report.errors.total, 10, "{report}");
    assert_eq!(report.errors.http_status.get("401"), Some(&10), "{report}");
    assert_eq!(report.latency_ms.webhook.count, 0);
    assert!(app.stored_events().is_empty());
}

#[actix_web::test]
async fn a_target_off_this_machine_is_refused_before_anything_is_sent() {
    for target in [
        "http://192.0.2.1:8080",
        "http://example.com",
        "http://[2001:db8::1]:80",
    ] {
        let mut options = Options::new(target, "secret".to_owned().into());
        // Were anything sent, this run would wait for an unreachable address this long.
        options.timeout = PATIENCE;
        let started = std::time::Instant::now();
        match loadgen::run(options).await {
            Err(e @ LoadgenError::NotLoopback { .. }) => {
                assert!(e
                    .to_string()
                    .contains("only drives a linedesk on this machine"))
            }
            Err(other) => panic!("{target}: expected NotLoopback, got {other}"),
            Ok(report) => panic!("{target}: ran:\n{report}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[actix_web::test]
async fn agents_the_server_does_not_know_stop_the_run_with_a_hint() {
    let app = spawn_app().await;
    let mut options = options(&app);
    options.agents = 1;
    match loadgen::run(options).await {
        Err(e @ LoadgenError::Agent { .. }) => {
            assert!(e.to_string().contains("agents-config"), "{e}")
        }
        Err(other) => panic!("expected an agent error, got {other}"),
        Ok(report) => panic!("ran without agents configured:\n{report}"),
    }
}

#[test]
fn the_command_runs_against_a_server_process_with_the_generated_agents_and_prints_json() {
    let data = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_linedesk");
    let overlay = Command::new(binary)
        .args([
            "loadgen",
            "agents-config",
            "--agents",
            "2",
            "--capacity",
            "50",
        ])
        .env_clear()
        .output()
        .expect("agents-config runs");
    assert!(overlay.status.success());
    let overlay_path = data.path().join("agents.toml");
    std::fs::write(&overlay_path, &overlay.stdout).unwrap();
    let server = ServerProcess::start_with(
        data.path(),
        &["--config", overlay_path.to_str().unwrap()],
        &[],
    );

    let run = Command::new(binary)
        .args(["loadgen", "--target", &server.address])
        .args(["--users", "40", "--max-requests", "40", "--rate", "200"])
        .args(["--agents", "2", "--duration", "30", "--json", "--quiet"])
        .env_clear()
        .output()
        .expect("loadgen runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&run.stdout).expect("one JSON object on stdout");
    assert_eq!(report["requests"]["ok"], 40, "{report}");
    assert_eq!(report["errors"]["total"], 0, "{report}");
    assert_eq!(report["mode"], "open_loop");
    assert_eq!(report["agent_activity"]["connected"], 2);
    if cfg!(target_os = "linux") {
        assert!(
            report["server"]["rss_bytes_max"].as_u64().unwrap() > 0,
            "{report}"
        );
    }

    let refused = Command::new(binary)
        .args(["loadgen", "--target", "http://10.0.0.1:8080", "--quiet"])
        .env_clear()
        .output()
        .expect("loadgen runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("refusing to load `10.0.0.1`"), "{stderr}");
}

#[actix_web::test]
async fn every_reply_is_timed_at_the_embedded_fake_line() {
    let defaults = linedesk::settings::Settings::load_from(None, std::iter::empty())
        .expect("default settings");
    let account = defaults.account("demo").expect("the demo account");
    let line = loadgen::embedded_line("127.0.0.1:0".parse().unwrap(), account)
        .expect("the fake LINE platform starts");
    let app = spawn_app_with(|s| {
        use_loadgen_agents(s, 1, 50);
        s.line.api_base = line.base_url();
        s.line.data_api_base = line.base_url();
    })
    .await;
    let mut options = options(&app);
    options.users = 10;
    options.max_requests = Some(10);
    options.agents = 1;
    options.line = Some(line.clone());

    let report = loadgen::run(options).await.expect("the run completes");

    assert_no_errors(&report);
    assert_eq!(report.agent_activity.acks, 10, "{report}");
    assert_eq!(
        report.agent_activity.replies_not_delivered,
        Some(0),
        "{report}"
    );
    assert_eq!(report.latency_ms.agent_send_to_line.count, 10, "{report}");
    // Each reply went out with the reply token the fake issued for its event.
    let deliveries = line.deliveries();
    let replies = deliveries
        .iter()
        .filter(|d| d.texts().iter().any(|t| loadgen::find_marker(t).is_some()));
    assert!(
        replies
            .clone()
            .all(|d| d.via == linedesk::fake_line::Via::Reply),
        "{deliveries:?}"
    );
    assert_eq!(replies.count(), 10);
}
