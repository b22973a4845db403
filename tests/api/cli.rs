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
