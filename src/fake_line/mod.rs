//! A fake LINE platform on loopback, in place of LINE's servers for tests, the demo and the
//! load generator.
//!
//! Toward linedesk's LINE client it is the Messaging API (`api.line.me` and
//! `api-data.line.me` on one address): reply, push, profile, content, bot info and the webhook
//! endpoint operations, with LINE's status codes and error bodies, channel access tokens,
//! single-use reply tokens, `X-Line-Retry-Key` semantics, and request bodies checked against
//! LINE's own `messaging-api.yml`. Toward linedesk's webhook it is LINE sending events: bodies
//! signed with the channel secret, reply tokens the fake will honour, and simulated customers.
//!
//! Tests drive it in process through [`FakeLine`]; other processes use the control API under
//! `/_fake/` (see `control.rs`). It records every request and every accepted delivery, and can
//! be told to fail ([`Fault`]).
//!
//! Files: `server.rs` (the LINE routes and the request pipeline), `control.rs` (`/_fake/`),
//! `state.rs` (tokens, keys, profiles, content: the decisions), `requests.rs` (reading request
//! bodies), `responses.rs` (LINE's answers), `recorder.rs`, `faults.rs`, `webhooks.rs` (acting
//! as LINE toward linedesk), `customers.rs`, `schema.rs` (LINE's OpenAPI files), `ids.rs`.

mod control;
mod customers;
mod faults;
mod ids;
mod recorder;
mod requests;
pub mod responses;
pub mod schema;
mod server;
mod state;
mod webhooks;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{App, HttpServer};
use linedesk_actors::domain::AccountId;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::settings::{AccountSettings, Settings};

pub use customers::{CustomersReport, SimulatedCustomers, CUSTOMER_LINES};
pub use faults::{Fault, FaultAction};
pub use recorder::{
    Delivery, DeliveryHook, RecordedRequest, Recorder, SentMessage, Via, MAX_RECORDED,
};
pub use state::{Profile, MAX_REPLY_TOKENS, MAX_RETRY_KEYS, RETRY_KEY_VALIDITY};
pub use webhooks::{SentText, WebhookError};

use state::{Content, Shared};

/// One LINE channel (Official Account) the fake serves.
#[derive(Debug, Clone)]
pub struct FakeChannel {
    pub account_id: AccountId,
    /// What `Authorization: Bearer` must carry for this channel.
    pub access_token: SecretString,
    /// Signs the webhooks the fake sends for this channel.
    pub channel_secret: SecretString,
    /// The bot's user id: `destination` of the webhooks, `userId` of the bot info.
    pub bot_user_id: String,
}

impl FakeChannel {
    /// A channel whose bot user id is derived from the account id.
    pub fn new(
        account_id: AccountId,
        access_token: impl Into<String>,
        channel_secret: impl Into<String>,
    ) -> FakeChannel {
        let bot_user_id = ids::stable_user_id(&format!("bot/{account_id}"));
        FakeChannel {
            account_id,
            access_token: SecretString::from(access_token.into()),
            channel_secret: SecretString::from(channel_secret.into()),
            bot_user_id,
        }
    }

    /// The channel of a configured linedesk account, with the same token and secret.
    pub fn from_account(account: &AccountSettings) -> FakeChannel {
        FakeChannel::new(
            account.id.clone(),
            account.channel_access_token.expose_secret(),
            account.channel_secret.expose_secret(),
        )
    }
}

/// How the fake platform runs.
#[derive(Debug, Clone)]
pub struct FakeLineConfig {
    /// Where to listen: a loopback address only (`127.0.0.1:0` picks a free port).
    pub bind: SocketAddr,
    pub channels: Vec<FakeChannel>,
    /// linedesk's base URL (`http://127.0.0.1:PORT`): account `a`'s webhooks go to
    /// `{target}/line/webhook/a`. Loopback only. Can be set later with
    /// [`FakeLine::set_webhook_target`].
    pub webhook_target: Option<String>,
    /// How long a reply token stays valid after it is issued (LINE: one minute). Zero makes
    /// every token expire at once.
    pub reply_token_ttl: Duration,
    /// Check request bodies against `messaging-api.yml` (on by default).
    pub schema_check: bool,
    /// `language` of generated profiles.
    pub default_language: String,
    /// How long the fake waits for linedesk to answer a webhook.
    pub webhook_timeout: Duration,
    /// Latency added to every LINE API request (changed later with [`FakeLine::set_latency`]).
    pub latency: Duration,
    /// HTTP worker threads.
    pub workers: usize,
}

impl Default for FakeLineConfig {
    fn default() -> Self {
        FakeLineConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            channels: Vec::new(),
            webhook_target: None,
            reply_token_ttl: Duration::from_secs(60),
            schema_check: true,
            default_language: "ja".to_owned(),
            webhook_timeout: Duration::from_secs(10),
            latency: Duration::ZERO,
            workers: 1,
        }
    }
}

impl FakeLineConfig {
    /// The defaults, with one channel per account of `settings` (same tokens and secrets).
    pub fn from_settings(settings: &Settings) -> FakeLineConfig {
        FakeLineConfig {
            channels: settings
                .accounts
                .iter()
                .map(FakeChannel::from_account)
                .collect(),
            ..FakeLineConfig::default()
        }
    }
}

/// Waiting on the fake ended without what was waited for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {waited:?} ({requests} requests and {deliveries} deliveries recorded)")]
pub struct WaitError {
    pub waited: Duration,
    pub requests: usize,
    pub deliveries: usize,
}

/// A running fake LINE platform. Cloning gives another handle on the same platform.
#[derive(Clone)]
pub struct FakeLine {
    shared: Arc<Shared>,
    address: SocketAddr,
    handle: ServerHandle,
}

impl FakeLine {
    /// Binds `config.bind` and starts serving. Must be called inside an actix system (in tests,
    /// `#[actix_web::test]`). Refuses non-loopback addresses and webhook targets.
    pub fn start(config: FakeLineConfig) -> io::Result<FakeLine> {
        if !config.bind.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the fake LINE platform only listens on loopback addresses (127.0.0.1, ::1), \
                     not {}",
                    config.bind
                ),
            ));
        }
        if let Some(target) = &config.webhook_target {
            webhooks::check_loopback_url(target)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        let listener = TcpListener::bind(config.bind)?;
        let address = listener.local_addr()?;
        let workers = config.workers.max(1);
        let shared = Arc::new(Shared::new(config));
        let data = server::data(Arc::clone(&shared));
        let server =
            HttpServer::new(move || App::new().app_data(data.clone()).configure(server::routes))
                .workers(workers)
                .disable_signals()
                .shutdown_timeout(1)
                .on_connect(server::keep_socket)
                .listen(listener)?
                .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        tracing::info!(%address, "fake LINE platform listening");
        Ok(FakeLine {
            shared,
            address,
            handle,
        })
    }

    /// Stops serving at once; requests in flight are dropped.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:PORT`: linedesk's LINE API base URL (and data API base URL).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn config(&self) -> &FakeLineConfig {
        &self.shared.config
    }

    /// Every recorded request, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().recorder.requests().cloned().collect()
    }

    /// Every accepted delivery, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().recorder.deliveries().cloned().collect()
    }

    /// Forgets the recorded requests and deliveries.
    pub fn reset(&self) {
        self.shared.lock().reset_recording();
        self.shared.notify();
    }

    /// Calls `hook` with every delivery accepted from now on, as it is accepted: for observers
    /// that can't afford to poll the recording (the load generator timing agent replies).
    pub fn on_delivery(&self, hook: DeliveryHook) {
        self.shared.lock().recorder.on_delivery(hook);
    }

    /// Adds a fault; it applies to the next matching requests.
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.inject(fault);
    }

    /// The faults not yet used up.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.shared.lock().faults.pending()
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Latency added to every LINE API request from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// The profile served for `profile.user_id` from now on.
    pub fn register_profile(&self, profile: Profile) {
        self.shared.lock().register_profile(profile);
    }

    /// The user blocked the account (or is not a friend): their profile answers 404.
    pub fn block_user(&self, user_id: &str) {
        self.shared.lock().block_user(user_id);
    }

    pub fn unblock_user(&self, user_id: &str) {
        self.shared.lock().unblock_user(user_id);
    }

    /// What `GET /v2/bot/message/{message_id}/content` (and `/preview`) serves.
    pub fn register_content(&self, message_id: &str, content_type: &str, bytes: impl Into<Bytes>) {
        let content = Content {
            content_type: content_type.to_owned(),
            bytes: bytes.into(),
        };
        self.shared.lock().register_content(message_id, content);
    }

    /// A fresh reply token for `user_id` on the first channel, as if a webhook carried it.
    ///
    /// # Panics
    /// If no channel is configured.
    pub fn issue_reply_token(&self, user_id: &str) -> String {
        let account = self.default_account();
        self.shared
            .lock()
            .issue_reply_token(&account, user_id, Instant::now())
    }

    /// Sets linedesk's base URL, where webhooks go (`{target}/line/webhook/{account}`).
    pub fn set_webhook_target(&self, target: Option<String>) -> Result<(), WebhookError> {
        if let Some(target) = &target {
            webhooks::check_loopback_url(target)?;
        }
        self.shared.lock().webhook_target = target;
        Ok(())
    }

    /// Where `account`'s webhooks go, if anywhere.
    pub fn webhook_url(&self, account: &str) -> Option<String> {
        self.shared.lock().webhook_url(account)
    }

    /// A text message event from `user_id`, sent now, with a fresh reply token the fake issued
    /// for that user on `account` (so a reply with it is delivered to `user_id`).
    pub fn text_event(&self, account: &str, user_id: &str, text: &str) -> Value {
        self.shared.text_event(account, user_id, text)
    }

    /// Signs `{"destination", "events"}` with `account`'s channel secret and POSTs it to the
    /// account's webhook URL; returns what linedesk answered.
    pub async fn send_webhook(
        &self,
        account: &str,
        events: Vec<Value>,
    ) -> Result<StatusCode, WebhookError> {
        self.shared
            .send_webhook(&webhooks::client(), account, events)
            .await
    }

    /// Sends a text message from `user_id` to the first channel's account.
    ///
    /// # Panics
    /// If no channel is configured.
    pub async fn send_text_as(&self, user_id: &str, text: &str) -> Result<SentText, WebhookError> {
        let account = self.default_account();
        self.shared
            .send_text_as(&webhooks::client(), &account, user_id, text)
            .await
    }

    /// Waits until at least `n` deliveries are recorded; returns them all.
    pub async fn wait_for_deliveries(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>, WaitError> {
        self.wait_until(|recorder| recorder.deliveries().len() >= n, timeout)
            .await?;
        Ok(self.deliveries())
    }

    /// Waits until `done` holds for the recording; checked at once and whenever a request or
    /// delivery is recorded (or a request answered), never by polling.
    pub async fn wait_until(
        &self,
        mut done: impl FnMut(&Recorder) -> bool,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut changed = std::pin::pin!(self.shared.changed.notified());
            // Registered before the check, so a change between check and wait is not missed.
            changed.as_mut().enable();
            if done(&self.shared.lock().recorder) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let state = self.shared.lock();
                if done(&state.recorder) {
                    return Ok(());
                }
                return Err(WaitError {
                    waited: timeout,
                    requests: state.recorder.requests().len(),
                    deliveries: state.recorder.deliveries().len(),
                });
            }
        }
    }

    fn default_account(&self) -> String {
        // expect: documented on the callers; a fake without channels can't send or reply.
        self.shared
            .default_account()
            .expect("the fake LINE platform has at least one channel")
            .to_owned()
    }
}

#[cfg(test)]
mod tests;
