//! The fake LINE platform with linedesk: its webhooks are accepted and stored as LINE's are, and
//! `linedesk fake-line` serves the demo channel from the command line. (The fake's own behaviour,
//! status by status, is tested in `src/fake_line/tests.rs`.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use awc::http::StatusCode;
use linedesk::fake_line::{CustomersReport, FakeLine, FakeLineConfig, SimulatedCustomers};
use serde_json::Value;

use crate::helpers::{spawn_app, stored_events, TestApp, PATIENCE};

const DEMO_TOKEN: &str = "linedesk-demo-channel-access-token-dev";
const USER: &str = "U4af4980629c0b2e7a1f5d3c8b6e9f0a1";

/// A fake LINE platform with linedesk's accounts, sending its webhooks to `app`.
fn fake_line_for(app: &TestApp) -> FakeLine {
    FakeLine::start(FakeLineConfig {
        webhook_target: Some(app.address.clone()),
        ..FakeLineConfig::from_settings(&app.settings)
    })
    .expect("the fake LINE platform starts")
}

fn stored_webhook_event_ids(app: &TestApp) -> Vec<String> {
    stored_events(&app.journal)
        .iter()
        .map(|e| {
            let event: Value = serde_json::from_str(e.event.get()).unwrap();
            event["webhookEventId"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[actix_web::test]
async fn linedesk_accepts_and_stores_a_customer_message_sent_by_the_fake() {
    let app = spawn_app().await;
    let fake = fake_line_for(&app);

    let sent = fake
        .send_text_as(USER, "注文した商品がまだ届きません")
        .await
        .expect("the webhook reaches linedesk");

    assert_eq!(sent.status, StatusCode::OK);
    assert_eq!(stored_webhook_event_ids(&app), [sent.webhook_event_id]);
}

#[actix_web::test]
async fn linedesk_refuses_a_webhook_signed_with_another_secret() {
    let app = spawn_app().await;
    let mut config = FakeLineConfig::from_settings(&app.settings);
    config.webhook_target = Some(app.address.clone());
    for channel in &mut config.channels {
        channel.channel_secret = "not-the-channel-secret".to_owned().into();
    }
    let fake = FakeLine::start(config).unwrap();

    let sent = fake.send_text_as(USER, "hello").await.unwrap();

    assert_eq!(sent.status, StatusCode::UNAUTHORIZED);
    assert!(stored_webhook_event_ids(&app).is_empty());
}

#[actix_web::test]
async fn simulated_customers_reach_linedesk_and_stop_at_max_messages() {
    let app = spawn_app().await;
    let fake = fake_line_for(&app);
    let customers = SimulatedCustomers {
        account: Some("demo".into()),
        customers: 3,
        interval: Duration::from_millis(30),
        max_messages: 6,
        duration: PATIENCE,
    };

    let report = customers.run(&fake).await;

    assert_eq!(
        report,
        CustomersReport {
            sent: 6,
            accepted: 6,
            refused: 0,
            failed: 0
        }
    );
    let events = stored_events(&app.journal);
    assert_eq!(events.len(), 6);
    let mut senders: Vec<String> = events
        .iter()
        .map(|e| {
            let event: Value = serde_json::from_str(e.event.get()).unwrap();
            event["source"]["userId"].as_str().unwrap().to_owned()
        })
        .collect();
    senders.sort();
    senders.dedup();
    let mut users = customers.user_ids("demo");
    users.sort();
    assert_eq!(senders, users);
}

/// `linedesk fake-line` in a child process, its stdout read line by line.
struct FakeLineProcess {
    child: Child,
    address: String,
    lines: mpsc::Receiver<String>,
}

impl FakeLineProcess {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_linedesk"))
            .arg("fake-line")
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("linedesk starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(PATIENCE)
            .expect("linedesk fake-line printed a line in time");
        let address = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line is `listening on ...`, got `{first}`"))
            .to_owned();
        FakeLineProcess {
            child,
            address,
            lines,
        }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("linedesk fake-line printed another line in time")
    }
}

impl Drop for FakeLineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn the_fake_line_command_serves_the_demo_channel_on_loopback() {
    let fake = FakeLineProcess::start(&["--bind", "127.0.0.1:0"]);
    let client = awc::Client::builder().timeout(PATIENCE).finish();

    assert!(
        fake.address.starts_with("http://127.0.0.1:"),
        "{}",
        fake.address
    );
    let info = client
        .get(format!("{}/v2/bot/info", fake.address))
        .insert_header(("authorization", format!("Bearer {DEMO_TOKEN}")))
        .send()
        .await
        .expect("the fake answers");
    let refused = client
        .get(format!("{}/v2/bot/info", fake.address))
        .insert_header(("authorization", "Bearer nope"))
        .send()
        .await
        .expect("the fake answers");
    assert_eq!(info.status(), StatusCode::OK);
    assert!(info.headers().contains_key("x-line-request-id"));
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn the_fake_line_command_refuses_a_non_loopback_bind() {
    let out = Command::new(env!("CARGO_BIN_EXE_linedesk"))
        .args(["fake-line", "--bind", "0.0.0.0:0"])
        .env_clear()
        .output()
        .expect("linedesk runs");

    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no `listening on` line");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--bind") && err.contains("loopback"), "{err}");
}

#[actix_web::test]
async fn the_fake_line_command_sends_simulated_customers_to_linedesk() {
    let app = spawn_app().await;

    let fake = FakeLineProcess::start(&[
        "--webhook-target",
        &app.address,
        "--customers",
        "2",
        "--interval-ms",
        "20",
        "--max-messages",
        "4",
    ]);
    let done = actix_web::rt::task::spawn_blocking(move || fake.next_line())
        .await
        .unwrap();

    assert_eq!(
        done,
        "customers done: 4 sent, 4 accepted, 0 refused, 0 failed"
    );
    assert_eq!(stored_events(&app.journal).len(), 4);
}
