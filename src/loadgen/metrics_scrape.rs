//! Reads the target's `GET /metrics` before, during (once a second) and after a run: its
//! resident memory and CPU time (`process_*`), and its own count of accepted webhooks as a
//! cross-check of what the load generator counted.

use std::time::Instant;

use serde::Serialize;

use super::target::Target;

/// One scrape of `/metrics`. A value the server does not export is `None` (the `process_*`
/// gauges exist on Linux only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerSample {
    pub at: Instant,
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub webhooks_accepted: Option<u64>,
    pub events_stored: Option<u64>,
}

impl ServerSample {
    /// Picks the values out of Prometheus' text format.
    pub fn parse(text: &str, at: Instant) -> Self {
        let value = |name: &str| -> Option<f64> {
            text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                (key == name).then(|| value.trim().parse().ok())?
            })
        };
        Self {
            at,
            resident_bytes: value("process_resident_memory_bytes").map(|v| v as u64),
            cpu_seconds: value("process_cpu_seconds_total"),
            webhooks_accepted: value("linedesk_webhook_requests_accepted_total").map(|v| v as u64),
            events_stored: value("linedesk_webhook_events_stored_total").map(|v| v as u64),
        }
    }
}

/// GETs `/metrics` from the target.
pub async fn scrape(client: &awc::Client, target: &Target) -> Result<ServerSample, String> {
    let mut response = client
        .get(target.url("/metrics"))
        .send()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET /metrics answered {}", response.status()));
    }
    let body = response
        .body()
        .limit(4 << 20)
        .await
        .map_err(|e| format!("GET /metrics body: {e}"))?;
    Ok(ServerSample::parse(
        &String::from_utf8_lossy(&body),
        Instant::now(),
    ))
}

/// The server's memory and CPU over the measured part of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerReport {
    pub rss_bytes_before: Option<u64>,
    pub rss_bytes_after: Option<u64>,
    pub rss_bytes_max: Option<u64>,
    /// CPU seconds the server used between the first and the last scrape.
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds` over the wall time between those scrapes (100 = one core busy).
    pub cpu_percent: Option<f64>,
    /// The busiest interval between two consecutive scrapes.
    pub cpu_percent_peak: Option<f64>,
    /// Webhooks the server itself counted as accepted between the first and last scrape.
    pub webhooks_accepted: Option<u64>,
    pub scrapes: usize,
    pub scrape_errors: u64,
}

impl ServerReport {
    /// Summarises scrapes taken in time order.
    pub fn from_samples(samples: &[ServerSample], scrape_errors: u64) -> Self {
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return Self {
                scrape_errors,
                ..Self::default()
            };
        };
        let cpu_percent = |a: &ServerSample, b: &ServerSample| {
            let wall = b.at.saturating_duration_since(a.at).as_secs_f64();
            match (a.cpu_seconds, b.cpu_seconds) {
                (Some(x), Some(y)) if wall > 0.0 => Some((y - x) / wall * 100.0),
                _ => None,
            }
        };
        Self {
            rss_bytes_before: first.resident_bytes,
            rss_bytes_after: last.resident_bytes,
            rss_bytes_max: samples.iter().filter_map(|s| s.resident_bytes).max(),
            cpu_seconds: first.cpu_seconds.zip(last.cpu_seconds).map(|(a, b)| b - a),
            cpu_percent: cpu_percent(first, last),
            cpu_percent_peak: samples
                .windows(2)
                .filter_map(|w| cpu_percent(&w[0], &w[1]))
                .reduce(f64::max),
            webhooks_accepted: first
                .webhooks_accepted
                .zip(last.webhooks_accepted)
                .map(|(a, b)| b.saturating_sub(a)),
            scrapes: samples.len(),
            scrape_errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const METRICS: &str = "\
# HELP linedesk_webhook_requests_accepted_total Webhook requests answered 200.
# TYPE linedesk_webhook_requests_accepted_total counter
linedesk_webhook_requests_accepted_total 120
linedesk_webhook_requests_rejected_total{code=\"internal\"} 0
linedesk_webhook_events_stored_total 240
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 52428800
process_cpu_seconds_total 1.5
";

    #[test]
    fn samples_are_picked_out_of_the_prometheus_text() {
        let at = Instant::now();
        let sample = ServerSample::parse(METRICS, at);
        assert_eq!(sample.resident_bytes, Some(52_428_800));
        assert_eq!(sample.cpu_seconds, Some(1.5));
        assert_eq!(sample.webhooks_accepted, Some(120));
        assert_eq!(sample.events_stored, Some(240));
        let empty = ServerSample::parse("", at);
        assert_eq!(empty.resident_bytes, None);
    }

    #[test]
    fn the_server_report_spans_the_first_to_the_last_scrape() {
        let t0 = Instant::now();
        let sample = |s: u64, rss: u64, cpu: f64, accepted: u64| ServerSample {
            at: t0 + Duration::from_secs(s),
            resident_bytes: Some(rss),
            cpu_seconds: Some(cpu),
            webhooks_accepted: Some(accepted),
            events_stored: None,
        };
        let samples = [
            sample(0, 100, 10.0, 5),
            sample(1, 300, 10.5, 1005),
            sample(2, 200, 12.0, 2005),
        ];
        let report = ServerReport::from_samples(&samples, 1);
        assert_eq!(report.rss_bytes_before, Some(100));
        assert_eq!(report.rss_bytes_after, Some(200));
        assert_eq!(report.rss_bytes_max, Some(300));
        assert_eq!(report.cpu_seconds, Some(2.0));
        assert_eq!(report.cpu_percent, Some(100.0));
        assert_eq!(report.cpu_percent_peak, Some(150.0));
        assert_eq!(report.webhooks_accepted, Some(2000));
        assert_eq!(report.scrapes, 3);
        assert_eq!(ServerReport::from_samples(&[], 2).scrape_errors, 2);
    }
}
