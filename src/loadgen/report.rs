//! What a run measured: the [`Recorder`] that collects it while the run goes on, the
//! [`Report`] made of it at the end (printed as text, or as one JSON object with `--json`),
//! and the progress line printed once a second.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::metrics_scrape::ServerReport;

/// Latencies in microseconds, 1 µs to 1 hour, 3 significant digits.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        // unwrap: constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, 3 digits).
        Self(Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap())
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.0.len(),
            p50: ms(self.0.value_at_quantile(0.5)),
            p99: ms(self.0.value_at_quantile(0.99)),
            p99_9: ms(self.0.value_at_quantile(0.999)),
            max: ms(self.0.max()),
            mean: self.0.mean() / 1000.0,
        }
    }
}

/// Percentiles of one measured path, in milliseconds; all 0 when `count` is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

/// Failures by kind. Every increment also counts in `total`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Errors {
    pub total: u64,
    /// Webhook answers other than 2xx, by status code.
    pub http_status: BTreeMap<String, u64>,
    /// Webhooks that could not connect.
    pub connect: u64,
    /// Webhooks not answered within the timeout.
    pub timeout: u64,
    /// Webhooks that failed otherwise (connection reset, unreadable answer).
    pub other_http: u64,
    /// Agent websockets that failed to connect, broke, or were closed by the server.
    pub websocket: u64,
    /// `error` frames the agents received, by `code`.
    pub error_frames: BTreeMap<String, u64>,
    /// The first few error messages, to tell what went wrong.
    pub examples: Vec<String>,
}

impl Errors {
    const EXAMPLES: usize = 5;

    fn count(&mut self, example: impl FnOnce() -> String) {
        self.total += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(example());
        }
    }

    pub fn http_status(&mut self, status: u16) {
        *self.http_status.entry(status.to_string()).or_default() += 1;
        self.count(|| format!("webhook answered {status}"));
    }

    pub fn connect(&mut self, why: impl fmt::Display) {
        self.connect += 1;
        self.count(|| format!("webhook connect: {why}"));
    }

    pub fn timeout(&mut self) {
        self.timeout += 1;
        self.count(|| "webhook timed out".into());
    }

    pub fn other_http(&mut self, why: impl fmt::Display) {
        self.other_http += 1;
        self.count(|| format!("webhook: {why}"));
    }

    pub fn websocket(&mut self, why: impl fmt::Display) {
        self.websocket += 1;
        self.count(|| format!("websocket: {why}"));
    }

    pub fn error_frame(&mut self, code: &str, message: &str) {
        *self.error_frames.entry(code.to_owned()).or_default() += 1;
        self.count(|| format!("error frame {code}: {message}"));
    }
}

/// What the agents did and saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentCounts {
    /// Agents signed in and available when the load started.
    pub connected: u32,
    pub offers: u64,
    pub assigned: u64,
    pub offers_revoked: u64,
    /// Customer messages seen by an agent (in an offer or a `message` frame), each once.
    pub customer_messages_seen: u64,
    pub replies_sent: u64,
    pub acks: u64,
    /// Customer messages of accepted webhooks that no agent saw by the end of the run.
    pub messages_unseen: u64,
    /// Replies sent without an `ack` by the end of the run.
    pub replies_unacked: u64,
    /// Replies not seen at the fake LINE by the end of the run; `None` when no deliveries
    /// were being observed.
    pub replies_not_delivered: Option<u64>,
}

/// Everything measured while a phase of the run went on.
#[derive(Debug, Default)]
pub struct Recorder {
    pub webhook: LatencyHistogram,
    pub send_lag: LatencyHistogram,
    pub customer_to_offer: LatencyHistogram,
    pub customer_to_message: LatencyHistogram,
    pub agent_send_to_ack: LatencyHistogram,
    pub agent_send_to_line: LatencyHistogram,
    pub requests_sent: u64,
    pub requests_ok: u64,
    pub events_sent: u64,
    pub events_ok: u64,
    pub agents: AgentCounts,
    pub errors: Errors,
    /// Intended time of the phase's first request and arrival of its last answer.
    pub first_intended: Option<Instant>,
    pub last_answer: Option<Instant>,
}

/// How requests were paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// At a fixed rate, whatever the answers (`--rate`).
    OpenLoop,
    /// Each connection sends its next request when the last is answered.
    ClosedLoop,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestCounts {
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    pub failed: u64,
    /// `ok` over `elapsed_s`.
    pub per_second: f64,
    /// The `--rate` asked for (open loop only).
    pub intended_per_second: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventCounts {
    pub sent: u64,
    /// In webhooks answered 2xx.
    pub accepted: u64,
    pub per_second: f64,
    pub intended_per_second: Option<f64>,
}

/// Each measured path. Webhook latency runs from the request's intended send time (open loop;
/// the actual send in closed loop) to its 2xx answer; the customer paths from that same time
/// to the frame in which an agent first saw the message.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latencies {
    pub webhook: LatencySummary,
    /// The load generator's own lateness: a request's intended send time to the moment it
    /// handed the request to its HTTP client. Part of every latency above that counts from
    /// the intended time (on a busy machine, the generator's share of them); ~0 in closed loop.
    pub send_lag: LatencySummary,
    /// First messages of conversations: to the `offer` frame listing them.
    pub customer_to_offer: LatencySummary,
    /// Later messages: to the `message` frame.
    pub customer_to_message: LatencySummary,
    /// Agent `send` written to its `ack` frame.
    pub agent_send_to_ack: LatencySummary,
    /// Agent `send` written to the reply's delivery at the fake LINE (count 0 until one is
    /// attached; see [`super::LineDelivery`]).
    pub agent_send_to_line: LatencySummary,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WarmupReport {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Whether every warm-up message reached an agent and every reply was acknowledged in
    /// time (otherwise measuring started anyway, after `--drain-ms`).
    pub settled: bool,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Run id, the `{run}` of every marker and user id.
    pub run: String,
    pub target: String,
    pub account: String,
    pub mode: Mode,
    pub connections: usize,
    pub users: u64,
    pub events_per_request: u32,
    pub agents: u32,
    pub think_ms: u64,
    pub warmup: Option<WarmupReport>,
    /// From the first request's intended send time to the last answer.
    pub elapsed_s: f64,
    pub requests: RequestCounts,
    pub events: EventCounts,
    pub latency_ms: Latencies,
    pub agent_activity: AgentCounts,
    pub errors: Errors,
    pub server: ServerReport,
    /// CPU seconds of the load generator's own process over the run (in-process runs
    /// include everything else the process does).
    pub loadgen_cpu_seconds: Option<f64>,
}

impl Report {
    pub fn to_json(&self) -> String {
        // unwrap: the report is plain numbers, strings and maps with string keys.
        serde_json::to_string(self).unwrap()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pace = match self.requests.intended_per_second {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "linedesk loadgen: {pace}, {} connections, {} users, {} event(s)/request, {} agents (think {} ms)",
            self.connections, self.users, self.events_per_request, self.agents, self.think_ms
        )?;
        writeln!(
            f,
            "target {}, account {}, run {}",
            self.target, self.account, self.run
        )?;
        if let Some(w) = &self.warmup {
            writeln!(
                f,
                "warm-up    {} requests, {} errors, {:.1} s, {}",
                w.requests,
                w.errors,
                w.seconds,
                if w.settled { "settled" } else { "NOT settled" }
            )?;
        }
        let vs = |rate: Option<f64>| {
            rate.map(|r| format!(" of {r:.0}/s intended"))
                .unwrap_or_default()
        };
        writeln!(
            f,
            "requests   {} sent, {} ok, {} failed in {:.2} s: {:.1}/s{}",
            self.requests.sent,
            self.requests.ok,
            self.requests.failed,
            self.elapsed_s,
            self.requests.per_second,
            vs(self.requests.intended_per_second)
        )?;
        writeln!(
            f,
            "events     {} sent, {} accepted: {:.1}/s{}",
            self.events.sent,
            self.events.accepted,
            self.events.per_second,
            vs(self.events.intended_per_second)
        )?;
        writeln!(
            f,
            "\nlatency (ms)                   count       p50       p99     p99.9       max"
        )?;
        let l = &self.latency_ms;
        for (name, s) in [
            ("webhook → 200", &l.webhook),
            ("customer → agent offer", &l.customer_to_offer),
            ("customer → agent message", &l.customer_to_message),
            ("agent send → ack", &l.agent_send_to_ack),
            ("agent send → LINE", &l.agent_send_to_line),
            ("(loadgen's own send lag)", &l.send_lag),
        ] {
            if s.count == 0 {
                writeln!(f, "{name:<28} {:>8}         -", 0)?;
            } else {
                writeln!(
                    f,
                    "{name:<28} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    s.count, s.p50, s.p99, s.p99_9, s.max
                )?;
            }
        }
        let a = &self.agent_activity;
        writeln!(
            f,
            "\nagents     {} connected: {} offers, {} assigned, {} revoked, {} customer messages seen, {} replies, {} acks",
            a.connected, a.offers, a.assigned, a.offers_revoked, a.customer_messages_seen, a.replies_sent, a.acks
        )?;
        if self.agents > 0 {
            write!(
                f,
                "           {} messages never reached an agent, {} replies unacknowledged",
                a.messages_unseen, a.replies_unacked
            )?;
            match a.replies_not_delivered {
                Some(n) => writeln!(f, ", {n} replies not delivered to LINE")?,
                None => writeln!(f, "; deliveries to LINE not observed")?,
            }
        }
        let e = &self.errors;
        if e.total == 0 {
            writeln!(f, "errors     none")?;
        } else {
            let mut kinds: Vec<String> = e
                .http_status
                .iter()
                .map(|(code, n)| format!("HTTP {code}: {n}"))
                .collect();
            for (name, n) in [
                ("connect", e.connect),
                ("timeout", e.timeout),
                ("other HTTP", e.other_http),
                ("websocket", e.websocket),
            ] {
                if n > 0 {
                    kinds.push(format!("{name}: {n}"));
                }
            }
            kinds.extend(
                e.error_frames
                    .iter()
                    .map(|(code, n)| format!("error frame {code}: {n}")),
            );
            writeln!(f, "errors     {} ({})", e.total, kinds.join(", "))?;
            for example in &e.examples {
                writeln!(f, "           e.g. {example}")?;
            }
        }
        let s = &self.server;
        let mib = |b: Option<u64>| {
            b.map(|b| format!("{:.1}", b as f64 / (1 << 20) as f64))
                .unwrap_or_else(|| "?".into())
        };
        let num = |v: Option<f64>, digits: usize| {
            v.map(|v| format!("{v:.digits$}"))
                .unwrap_or_else(|| "?".into())
        };
        writeln!(
            f,
            "server     RSS {} → {} MiB (max {}); CPU {} s = {}% of one core (peak {}%); {} webhooks accepted by its count; {} scrapes, {} failed",
            mib(s.rss_bytes_before),
            mib(s.rss_bytes_after),
            mib(s.rss_bytes_max),
            num(s.cpu_seconds, 2),
            num(s.cpu_percent, 0),
            num(s.cpu_percent_peak, 0),
            s.webhooks_accepted.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
            s.scrapes,
            s.scrape_errors
        )?;
        writeln!(
            f,
            "loadgen    CPU {} s (this process)",
            num(self.loadgen_cpu_seconds, 2)
        )
    }
}

/// The line printed on stderr once a second while a phase runs.
pub fn progress_line(
    phase: &str,
    elapsed: Duration,
    recorder: &Recorder,
    last_second: (u64, u64),
    server: Option<(Option<u64>, Option<f64>)>,
) -> String {
    let (requests, events) = last_second;
    let webhook = recorder.webhook.summary();
    let server = match server {
        Some((rss, cpu)) => format!(
            " | server {} MiB, {} CPU",
            rss.map(|b| (b >> 20).to_string())
                .unwrap_or_else(|| "?".into()),
            cpu.map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "?".into())
        ),
        None => String::new(),
    };
    format!(
        "[{phase} {:>5.1}s] {requests} req/s, {events} events/s | webhook p99 {:.1} ms | seen {} | acks {} | errors {}{server}",
        elapsed.as_secs_f64(),
        webhook.p99,
        recorder.agents.customer_messages_seen,
        recorder.agents.acks,
        recorder.errors.total,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_report() -> Report {
        let mut webhook = LatencyHistogram::default();
        for ms in 1..=1000 {
            webhook.record(Duration::from_millis(ms));
        }
        let mut errors = Errors::default();
        errors.http_status(500);
        errors.timeout();
        errors.error_frame("invalid_state", "closed");
        Report {
            run: "0badcafe".into(),
            target: "http://127.0.0.1:8080".into(),
            account: "demo".into(),
            mode: Mode::OpenLoop,
            connections: 64,
            users: 1000,
            events_per_request: 1,
            agents: 2,
            think_ms: 0,
            warmup: None,
            elapsed_s: 1.0,
            requests: RequestCounts {
                sent: 1002,
                ok: 1000,
                failed: 2,
                per_second: 1000.0,
                intended_per_second: Some(1000.0),
            },
            events: EventCounts::default(),
            latency_ms: Latencies {
                webhook: webhook.summary(),
                ..Latencies::default()
            },
            agent_activity: AgentCounts::default(),
            errors,
            server: ServerReport::default(),
            loadgen_cpu_seconds: Some(0.5),
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram_in_milliseconds() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.summary(), LatencySummary::default());
        for ms in 1..=1000 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_9 - 999.0).abs() < 1.0, "{s:?}");
        assert!((s.max - 1000.0).abs() < 1.0, "{s:?}");
        // Below a microsecond still counts, as 1 µs.
        h.record(Duration::ZERO);
        assert_eq!(h.len(), 1001);
    }

    #[test]
    fn the_json_report_is_one_object_with_every_section() {
        let json: serde_json::Value = serde_json::from_str(&sample_report().to_json()).unwrap();
        for key in [
            "run",
            "target",
            "mode",
            "elapsed_s",
            "requests",
            "events",
            "latency_ms",
            "agent_activity",
            "errors",
            "server",
            "loadgen_cpu_seconds",
        ] {
            assert!(json.get(key).is_some(), "missing {key}: {json}");
        }
        assert_eq!(json["mode"], "open_loop");
        assert_eq!(json["requests"]["intended_per_second"], 1000.0);
        for path in [
            "webhook",
            "customer_to_offer",
            "customer_to_message",
            "agent_send_to_ack",
            "agent_send_to_line",
            "send_lag",
        ] {
            let summary = &json["latency_ms"][path];
            for field in ["count", "p50", "p99", "p99_9", "max", "mean"] {
                assert!(summary[field].is_number(), "{path}.{field}: {json}");
            }
        }
        assert_eq!(json["latency_ms"]["webhook"]["count"], 1000);
        assert_eq!(json["errors"]["total"], 3);
        assert_eq!(json["errors"]["http_status"]["500"], 1);
        assert_eq!(json["errors"]["timeout"], 1);
        assert_eq!(json["errors"]["error_frames"]["invalid_state"], 1);
        assert!(json["server"]["rss_bytes_before"].is_null());
    }

    #[test]
    fn the_text_report_names_every_path_and_error_kind() {
        let text = sample_report().to_string();
        for needle in [
            "open loop at 1000 req/s",
            "1000.0/s of 1000/s intended",
            "webhook → 200",
            "customer → agent offer",
            "agent send → LINE",
            "(loadgen's own send lag)",
            "HTTP 500: 1",
            "timeout: 1",
            "error frame invalid_state: 1",
            "server     RSS ?",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in\n{text}");
        }
    }
}
