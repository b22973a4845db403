//! The command line as an operator uses it.

use std::process::{Command, Output};

fn linedesk(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linedesk"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("linedesk runs")
}

#[test]
fn accounts_lists_callback_urls_with_secrets_masked() {
    let out = linedesk(
        &["accounts"],
        &[
            ("LINEDESK__SERVER__PUBLIC_URL", "https://desk.example.jp/"),
            (
                "LINEDESK__ACCOUNTS__DEMO__CHANNEL_ACCESS_TOKEN",
                "tok-from-env-123",
            ),
        ],
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("demo (Demo shop)"), "{text}");
    assert!(
        text.contains("https://desk.example.jp/line/webhook/demo"),
        "{text}"
    );
    assert!(
        !text.contains("linedesk-demo-channel-secret-dev"),
        "secret shown: {text}"
    );
    assert!(!text.contains("tok-from-env-123"), "token shown: {text}");
    assert!(text.contains("********"), "{text}");
}

#[test]
fn a_bad_config_file_stops_the_server_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("linedesk.toml");
    std::fs::write(&file, "[storage]\ndurability = \"sometimes\"\n").unwrap();
    let out = linedesk(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("storage.durability"), "{err}");
    assert!(out.stdout.is_empty(), "no `listening on` line");
}

#[test]
fn a_bad_environment_value_stops_the_server_with_the_key_named() {
    let out = linedesk(&["serve"], &[("LINEDESK__SERVER__BIND", "not-an-address")]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("server.bind"), "{err}");
}

#[test]
fn an_unreadable_config_file_is_named() {
    let out = linedesk(&["serve", "--config", "/nonexistent/linedesk.toml"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/nonexistent/linedesk.toml"), "{err}");
}

#[actix_web::test]
async fn the_demo_runs_the_desk_with_a_fake_line_and_customers_an_agent_can_answer() {
    use crate::agents::{accept_next_offer, AgentClient};
    use crate::helpers::ServerProcess;
    use serde_json::json;

    let data = tempfile::tempdir().unwrap();
    let args = [
        "demo",
        "--customers",
        "2",
        "--interval-ms",
        "50",
        "--max-messages",
        "2",
    ];
    let demo = ServerProcess::start_command(data.path(), &args, &[]);
    let mut alice = AgentClient::connect_to(&demo.address, "dev-alice-token").await;
    alice.expect("hello").await;
    let conversation = accept_next_offer(&mut alice).await;
    alice
        .send(json!({"type": "send", "conversation_id": conversation, "client_msg_id": "d-1", "text": "Welcome to the demo"}))
        .await;
    // Delivered to the demo's fake LINE, as the agent is told.
    let delivered = alice
        .expect_matching(|f| f["type"] == "delivery" && f["status"] != "queued")
        .await;
    assert!(
        ["sent_reply", "sent_push"].contains(&delivered["status"].as_str().unwrap()),
        "{delivered}"
    );
    drop(alice);
    assert_eq!(demo.signal_and_wait("TERM").code(), Some(0));
}
