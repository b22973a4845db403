//! The dispatcher: sends what the outbox holds to LINE, at least once and in order per chat.
//!
//! In: [`OutboxQueued`] (the outbox stored a message), and the outbox itself at start-up (what
//! a crash or restart left unsent). Out: reply/push requests to LINE, the record's progress and
//! status back to the outbox, `delivery` events to the agent who wrote.
//!
//! A message goes with the customer's reply token when it is fresh and unused (free), else as a
//! push with its stored retry key (so LINE drops a repeat). Messages of one chat go one at a
//! time; different chats go concurrently up to `line.concurrency`, each account under its
//! token bucket. Retries back off with jitter on timeouts, 5xx and rate limits, for up to
//! `line.retry_window_ms`; a used-up monthly quota and other refusals are final.

use linedesk_actors::conversation::now_ms;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use linedesk_actors::agent::AgentEvent;
use linedesk_actors::domain::{AccountId, AgentId, DeliveryStatus, Origin};
use secrecy::{ExposeSecret, SecretString};

use crate::line::backoff::{jitter, Backoff};
use crate::line::client::{LineClient, LineError};
use crate::line::rate_limit::TokenBucket;
use crate::metrics::Metrics;
use crate::storage::{OutboxQueued, OutboxRecord, SentVia, SledOutbox};

use super::send_queue::{Next, SendQueue, Waiting};

/// How the dispatcher behaves; from `[line]`.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub reply_token_ttl: Duration,
    pub backoff: Backoff,
    pub retry_window: Duration,
    pub concurrency: usize,
    pub requests_per_second: f64,
    pub burst: u32,
}

/// Most records the dispatcher holds in memory: a LINE outage stops the sending while
/// agents go on writing, and what waits then stays on disk only (and is pushed: a record read
/// back never uses its reply token, see `OutboxRecord::reply_tried`).
const HELD_RECORDS_MAX: usize = 10_000;

struct AccountLine {
    access_token: SecretString,
    bucket: TokenBucket,
}

pub struct Dispatcher {
    outbox: SledOutbox,
    client: LineClient,
    accounts: HashMap<AccountId, AccountLine>,
    agents: Arc<HashMap<AgentId, Recipient<AgentEvent>>>,
    settings: DispatchSettings,
    metrics: Arc<Metrics>,
    /// Not delivered yet.
    queue: SendQueue,
    /// Records handed over with their notice, by send-order number, until their first
    /// attempt starts. Bounded by [`HELD_RECORDS_MAX`]; any other record is read from the
    /// outbox when its attempt starts (after a restart, a retry's backoff, or past the bound).
    held: HashMap<u64, Box<OutboxRecord>>,
    wake_at: Option<Instant>,
}

impl Dispatcher {
    pub fn new(
        outbox: SledOutbox,
        client: LineClient,
        tokens: Vec<(AccountId, SecretString)>,
        agents: Arc<HashMap<AgentId, Recipient<AgentEvent>>>,
        settings: DispatchSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let accounts = tokens
            .into_iter()
            .map(|(id, access_token)| {
                let bucket = TokenBucket::new(settings.requests_per_second, settings.burst);
                (
                    id,
                    AccountLine {
                        access_token,
                        bucket,
                    },
                )
            })
            .collect();
        Self {
            outbox,
            client,
            accounts,
            agents,
            settings,
            metrics,
            queue: SendQueue::default(),
            held: HashMap::new(),
            wake_at: None,
        }
    }

    fn track(&mut self, seq: u64, id: String) {
        match self.outbox.get(&id) {
            Ok(Some(record)) if !record.status.is_final() => {
                let waiting = Waiting {
                    id,
                    key: record.outgoing.key.clone(),
                    not_before_ms: record.next_attempt_at_ms,
                };
                self.queue.insert(seq, waiting);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error.message = %e, outgoing_id = %id, "unreadable outbox record; it stays unsent")
            }
        }
    }

    /// Starts every request that may go now, one account at a time in turn so that a busy
    /// account does not starve the others, and sets a timer for the earliest one that may go
    /// later.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        let mut next_wake: Option<i64> = None;
        let mut wake_at = |at: i64| next_wake = Some(next_wake.map_or(at, |w| w.min(at)));
        let mut accounts = self.queue.accounts();
        while !accounts.is_empty() && self.queue.in_flight() < self.settings.concurrency {
            // Each round starts at most one request per account.
            accounts.retain(|account| {
                if self.queue.in_flight() >= self.settings.concurrency {
                    return false;
                }
                let seq = match self.queue.next(account, now) {
                    Next::Ready(seq) => seq,
                    Next::Later(at) => {
                        wake_at(at);
                        return false;
                    }
                    Next::Empty => return false,
                };
                if let Some(line) = self.accounts.get_mut(account) {
                    if let Err(wait) = line.bucket.try_acquire(Instant::now()) {
                        wake_at(now + wait.as_millis() as i64 + 1);
                        return false;
                    }
                }
                // An account gone from the config goes on: `start` fails its messages.
                self.queue.take(seq);
                self.start(seq, ctx);
                true
            });
        }
        if let Some(at) = next_wake {
            let delay = Duration::from_millis((at - now).max(1) as u64);
            let when = Instant::now() + delay;
            if self.wake_at.is_none_or(|w| w > when || w <= Instant::now()) {
                self.wake_at = Some(when);
                ctx.run_later(delay, |act, ctx| {
                    act.wake_at = None;
                    act.pump(ctx);
                });
            }
        }
    }

    fn start(&mut self, seq: u64, ctx: &mut Context<Self>) {
        let Some(waiting) = self.queue.get(seq) else {
            return;
        };
        let stored = match self.held.remove(&seq) {
            Some(record) => Ok(Some(*record)),
            None => self.outbox.get(&waiting.id),
        };
        let record = match stored {
            Ok(Some(record)) => record,
            Ok(None) => {
                self.queue.done(seq, None);
                return;
            }
            Err(e) => {
                tracing::error!(error.message = %e, outgoing_id = %waiting.id, "unreadable outbox record; it stays unsent");
                self.queue.done(seq, None);
                return;
            }
        };
        let Some(account) = self.accounts.get(&record.outgoing.key.account) else {
            let reason = format!(
                "account `{}` is not configured any more",
                record.outgoing.key.account
            );
            self.finish(seq, record, Err(Failure::Final(reason)));
            return;
        };
        let token = account.access_token.expose_secret().to_owned();
        let client = self.client.clone();
        let reply_ttl = self.settings.reply_token_ttl;
        let send = async move { send(client, token, record, reply_ttl).await };
        ctx.spawn(
            send.into_actor(self)
                .map(move |(record, outcome), act, ctx| {
                    act.finish(seq, record, outcome);
                    act.pump(ctx);
                }),
        );
    }

    /// Records what happened to a message and tells its agent.
    fn finish(&mut self, seq: u64, mut record: OutboxRecord, outcome: Result<(), Failure>) {
        let now = now_ms();
        record.attempts += 1;
        let first = *record.first_attempt_at_ms.get_or_insert(now);
        let status = match outcome {
            Ok(()) => {
                let pushed = record
                    .requests
                    .iter()
                    .any(|r| r.sent == Some(SentVia::Push));
                if pushed {
                    self.metrics.line_sent(false);
                    DeliveryStatus::SentPush { at_ms: now }
                } else {
                    self.metrics.line_sent(true);
                    DeliveryStatus::SentReply { at_ms: now }
                }
            }
            Err(Failure::Retry(error)) => {
                let window = self.settings.retry_window.as_millis() as i64;
                if now - first >= window {
                    self.metrics.line_failed();
                    DeliveryStatus::Failed {
                        at_ms: now,
                        reason: format!("gave up after {} attempts: {error}", record.attempts),
                    }
                } else {
                    self.metrics.line_retried();
                    let delay = self
                        .settings
                        .backoff
                        .delay(record.attempts.saturating_sub(1), jitter());
                    record.next_attempt_at_ms = now + delay.as_millis() as i64;
                    tracing::warn!(
                        outgoing_id = %record.outgoing.id,
                        attempts = record.attempts,
                        retry_in_ms = delay.as_millis() as u64,
                        error.kind = error.kind(),
                        error.message = %error,
                        "LINE did not take a message; retrying"
                    );
                    DeliveryStatus::Queued {
                        attempts: record.attempts,
                        last_error: Some(error.to_string()),
                    }
                }
            }
            Err(Failure::Final(reason)) => {
                self.metrics.line_failed();
                tracing::warn!(outgoing_id = %record.outgoing.id, reason = %reason, "a message to LINE failed for good");
                DeliveryStatus::Failed { at_ms: now, reason }
            }
        };
        let tell = status.is_final() || record.attempts == 1;
        record.status = status.clone();
        if let Err(e) = self.outbox.update(&record) {
            // Unsaved progress means it is sent again after a restart; LINE drops the repeat
            // push by its retry key.
            tracing::error!(error.message = %e, outgoing_id = %record.outgoing.id, "could not save delivery progress");
        }
        let retry_at = (!status.is_final()).then_some(record.next_attempt_at_ms);
        self.queue.done(seq, retry_at);
        if let (
            Origin::Agent {
                agent,
                client_msg_id,
            },
            true,
        ) = (&record.outgoing.origin, tell)
        {
            if let Some(sink) = self.agents.get(agent) {
                sink.do_send(AgentEvent::Delivery {
                    conversation: record.outgoing.conversation.clone(),
                    client_msg_id: client_msg_id.clone(),
                    status,
                });
            }
        }
    }
}

enum Failure {
    Retry(LineError),
    Final(String),
}

/// Sends the record's remaining requests in order; stops at the first failure. Returns the
/// record with what was sent marked.
async fn send(
    client: LineClient,
    token: String,
    mut record: OutboxRecord,
    reply_ttl: Duration,
) -> (OutboxRecord, Result<(), Failure>) {
    while let Some(i) = record.next_request() {
        let reply_token = record
            .outgoing
            .reply_token
            .as_ref()
            .filter(|t| {
                !record.reply_tried
                    && i == 0
                    && now_ms() - t.received_at_ms < reply_ttl.as_millis() as i64
            })
            .map(|t| t.token.clone());
        if let Some(reply_token) = reply_token {
            // Nothing to save first: the stored record already says the token is not to be
            // tried again (see `OutboxRecord::reply_tried`).
            record.reply_tried = true;
            let messages = &record.requests[i].messages;
            match client.reply(&token, &reply_token, messages).await {
                Ok(_) => {
                    record.requests[i].sent = Some(SentVia::Reply);
                    continue;
                }
                // Refused for the message itself: a push would be refused too.
                Err(e @ LineError::Rejected { .. }) => {
                    return (record, Err(Failure::Final(e.to_string())));
                }
                // Token spent or expired, or no answer: push (with its retry key).
                Err(e) => {
                    tracing::debug!(error.kind = e.kind(), "reply failed; pushing instead")
                }
            }
        }
        let request = &record.requests[i];
        let Some(to) = record.outgoing.key.source.chat_id().map(str::to_owned) else {
            let reason = "this chat has no LINE id to push to".to_owned();
            return (record, Err(Failure::Final(reason)));
        };
        match client
            .push(&token, &to, &request.messages, &request.retry_key)
            .await
        {
            Ok(_) => record.requests[i].sent = Some(SentVia::Push),
            Err(e) if e.is_retryable() || matches!(e, LineError::Unauthorized { .. }) => {
                // A wrong token is an operator's fix away: keep the message until then.
                return (record, Err(Failure::Retry(e)));
            }
            Err(e) => return (record, Err(Failure::Final(e.to_string()))),
        }
    }
    (record, Ok(()))
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match self.outbox.pending() {
            Ok(pending) => {
                if !pending.is_empty() {
                    tracing::info!(
                        messages = pending.len(),
                        "sending what the outbox still holds"
                    );
                }
                for (seq, id) in pending {
                    self.track(seq, id);
                }
            }
            Err(e) => {
                tracing::error!(error.message = %e, "cannot read the outbox; unsent messages wait for the next start")
            }
        }
        self.pump(ctx);
    }
}

impl Handler<OutboxQueued> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: OutboxQueued, ctx: &mut Self::Context) {
        // Just stored, so not due to wait: no need to read the record back.
        let waiting = Waiting {
            id: msg.id,
            key: msg.key,
            not_before_ms: 0,
        };
        if self.held.len() < HELD_RECORDS_MAX && self.queue.get(msg.seq).is_none() {
            self.held.insert(msg.seq, msg.record);
        }
        self.queue.insert(msg.seq, waiting);
        self.pump(ctx);
    }
}
