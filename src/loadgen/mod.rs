//! `linedesk loadgen`: drives a running linedesk on this machine as LINE and agents do, and
//! reports what it measured.
//!
//! A run: refuse a target off this machine; check `/healthz`; sign in `--agents` websocket
//! agents ([`agents`]) and wait until each is available; optionally warm up (every user writes
//! once and the run waits until agents have answered them all, unmeasured); then send signed
//! webhooks ([`webhooks`]) for `--duration` (or `--max-requests`), in open loop at `--rate` or
//! closed loop over `--connections`; wait for the answers and at most `--drain-ms` for messages
//! to reach agents and replies to be acknowledged ([`tracker`]); and build the [`Report`].
//! `/metrics` is scraped before, once a second during, and after the measured phase
//! ([`metrics_scrape`]).
//!
//! Everything runs as tasks on the caller's actix system (awc is `!Send`); the state they share
//! lives in one [`Run`] behind a `RefCell`. Deliveries of agents' replies to LINE come in
//! through [`Options::line_deliveries`] as [`LineDelivery`] values from whoever observes them;
//! with [`Options::line`] the run embeds the fake LINE platform ([`embedded_line`]) and observes
//! them itself: a hook on the fake sends each delivered marker as it is accepted, and the fake
//! issues the webhooks' reply tokens.

mod agents;
pub mod command;
pub mod markers;
mod metrics_scrape;
pub mod report;
mod schedule;
mod target;
mod tracker;
mod webhooks;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::{mpsc, watch, Notify};

pub use agents::{agent_token, agents_config};
pub use command::LoadgenArgs;
pub use markers::find_marker;
pub use metrics_scrape::ServerReport;
pub use report::{Report, WarmupReport};
pub use schedule::OpenLoop;
pub use target::Target;

use crate::fake_line::{FakeChannel, FakeLine, FakeLineConfig};
use crate::metrics::ProcessStats;
use crate::settings::AccountSettings;
use markers::{Marker, RunId};
use metrics_scrape::ServerSample;
use report::{EventCounts, Latencies, Mode, Recorder, RequestCounts};
use tracker::Tracker;
use webhooks::WebhookFactory;

/// An agent's reply observed at the fake LINE platform: `marker` is the `lg-{run}-r{n}` found
/// in the delivered text (see [`find_marker`]), `at` when it arrived. Send these through the
/// channel given as [`Options::line_deliveries`]; the run then measures agent `send` → LINE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineDelivery {
    pub marker: String,
    pub at: Instant,
}

/// How webhooks are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// `rate` requests per second, whatever the answers; latency counts from each request's
    /// intended send time.
    Open { rate: f64 },
    /// Each of `connections` sends its next request when the last is answered.
    Closed,
}

/// What to run. [`Options::new`] gives the defaults of the command line.
pub struct Options {
    /// Base URL of a linedesk on a loopback address, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    pub account: String,
    /// The account's channel secret, to sign webhooks with.
    pub secret: SecretString,
    /// Distinct LINE users writing.
    pub users: u64,
    pub events_per_request: u32,
    pub load: Load,
    /// HTTP connections for webhooks (the closed loop's workers; the open loop's pool).
    pub connections: usize,
    /// How long the measured phase sends.
    pub duration: Duration,
    /// At most this many webhooks in the measured phase.
    pub max_requests: Option<u64>,
    /// Every user writes once first, unmeasured, and agents answer before measuring starts.
    pub warmup: bool,
    pub agents: u32,
    /// How long an agent waits before answering a customer message.
    pub think: Duration,
    /// Per webhook request, and for agents to connect.
    pub timeout: Duration,
    /// After sending, how long to wait for messages to reach agents and replies to be acked.
    pub drain: Duration,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
    /// Deliveries of agents' replies at the fake LINE, if one is observed.
    pub line_deliveries: Option<mpsc::UnboundedReceiver<LineDelivery>>,
    /// A fake LINE platform the target sends to (see [`embedded_line`]): the run observes its
    /// deliveries (in place of `line_deliveries`) and has it issue the reply tokens.
    pub line: Option<FakeLine>,
}

/// Starts the fake LINE platform for a run on `bind` (loopback; port 0 picks one), serving
/// `account`'s channel with its access token and secret. Point the server under test at it
/// (`line.api_base` and `line.data_api_base`, or `LINEDESK__LINE__API_BASE`) and pass it as
/// [`Options::line`]. Request bodies are not checked against LINE's schema, to keep the fake
/// cheap next to the load it measures. Must be called inside an actix system.
pub fn embedded_line(bind: SocketAddr, account: &AccountSettings) -> io::Result<FakeLine> {
    FakeLine::start(FakeLineConfig {
        bind,
        channels: vec![FakeChannel::from_account(account)],
        schema_check: false,
        ..FakeLineConfig::default()
    })
}

impl Options {
    pub fn new(target: impl Into<String>, secret: SecretString) -> Self {
        Self {
            target: target.into(),
            account: "demo".into(),
            secret,
            users: 1000,
            events_per_request: 1,
            load: Load::Closed,
            connections: 64,
            duration: Duration::from_secs(10),
            max_requests: None,
            warmup: false,
            agents: 0,
            think: Duration::ZERO,
            timeout: Duration::from_secs(10),
            drain: Duration::from_secs(5),
            progress: false,
            line_deliveries: None,
            line: None,
        }
    }

    fn check(&self) -> Result<(), LoadgenError> {
        let bad = |why: &str| Err(LoadgenError::BadOptions(why.into()));
        if let Load::Open { rate } = self.load {
            if !(rate.is_finite() && rate > 0.0) {
                return bad("--rate must be a number above 0");
            }
        }
        if self.users == 0 {
            return bad("--users must be at least 1");
        }
        if !(1..=1000).contains(&self.events_per_request) {
            return bad("--events-per-request must be 1 to 1000");
        }
        if self.connections == 0 {
            return bad("--connections must be at least 1");
        }
        if self.duration.is_zero() {
            return bad("--duration must be above 0");
        }
        if self.timeout.is_zero() {
            return bad("--timeout-ms must be above 0");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error(
        "refusing to load `{host}`: loadgen only drives a linedesk on this machine \
         (localhost, 127.0.0.0/8 or ::1)"
    )]
    NotLoopback { host: String },
    #[error("bad --target {0}")]
    BadTarget(String),
    #[error("{0}")]
    BadOptions(String),
    #[error("no linedesk answers at {target}: {why}")]
    Unreachable { target: String, why: String },
    #[error("agent `{token}`: {why}")]
    Agent { token: String, why: String },
}

/// What the tasks of a run share.
struct Shared {
    recorder: Recorder,
    tracker: Tracker,
    samples: Vec<ServerSample>,
    scrape_errors: u64,
}

/// One run: its fixed parts and the shared state.
struct Run {
    id: RunId,
    target: Target,
    webhook_url: String,
    think: Duration,
    factory: WebhookFactory,
    state: RefCell<Shared>,
    /// Woken when something on its way arrives or fails.
    changed: Notify,
}

impl Run {
    /// Waits until `done` holds, or `deadline` passes; says whether it holds.
    async fn wait_for(&self, done: impl Fn(&Shared) -> bool, deadline: Option<Instant>) -> bool {
        loop {
            if done(&self.state.borrow()) {
                return true;
            }
            match deadline {
                Some(deadline) if Instant::now() >= deadline => return false,
                Some(deadline) => {
                    tokio::select! {
                        _ = self.changed.notified() => {}
                        _ = actix_web::rt::time::sleep_until(deadline.into()) => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// Runs the load described by `options` and reports what it measured.
pub async fn run(mut options: Options) -> Result<Report, LoadgenError> {
    let target = Target::parse(&options.target)?;
    options.check()?;
    let side = awc::Client::builder().timeout(options.timeout).finish();
    check_health(&side, &target).await?;

    let id = RunId::fresh();
    if let Some(line) = &options.line {
        let (deliveries, observed) = mpsc::unbounded_channel();
        line.on_delivery(Arc::new(move |delivery| {
            let at = Instant::now();
            for text in delivery.texts() {
                if let Some(marker) = find_marker(text) {
                    let marker = marker.to_owned();
                    let _ = deliveries.send(LineDelivery { marker, at });
                }
            }
        }));
        options.line_deliveries = Some(observed);
    }
    let observe_line = options.line_deliveries.is_some();
    let run = Rc::new(Run {
        id,
        webhook_url: target.url(&format!("/line/webhook/{}", options.account)),
        target: target.clone(),
        think: options.think,
        factory: WebhookFactory::new(
            id,
            options.secret.clone(),
            options.users,
            options.events_per_request,
        )
        .with_line(options.line.clone()),
        state: RefCell::new(Shared {
            recorder: Recorder::default(),
            tracker: Tracker::new(options.agents > 0, observe_line),
            samples: Vec::new(),
            scrape_errors: 0,
        }),
        changed: Notify::new(),
    });
    if let Some(deliveries) = options.line_deliveries.take() {
        actix_web::rt::spawn(observe_deliveries(run.clone(), deliveries));
    }
    let webhook_client = awc::Client::builder()
        .timeout(options.timeout)
        .connector(awc::Connector::new().limit(options.connections))
        .finish();

    let agents = if options.agents > 0 {
        Some(agents::AgentPool::start(run.clone(), options.agents, options.timeout).await?)
    } else {
        None
    };
    let phase = Rc::new(Cell::new(("warm-up", Instant::now())));
    let (stop_monitor, monitor_stopped) = watch::channel(false);
    let monitor = actix_web::rt::spawn(monitor(
        run.clone(),
        side.clone(),
        options.progress,
        phase.clone(),
        monitor_stopped,
    ));

    let mut next_request = 0;
    let warmup = if options.warmup {
        let requests = options
            .users
            .div_ceil(u64::from(options.events_per_request));
        let started = Instant::now();
        webhooks::closed_loop(
            run.clone(),
            webhook_client.clone(),
            options.connections,
            next_request,
            requests,
            started + options.duration,
        )
        .await;
        let settled = run
            .wait_for(
                |s| s.tracker.settled(),
                Some(Instant::now() + options.drain),
            )
            .await;
        let mut state = run.state.borrow_mut();
        let warm = std::mem::take(&mut state.recorder);
        state.tracker.start_phase();
        next_request += warm.requests_sent;
        Some(WarmupReport {
            requests: warm.requests_sent,
            errors: warm.errors.total,
            seconds: started.elapsed().as_secs_f64(),
            settled,
        })
    } else {
        None
    };

    // The measured phase.
    run.state.borrow_mut().recorder.agents.connected = options.agents;
    let before = metrics_scrape::scrape(&side, &target).await;
    record_sample(&run, before);
    let cpu_before = ProcessStats::read();
    let started = Instant::now();
    phase.set(("load", started));
    let deadline = started + options.duration;
    let limit = options.max_requests.unwrap_or(u64::MAX);
    match options.load {
        Load::Open { rate } => {
            let schedule = OpenLoop::new(rate);
            let count = schedule.count_within(options.duration).min(limit);
            webhooks::open_loop(
                run.clone(),
                webhook_client,
                schedule,
                started,
                next_request,
                count,
            )
            .await;
        }
        Load::Closed => {
            webhooks::closed_loop(
                run.clone(),
                webhook_client,
                options.connections,
                next_request,
                limit,
                deadline,
            )
            .await;
        }
    }
    phase.set(("drain", Instant::now()));
    run.wait_for(
        |s| s.tracker.settled(),
        Some(Instant::now() + options.drain),
    )
    .await;
    let _ = stop_monitor.send(true);
    let _ = tokio::time::timeout(options.timeout, monitor).await;
    let after = metrics_scrape::scrape(&side, &target).await;
    record_sample(&run, after);
    let cpu_after = ProcessStats::read();
    if let Some(agents) = agents {
        agents.stop(options.timeout).await;
    }

    let state = run.state.borrow();
    let r = &state.recorder;
    let elapsed = match (r.first_intended, r.last_answer) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => started.elapsed(),
    }
    .as_secs_f64()
    .max(1e-6);
    let intended = match options.load {
        Load::Open { rate } => Some(rate),
        Load::Closed => None,
    };
    let mut agent_activity = r.agents.clone();
    if options.agents > 0 {
        agent_activity.messages_unseen = state.tracker.unseen();
        agent_activity.replies_unacked = state.tracker.unacked();
        agent_activity.replies_not_delivered = state.tracker.undelivered();
    }
    Ok(Report {
        run: id.to_string(),
        target: target.to_string(),
        account: options.account,
        mode: match options.load {
            Load::Open { .. } => Mode::OpenLoop,
            Load::Closed => Mode::ClosedLoop,
        },
        connections: options.connections,
        users: options.users,
        events_per_request: options.events_per_request,
        agents: options.agents,
        think_ms: options.think.as_millis() as u64,
        warmup,
        elapsed_s: elapsed,
        requests: RequestCounts {
            sent: r.requests_sent,
            ok: r.requests_ok,
            failed: r.requests_sent - r.requests_ok,
            per_second: r.requests_ok as f64 / elapsed,
            intended_per_second: intended,
        },
        events: EventCounts {
            sent: r.events_sent,
            accepted: r.events_ok,
            per_second: r.events_ok as f64 / elapsed,
            intended_per_second: intended.map(|rate| rate * f64::from(options.events_per_request)),
        },
        latency_ms: Latencies {
            webhook: r.webhook.summary(),
            send_lag: r.send_lag.summary(),
            customer_to_offer: r.customer_to_offer.summary(),
            customer_to_message: r.customer_to_message.summary(),
            agent_send_to_ack: r.agent_send_to_ack.summary(),
            agent_send_to_line: r.agent_send_to_line.summary(),
        },
        agent_activity,
        errors: r.errors.clone(),
        server: ServerReport::from_samples(&state.samples, state.scrape_errors),
        loadgen_cpu_seconds: cpu_before
            .zip(cpu_after)
            .map(|(a, b)| b.cpu_seconds - a.cpu_seconds),
    })
}

async fn check_health(client: &awc::Client, target: &Target) -> Result<(), LoadgenError> {
    let unreachable = |why: String| LoadgenError::Unreachable {
        target: target.to_string(),
        why,
    };
    let response = client
        .get(target.url("/healthz"))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !response.status().is_success() {
        return Err(unreachable(format!(
            "GET /healthz answered {}",
            response.status()
        )));
    }
    Ok(())
}

/// Keeps a scrape of the measured phase (or counts its failure).
fn record_sample(run: &Run, sample: Result<ServerSample, String>) {
    let mut state = run.state.borrow_mut();
    match sample {
        Ok(sample) => state.samples.push(sample),
        Err(_) => state.scrape_errors += 1,
    }
}

/// Once a second: scrape `/metrics` and, with `progress`, print a line on stderr.
async fn monitor(
    run: Rc<Run>,
    client: awc::Client,
    progress: bool,
    phase: Rc<Cell<(&'static str, Instant)>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = actix_web::rt::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (Instant::now(), 0u64, 0u64, None::<ServerSample>);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let (name, since) = phase.get();
        let sample = metrics_scrape::scrape(&client, &run.target).await;
        let mut state = run.state.borrow_mut();
        let server = match sample {
            Ok(sample) => {
                let cpu = last.3.and_then(|prev| {
                    let wall = sample.at.saturating_duration_since(prev.at).as_secs_f64();
                    let used = sample.cpu_seconds? - prev.cpu_seconds?;
                    (wall > 0.0).then(|| used / wall * 100.0)
                });
                if name != "warm-up" {
                    state.samples.push(sample);
                }
                last.3 = Some(sample);
                Some((sample.resident_bytes, cpu))
            }
            Err(_) => {
                state.scrape_errors += 1;
                None
            }
        };
        let now = Instant::now();
        let r = &state.recorder;
        let wall = now
            .saturating_duration_since(last.0)
            .as_secs_f64()
            .max(1e-3);
        let per_second =
            |count: u64, before: u64| (count.saturating_sub(before) as f64 / wall).round() as u64;
        if progress {
            eprintln!(
                "{}",
                report::progress_line(
                    name,
                    now.saturating_duration_since(since),
                    r,
                    (
                        per_second(r.requests_ok, last.1),
                        per_second(r.events_ok, last.2)
                    ),
                    server,
                )
            );
        }
        last = (now, r.requests_ok, r.events_ok, last.3);
    }
}

/// Matches deliveries at the fake LINE with the replies that caused them.
async fn observe_deliveries(run: Rc<Run>, mut deliveries: mpsc::UnboundedReceiver<LineDelivery>) {
    while let Some(delivery) = deliveries.recv().await {
        if let Some(Marker::Reply(n)) = markers::parse(&delivery.marker, run.id) {
            let mut state = run.state.borrow_mut();
            if let Some(latency) = state.tracker.delivered(n, delivery.at) {
                state.recorder.agent_send_to_line.record(latency);
            }
            drop(state);
            run.changed.notify_one();
        }
    }
}
