//! The load as LINE sends it: signed webhooks of text events to
//! `POST {target}/line/webhook/{account}`, paced by the open-loop schedule or sent back to back
//! on each connection (closed loop). Request `k` carries customer messages
//! `k * events_per_request ..`; message `n` comes from user `n % users` and its text carries the
//! marker `lg-{run}-{n}`.

use std::cell::Cell;
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

use awc::error::SendRequestError;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::markers::{Marker, RunId};
use super::schedule::OpenLoop;
use super::Run;
use crate::fake_line::FakeLine;
use crate::line::signature;

/// The bot's user id in `destination` (linedesk does not check it).
const DESTINATION: &str = "U0123456789abcdef0123456789abcdef";

/// One signed webhook request.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub body: Vec<u8>,
    /// The `x-line-signature` header.
    pub signature: String,
    /// The customer messages it carries.
    pub events: Range<u64>,
}

/// Builds the run's webhooks.
pub struct WebhookFactory {
    run: RunId,
    secret: SecretString,
    users: u64,
    events_per_request: u32,
    /// The embedded fake LINE platform, which issues the events' reply tokens (so linedesk's
    /// replies with them are delivered, as LINE would).
    line: Option<FakeLine>,
}

impl WebhookFactory {
    pub fn new(run: RunId, secret: SecretString, users: u64, events_per_request: u32) -> Self {
        Self {
            run,
            secret,
            users: users.max(1),
            events_per_request,
            line: None,
        }
    }

    /// Reply tokens come from `line` from now on.
    pub fn with_line(mut self, line: Option<FakeLine>) -> Self {
        self.line = line;
        self
    }

    /// The LINE user id (`U` + 32 hex) who writes customer message `n`: the run id, then the
    /// user's number, so that each run has customers of its own.
    pub fn user_id(&self, n: u64) -> String {
        format!("U{}{:024x}", self.run, n % self.users)
    }

    pub fn events_of(&self, request: u64) -> Range<u64> {
        let per = u64::from(self.events_per_request);
        request * per..(request + 1) * per
    }

    /// Request `request`: its text events, signed with the channel secret.
    pub fn build(&self, request: u64) -> Webhook {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let events = self.events_of(request);
        let run = self.run.0;
        let list: Vec<TextEvent> = events
            .clone()
            .map(|n| {
                let user_id = self.user_id(n);
                TextEvent {
                    kind: "message",
                    mode: "active",
                    timestamp: now_ms,
                    reply_token: match &self.line {
                        Some(line) => line.issue_reply_token(&user_id),
                        None => format!("{run:08x}{n:024x}"),
                    },
                    source: Source {
                        kind: "user",
                        user_id,
                    },
                    webhook_event_id: ulid(now_ms, (u64::from(run) << 40) | (n & 0xff_ffff_ffff)),
                    delivery_context: DeliveryContext {
                        is_redelivery: false,
                    },
                    message: TextMessage {
                        kind: "text",
                        id: format!("{:06}{:012}", run % 1_000_000, n % 1_000_000_000_000),
                        quote_token: format!("q{run:08x}{n:016x}"),
                        text: format!("hello from loadgen {}", Marker::Customer(n).text(self.run)),
                    },
                }
            })
            .collect();
        // Typed, not a `serde_json::Value` tree: the load generator shares the machine with
        // the server it measures, so its own CPU is kept low.
        // unwrap: strings and integers serialise to JSON without fail.
        let body = serde_json::to_vec(&Callback {
            destination: DESTINATION,
            events: list,
        })
        .unwrap();
        let signature = signature::sign(self.secret.expose_secret().as_bytes(), &body);
        Webhook {
            body,
            signature,
            events,
        }
    }
}

/// The webhook body, as LINE sends it (field names and order as in LINE's examples).
#[derive(Serialize)]
struct Callback {
    destination: &'static str,
    events: Vec<TextEvent>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TextEvent {
    #[serde(rename = "type")]
    kind: &'static str,
    mode: &'static str,
    timestamp: u64,
    source: Source,
    webhook_event_id: String,
    reply_token: String,
    delivery_context: DeliveryContext,
    message: TextMessage,
}

#[derive(Serialize)]
struct Source {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "userId")]
    user_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryContext {
    is_redelivery: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TextMessage {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    quote_token: String,
    text: String,
}

/// A ULID as LINE's `webhookEventId`s are: 48 bits of milliseconds, then 80 bits that here hold
/// the run and the message number, so ids never repeat within or across runs.
fn ulid(timestamp_ms: u64, unique: u64) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let value = (u128::from(timestamp_ms & 0xffff_ffff_ffff) << 80) | u128::from(unique);
    (0..26)
        .rev()
        .map(|i| char::from(ALPHABET[((value >> (i * 5)) & 0x1f) as usize]))
        .collect()
}

/// Builds request `request`, due at `intended`, and counts it as on its way.
fn begin(run: &Run, request: u64, intended: Instant) -> Webhook {
    let hook = run.factory.build(request);
    let mut state = run.state.borrow_mut();
    state.tracker.sending(hook.events.clone(), intended);
    let r = &mut state.recorder;
    r.requests_sent += 1;
    r.events_sent += hook.events.end - hook.events.start;
    r.first_intended.get_or_insert(intended);
    hook
}

/// Sends a webhook that [`begin`] counted, and records its outcome.
async fn finish(run: &Run, client: &awc::Client, hook: Webhook, intended: Instant) {
    let lag = Instant::now().saturating_duration_since(intended);
    run.state.borrow_mut().recorder.send_lag.record(lag);
    let events = hook.events.clone();
    let count = events.end - events.start;
    let answer = client
        .post(&run.webhook_url)
        .insert_header(("content-type", "application/json; charset=utf-8"))
        .insert_header(("user-agent", "LineBotWebhook/2.0"))
        .insert_header(("x-line-signature", hook.signature))
        .send_body(hook.body)
        .await;
    let outcome = match answer {
        Ok(mut response) => {
            let status = response.status();
            // Read the (small) body so that the connection can carry the next request.
            match response.body().limit(1 << 20).await {
                Ok(_) if status.is_success() => Ok(()),
                Ok(_) => Err(Failure::Status(status.as_u16())),
                Err(e) => Err(Failure::Other(e.to_string())),
            }
        }
        Err(SendRequestError::Timeout) => Err(Failure::Timeout),
        Err(SendRequestError::Connect(e)) => Err(Failure::Connect(e.to_string())),
        Err(e) => Err(Failure::Other(e.to_string())),
    };
    let now = Instant::now();
    let mut state = run.state.borrow_mut();
    state.tracker.answered(events, outcome.is_ok());
    let r = &mut state.recorder;
    r.last_answer = Some(now);
    match outcome {
        Ok(()) => {
            r.requests_ok += 1;
            r.events_ok += count;
            r.webhook.record(now.saturating_duration_since(intended));
        }
        Err(Failure::Status(code)) => r.errors.http_status(code),
        Err(Failure::Timeout) => r.errors.timeout(),
        Err(Failure::Connect(why)) => r.errors.connect(why),
        Err(Failure::Other(why)) => r.errors.other_http(why),
    }
    drop(state);
    run.changed.notify_one();
}

enum Failure {
    Status(u16),
    Timeout,
    Connect(String),
    Other(String),
}

/// Up to this rate (requests ≥ 1 ms apart) the open loop is paced by a thread of its own
/// ([`OpenLoop::pace`]): tokio's 1 ms timer made each send 0.6–1.3 ms late (p50) at 500/s,
/// the thread 0.11 ms. Faster, the thread's wake-up per request cost loadgen 10–20% more CPU
/// at 2,500–5,000/s, on the cores the server needs; there tokio's timer paces, each tick
/// sending all that fell due.
const PACED_BY_THREAD_UP_TO: f64 = 1000.0;

/// Sends requests `first..first + count` at the schedule's pace from `start`, each on its own
/// task so that a slow answer never delays the next request. Returns when all are answered.
pub(super) async fn open_loop(
    run: Rc<Run>,
    client: awc::Client,
    schedule: OpenLoop,
    start: Instant,
    first: u64,
    count: u64,
) {
    let send = |due: Range<u64>| {
        for k in due {
            let intended = start + schedule.intended(k);
            // Counted before the task runs, so that waiting for the answers below sees it.
            let hook = begin(&run, first + k, intended);
            let (run, client) = (run.clone(), client.clone());
            actix_web::rt::spawn(async move { finish(&run, &client, hook, intended).await });
        }
    };
    if schedule.rate() <= PACED_BY_THREAD_UP_TO {
        let mut due_now = schedule.pace(start, count);
        while let Some(due) = due_now.recv().await {
            send(due);
        }
    } else {
        let mut sent = 0;
        while sent < count {
            actix_web::rt::time::sleep_until((start + schedule.intended(sent)).into()).await;
            let due = schedule.due(sent, start.elapsed(), count);
            sent = due.end;
            send(due);
        }
    }
    run.wait_for(|s| s.tracker.webhooks_in_flight() == 0, None)
        .await;
}

/// Sends requests `first..first + count` over `connections` connections, each sending its
/// next request when the last is answered, until `count` are sent or `deadline` passes.
pub(super) async fn closed_loop(
    run: Rc<Run>,
    client: awc::Client,
    connections: usize,
    first: u64,
    count: u64,
    deadline: Instant,
) {
    let next = Rc::new(Cell::new(0u64));
    let workers = (0..connections).map(|_| {
        let (run, client, next) = (run.clone(), client.clone(), next.clone());
        async move {
            loop {
                let k = next.get();
                if k >= count || Instant::now() >= deadline {
                    break;
                }
                next.set(k + 1);
                let intended = Instant::now();
                let hook = begin(&run, first + k, intended);
                finish(&run, &client, hook, intended).await;
            }
        }
    });
    futures_util::future::join_all(workers).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn webhooks_are_signed_line_callbacks_with_unique_ids_and_valid_user_ids() {
        let run = RunId(0x0bad_cafe);
        let factory = WebhookFactory::new(run, "secret".to_owned().into(), 3, 2);
        let mut ids = HashSet::new();
        let mut users = HashSet::new();
        for request in 0..5 {
            let hook = factory.build(request);
            assert_eq!(hook.events, request * 2..request * 2 + 2);
            signature::verify(b"secret", &hook.body, Some(hook.signature.as_bytes()))
                .expect("signature verifies");
            let body: serde_json::Value = serde_json::from_slice(&hook.body).unwrap();
            let events = body["events"].as_array().unwrap();
            assert_eq!(events.len(), 2);
            for (event, n) in events.iter().zip(hook.events.clone()) {
                let parsed = crate::line::events::parse_event(&event.to_string())
                    .expect("linedesk parses the event");
                assert_eq!(parsed.type_name(), "message");
                let user = parsed
                    .source
                    .as_ref()
                    .unwrap()
                    .user_id()
                    .unwrap()
                    .to_owned();
                assert_eq!(user.len(), 33);
                assert!(user.starts_with('U'));
                assert!(user[1..].bytes().all(|b| b.is_ascii_hexdigit()));
                users.insert(user);
                let id = event["webhookEventId"].as_str().unwrap();
                assert_eq!(id.len(), 26);
                assert!(ids.insert(id.to_owned()), "{id} repeated");
                let text = event["message"]["text"].as_str().unwrap();
                assert_eq!(
                    crate::loadgen::markers::find_all(text, run),
                    [Marker::Customer(n)]
                );
            }
        }
        assert_eq!(users.len(), 3);
    }
}
