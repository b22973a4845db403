//! Starting linedesk for a test: in this process (`spawn_app`) or as the real binary in a child
//! process (`ServerProcess`, for signals and `kill -9`). Both bind 127.0.0.1 port 0 and keep
//! their data in a temporary folder.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use awc::http::StatusCode;
use linedesk::line::signature;
use linedesk::settings::Settings;
use linedesk::startup::Application;
use linedesk::storage::{Journal, StoredEvent};
use secrecy::ExposeSecret;
use tempfile::TempDir;

/// The bot user id LINE puts in `destination`.
pub const DESTINATION: &str = "U0123456789abcdef0123456789abcdef";

/// Generous bound for anything a test waits on: the machine may be loaded.
pub const PATIENCE: Duration = Duration::from_secs(60);

static TRACING: Once = Once::new();

/// Logs go to the test output only when `TEST_LOG` is set.
pub fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("linedesk=debug,info")
                .with_test_writer()
                .try_init();
        }
    });
}

/// The settings every test starts from: the embedded defaults, blind to the caller's
/// environment, on port 0 in `data`.
pub fn test_settings(data: &Path) -> Settings {
    let mut settings = Settings::load_from(None, std::iter::empty()).expect("default settings");
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 2;
    settings.server.shutdown_timeout_ms = 5_000;
    settings.storage.path = data.join("db");
    // The payloads carry fixed timestamps from 2024: a window would remove their redelivery
    // checks when the journal opens. `redelivery` tests set one.
    settings.storage.redelivery_window_days = 0;
    // LINE is never reached from tests: a closed loopback port until a test brings a fake.
    settings.line.api_base = NO_LINE.into();
    settings.line.data_api_base = NO_LINE.into();
    // Transcripts hold only what a test wrote; tests of automated messages put them back.
    settings.automated_messages.clear();
    settings
}

/// A loopback address nothing listens on: calls to LINE fail at once.
pub const NO_LINE: &str = "http://127.0.0.1:9";

pub struct TestApp {
    pub address: String,
    pub journal: Journal,
    pub registry: actix::Addr<linedesk_actors::conversation::Registry>,
    pub settings: Settings,
    client: awc::Client,
    _data: TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the server in this process after `edit` has changed its settings.
pub async fn spawn_app_with(edit: impl FnOnce(&mut Settings)) -> TestApp {
    init_tracing();
    let data = tempfile::tempdir().expect("temporary folder");
    let mut settings = test_settings(data.path());
    edit(&mut settings);
    let app = Application::build(settings.clone())
        .await
        .expect("application starts");
    let address = format!("http://{}", app.address());
    let journal = app.journal().clone();
    let registry = app.registry();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        journal,
        registry,
        settings,
        client: awc::Client::builder().timeout(PATIENCE).finish(),
        _data: data,
    }
}

/// Replaces the configured agents with `count` load-generator agents (tokens
/// `loadgen-agent-{i}`) of `capacity` units, exactly as the overlay printed by
/// `linedesk loadgen agents-config` configures them.
pub fn use_loadgen_agents(settings: &mut Settings, count: u32, capacity: u32) {
    let queues = ["general".to_owned(), "billing".to_owned()];
    let overlay = linedesk::loadgen::agents_config(count, capacity, &queues);
    let mut file = tempfile::NamedTempFile::new().expect("temporary file");
    std::io::Write::write_all(&mut file, overlay.as_bytes()).expect("overlay written");
    settings.agents = Settings::load_from(Some(file.path()), std::iter::empty())
        .expect("the agents overlay loads")
        .agents;
}

/// An answer: status and body (parsed as JSON when it is JSON).
pub struct Answer {
    pub status: StatusCode,
    pub body: serde_json::Value,
    pub text: String,
}

impl TestApp {
    pub fn channel_secret(&self, account: &str) -> String {
        self.settings
            .account(account)
            .expect("configured account")
            .channel_secret
            .expose_secret()
            .to_owned()
    }

    /// POSTs `body` to an account's callback URL with the given signature header.
    pub async fn post_webhook(
        &self,
        account: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/line/webhook/{account}", self.address))
            .insert_header(("content-type", "application/json; charset=utf-8"))
            .insert_header(("user-agent", "LineBotWebhook/2.0"));
        if let Some(signature) = signature {
            request = request.insert_header(("x-line-signature", signature));
        }
        let mut response = request.send_body(body).await.expect("webhook request");
        answer(
            response.status(),
            response.body().limit(1 << 20).await.expect("body").to_vec(),
        )
    }

    /// POSTs `body` to the demo account, signed as LINE would sign it.
    pub async fn post_signed(&self, body: &serde_json::Value) -> Answer {
        let bytes = serde_json::to_vec(body).unwrap();
        self.post_signed_bytes("demo", bytes).await
    }

    pub async fn post_signed_bytes(&self, account: &str, body: Vec<u8>) -> Answer {
        let sig = signature::sign(self.channel_secret(account).as_bytes(), &body);
        self.post_webhook(account, body, Some(sig)).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        let mut response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET request");
        answer(
            response.status(),
            response.body().await.expect("body").to_vec(),
        )
    }

    /// GET with the admin token.
    pub async fn admin_get(&self, path: &str) -> Answer {
        admin_get(&self.client, &self.address, path).await
    }

    /// Every stored event, in journal order.
    pub fn stored_events(&self) -> Vec<StoredEvent> {
        stored_events(&self.journal)
    }
}

/// POSTs `events` to the demo account of the server at `address`, signed with the demo
/// account's development secret (for servers in child processes).
pub async fn post_signed_to(address: &str, events: Vec<serde_json::Value>) -> StatusCode {
    let body = serde_json::to_vec(&crate::line_payloads::callback(DESTINATION, events)).unwrap();
    let sig = signature::sign(b"linedesk-demo-channel-secret-dev", &body);
    awc::Client::builder()
        .timeout(PATIENCE)
        .finish()
        .post(format!("{address}/line/webhook/demo"))
        .insert_header(("x-line-signature", sig))
        .send_body(body)
        .await
        .expect("webhook request")
        .status()
}

/// The development admin token of the default settings.
pub const ADMIN_TOKEN: &str = "linedesk-dev-admin-token";

/// The transcript entries of conversation `id`, as the operators' API shows them.
pub async fn transcript_of(address: &str, id: &str) -> Vec<serde_json::Value> {
    let client = awc::Client::builder().timeout(PATIENCE).finish();
    let answer = admin_get(&client, address, &format!("/api/conversations/{id}")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["transcript"].as_array().unwrap().clone()
}

pub async fn admin_get(client: &awc::Client, address: &str, path: &str) -> Answer {
    let mut response = client
        .get(format!("{address}{path}"))
        .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
        .send()
        .await
        .expect("GET request");
    answer(
        response.status(),
        response
            .body()
            .limit(16 << 20)
            .await
            .expect("body")
            .to_vec(),
    )
}

/// Waits until conversation `id` of the server at `address` was classified and returns where
/// it was routed. Its conversation actor sent the router its notice in the same step, so the
/// router hears of it before anything sent to the router after this returns.
pub async fn routing_once_classified(address: &str, id: &str) -> serde_json::Value {
    let client = awc::Client::builder().timeout(PATIENCE).finish();
    let path = format!("/api/conversations/{id}");
    eventually(&format!("{id} classified"), || async {
        let answer = admin_get(&client, address, &path).await;
        answer.status == StatusCode::OK && !answer.body["routing"].is_null()
    })
    .await;
    // A classification is kept: asking again finds it still.
    admin_get(&client, address, &path).await.body["routing"].clone()
}

/// Like [`eventually`], for bulk work whose pace depends on how loaded the machine is (10,000
/// actors passivating): `check` answers whether it is done and how far it got, a count that only
/// grows. It gives up after [`PATIENCE`] without progress, or after ten times that in all.
pub async fn eventually_while_progressing<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, u64)>,
{
    let start = std::time::Instant::now();
    let mut stalled_since = start;
    let mut best = None;
    loop {
        let (done, progress) = check().await;
        if done {
            return;
        }
        if best.is_none_or(|b| progress > b) {
            best = Some(progress);
            stalled_since = std::time::Instant::now();
        }
        assert!(
            stalled_since.elapsed() < PATIENCE && start.elapsed() < 10 * PATIENCE,
            "gave up waiting for: {what} (got to {progress})"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it holds, for at most [`PATIENCE`]: for what has no event to wait on
/// (an actor passivating, a timer firing).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

fn answer(status: StatusCode, bytes: Vec<u8>) -> Answer {
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer { status, body, text }
}

/// Every event of a journal, sorted by sequence number.
pub fn stored_events(journal: &Journal) -> Vec<StoredEvent> {
    let mut events: Vec<StoredEvent> = journal
        .all_events()
        .collect::<Result<_, _>>()
        .expect("journal readable");
    events.sort_by_key(|e| e.seq);
    events
}

/// The `webhookEventId`s of stored events, in journal order.
pub fn stored_ids(events: &[StoredEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e.event.get()).unwrap();
            v["webhookEventId"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The linedesk binary running in a child process.
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
}

impl ServerProcess {
    /// Starts `linedesk serve` on `data` and waits for its `listening on` line.
    pub fn start(data: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(data, &[], env)
    }

    /// As [`ServerProcess::start`], with more command-line arguments (`--config FILE`).
    pub fn start_with(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        Self::start_command(data, &all, env)
    }

    /// Any command that serves and prints `listening on URL` first (`serve`, `demo`).
    pub fn start_command(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_linedesk"));
        command
            .args(args)
            .env_clear()
            .env("LINEDESK__SERVER__BIND", "127.0.0.1:0")
            .env("LINEDESK__SERVER__WORKERS", "2")
            // Open websockets hold a graceful stop up to this long.
            .env("LINEDESK__SERVER__SHUTDOWN_TIMEOUT_MS", "5000")
            .env("LINEDESK__STORAGE__PATH", data.join("db"))
            // As in `test_settings`.
            .env("LINEDESK__STORAGE__REDELIVERY_WINDOW_DAYS", "0")
            .env("LINEDESK__LINE__API_BASE", NO_LINE)
            .env("LINEDESK__LINE__DATA_API_BASE", NO_LINE)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Logs go to a file in the data folder, so tests can read them and output stays quiet.
            .stderr(std::fs::File::create(data.join("stderr.log")).expect("log file"));
        let mut child = command.spawn().expect("linedesk starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading so that the server never blocks on a full pipe.
            for _ in lines {}
        });
        let first = rx
            .recv_timeout(PATIENCE)
            .expect("linedesk printed a line in time")
            .expect("linedesk printed a line")
            .expect("stdout readable");
        let address = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line is `listening on ...`, got `{first}`"))
            .to_owned();
        Self { child, address }
    }

    /// What the server logged so far.
    pub fn logs(data: &Path) -> String {
        std::fs::read_to_string(data.join("stderr.log")).unwrap_or_default()
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits for the process to end.
    pub fn signal_and_wait(mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid} failed");
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait on child") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "linedesk did not exit after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens the stopped server's database to read what it stored.
    pub fn journal_of(data: &Path) -> Journal {
        let db = sled::open(data.join("db")).expect("database opens after the server stopped");
        Journal::open(db, &data.join("db"), linedesk::settings::Durability::Os)
            .expect("journal opens")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The error an overlay file of `toml` gets when the settings load (it must be refused).
pub fn refused_overlay(toml: &str) -> String {
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("overlay.toml");
    std::fs::write(&file, toml).expect("overlay written");
    Settings::load_from(Some(&file), std::iter::empty())
        .expect_err("the overlay is refused")
        .to_string()
}
