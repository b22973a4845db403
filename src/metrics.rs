//! Counters for operators, served at `GET /metrics` in Prometheus' text format. Plain atomics:
//! a handful of counters does not justify a metrics framework yet. On Linux the process's
//! resident memory and CPU time are added under Prometheus' standard `process_*` names, read
//! from `/proc` at each scrape (`linedesk loadgen` samples them during a run).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::Journal;

/// Why a webhook request was refused; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    UnknownAccount,
    InvalidSignature,
    PayloadTooLarge,
    MalformedBody,
    Internal,
}

impl Rejection {
    pub const ALL: [Rejection; 5] = [
        Self::UnknownAccount,
        Self::InvalidSignature,
        Self::PayloadTooLarge,
        Self::MalformedBody,
        Self::Internal,
    ];

    /// The `code` of the JSON error body, also the metric label.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownAccount => "unknown_account",
            Self::InvalidSignature => "invalid_signature",
            Self::PayloadTooLarge => "payload_too_large",
            Self::MalformedBody => "malformed_body",
            Self::Internal => "internal",
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    webhook_accepted: AtomicU64,
    webhook_rejected: [AtomicU64; Rejection::ALL.len()],
    events_stored: AtomicU64,
    events_duplicate: AtomicU64,
    events_unknown_type: AtomicU64,
    line_sent_reply: AtomicU64,
    line_sent_push: AtomicU64,
    line_failed: AtomicU64,
    line_retried: AtomicU64,
    profiles_fetched: AtomicU64,
    profiles_not_found: AtomicU64,
    attachments_stored: AtomicU64,
    attachment_bytes: AtomicU64,
    attachments_failed: AtomicU64,
    /// Open conversations handed back to routing since start-up.
    routing_restored: AtomicU64,
    /// How long that took, once it is over (0 before).
    routing_restore_ms: AtomicU64,
    routing_restore_done: std::sync::atomic::AtomicBool,
}

impl Metrics {
    pub fn webhook_accepted(&self, stored: usize, duplicates: usize, unknown: usize) {
        self.webhook_accepted.fetch_add(1, Ordering::Relaxed);
        self.events_stored
            .fetch_add(stored as u64, Ordering::Relaxed);
        self.events_duplicate
            .fetch_add(duplicates as u64, Ordering::Relaxed);
        self.events_unknown_type
            .fetch_add(unknown as u64, Ordering::Relaxed);
    }

    pub fn webhook_rejected(&self, why: Rejection) {
        self.webhook_rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A message reached LINE, with a reply token (free) or as a push.
    pub fn line_sent(&self, reply: bool) {
        let counter = if reply {
            &self.line_sent_reply
        } else {
            &self.line_sent_push
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn line_failed(&self) {
        self.line_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn line_retried(&self) {
        self.line_retried.fetch_add(1, Ordering::Relaxed);
    }

    pub fn profile_fetched(&self, found: bool) {
        let counter = if found {
            &self.profiles_fetched
        } else {
            &self.profiles_not_found
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn attachment_stored(&self, bytes: u64) {
        self.attachments_stored.fetch_add(1, Ordering::Relaxed);
        self.attachment_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn attachment_failed(&self) {
        self.attachments_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Routing has `restored` open conversations of the last run back so far.
    pub fn routing_restored(&self, restored: u64) {
        self.routing_restored.store(restored, Ordering::Relaxed);
    }

    /// Routing has every open conversation of the last run back, after `took`.
    pub fn routing_restore_finished(&self, took: std::time::Duration) {
        self.routing_restore_ms
            .store(took.as_millis() as u64, Ordering::Relaxed);
        self.routing_restore_done.store(true, Ordering::Release);
    }

    /// Whether routing has every open conversation of the last run back.
    pub fn routing_restore_done(&self) -> bool {
        self.routing_restore_done.load(Ordering::Acquire)
    }

    pub fn rejected(&self, why: Rejection) -> u64 {
        self.webhook_rejected[why as usize].load(Ordering::Relaxed)
    }

    /// Renders every counter in Prometheus' text exposition format.
    pub fn render(&self, journal: &Journal) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            // unwrap: writing to a String cannot fail.
            writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter").unwrap();
            for (labels, value) in samples {
                writeln!(out, "{name}{labels} {value}").unwrap();
            }
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "linedesk_webhook_requests_accepted_total",
            "Webhook requests answered 200.",
            &[("", load(&self.webhook_accepted))],
        );
        let labels: Vec<String> = Rejection::ALL
            .iter()
            .map(|r| format!("{{code=\"{}\"}}", r.code()))
            .collect();
        let rejected: Vec<(&str, u64)> = Rejection::ALL
            .iter()
            .zip(&labels)
            .map(|(r, l)| (l.as_str(), self.rejected(*r)))
            .collect();
        counter(
            "linedesk_webhook_requests_rejected_total",
            "Webhook requests refused, by error code.",
            &rejected,
        );
        counter(
            "linedesk_webhook_events_stored_total",
            "Webhook events written to the journal.",
            &[("", load(&self.events_stored))],
        );
        counter(
            "linedesk_webhook_events_duplicate_total",
            "Redelivered webhook events acknowledged without storing them again.",
            &[("", load(&self.events_duplicate))],
        );
        counter(
            "linedesk_webhook_events_unknown_type_total",
            "Webhook events of a type linedesk does not know, kept as raw JSON.",
            &[("", load(&self.events_unknown_type))],
        );
        counter(
            "linedesk_line_messages_sent_total",
            "Outgoing messages LINE accepted, by how they went (reply is free, push is counted against the quota).",
            &[
                ("{via=\"reply\"}", load(&self.line_sent_reply)),
                ("{via=\"push\"}", load(&self.line_sent_push)),
            ],
        );
        counter(
            "linedesk_line_messages_failed_total",
            "Outgoing messages given up (refused by LINE, quota used up, retry window over).",
            &[("", load(&self.line_failed))],
        );
        counter(
            "linedesk_line_retries_total",
            "Sends to LINE retried after a timeout, 5xx or rate limit.",
            &[("", load(&self.line_retried))],
        );
        counter(
            "linedesk_line_profiles_fetched_total",
            "Customer profiles fetched from LINE, by outcome.",
            &[
                ("{outcome=\"found\"}", load(&self.profiles_fetched)),
                ("{outcome=\"not_found\"}", load(&self.profiles_not_found)),
            ],
        );
        counter(
            "linedesk_attachments_stored_total",
            "Customer attachments downloaded into the content store.",
            &[("", load(&self.attachments_stored))],
        );
        counter(
            "linedesk_attachment_bytes_total",
            "Bytes of customer attachments stored.",
            &[("", load(&self.attachment_bytes))],
        );
        counter(
            "linedesk_attachments_failed_total",
            "Customer attachments not stored (too large, or the download failed for good).",
            &[("", load(&self.attachments_failed))],
        );
        let (batches, commits, flushes) = journal.write_stats();
        counter(
            "linedesk_journal_batches_total",
            "Journal batches written: one event log record each (concurrent deliveries share one).",
            &[("", batches)],
        );
        counter(
            "linedesk_journal_event_log_syncs_total",
            "fsyncs of the journal's event log: one per writer batch (storage.durability = flush); a webhook is answered after its batch's.",
            &[("", journal.event_log_syncs())],
        );
        counter(
            "linedesk_journal_commits_total",
            "Durable commits of sled writes requested (storage.durability = flush): agents' actions, webhooks with attachments to fetch.",
            &[("", commits)],
        );
        counter(
            "linedesk_journal_flushes_total",
            "fsyncs issued for those commits (group commit shares them).",
            &[("", flushes)],
        );
        let gauge = |out: &mut String, name: &str, help: &str, value: String| {
            // unwrap: writing to a String cannot fail.
            writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            )
            .unwrap();
        };
        let (uncovered, long_uncovered, checkpoint_lag) = journal.coverage();
        gauge(
            &mut out,
            "linedesk_journal_uncovered_conversations",
            "Conversations with journal events no snapshot covers yet (resumed after a crash).",
            uncovered.to_string(),
        );
        gauge(
            &mut out,
            "linedesk_journal_long_uncovered_conversations",
            "Of those, uncovered for over 4,096 events: each has a sled key of its own.",
            long_uncovered.to_string(),
        );
        gauge(
            &mut out,
            "linedesk_journal_event_segments",
            "Segment files of the journal's event log (each up to 32 MiB).",
            journal.event_segments().to_string(),
        );
        gauge(
            &mut out,
            "linedesk_journal_uncovered_events",
            "Journal events no snapshot covers yet, indexed in memory by chat.",
            journal.uncovered_events().to_string(),
        );
        gauge(
            &mut out,
            "linedesk_journal_checkpoint_lag_events",
            "Events after the stored checkpoint: what a restart looks through to resume conversations.",
            checkpoint_lag.to_string(),
        );
        gauge(
            &mut out,
            "linedesk_routing_restored_conversations",
            "Open conversations of the last run handed back to routing since start-up.",
            load(&self.routing_restored).to_string(),
        );
        gauge(
            &mut out,
            "linedesk_routing_restore_complete",
            "1 once routing has every open conversation of the last run back (the server answers before).",
            u64::from(self.routing_restore_done()).to_string(),
        );
        gauge(
            &mut out,
            "linedesk_routing_restore_seconds",
            "How long routing took to get the open conversations of the last run back (0 until complete).",
            format!("{:.3}", load(&self.routing_restore_ms) as f64 / 1000.0),
        );
        if let Some(process) = ProcessStats::read() {
            // unwrap: writing to a String cannot fail.
            writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
                 # TYPE process_resident_memory_bytes gauge\n\
                 process_resident_memory_bytes {}",
                process.resident_bytes
            )
            .unwrap();
            writeln!(
                out,
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
                 # TYPE process_cpu_seconds_total counter\n\
                 process_cpu_seconds_total {}",
                process.cpu_seconds
            )
            .unwrap();
        }
        out
    }
}

/// This process's resident memory and CPU time so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    /// User plus system time, all threads.
    pub cpu_seconds: f64,
}

impl ProcessStats {
    /// Reads `/proc/self/statm` and `/proc/self/stat`; `None` where there is no `/proc`.
    pub fn read() -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
            let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
            // SAFETY: sysconf reads a configuration value and touches no memory of ours.
            let (page_size, ticks) = unsafe {
                (
                    libc::sysconf(libc::_SC_PAGESIZE),
                    libc::sysconf(libc::_SC_CLK_TCK),
                )
            };
            Self::parse(
                &statm,
                &stat,
                u64::try_from(page_size).ok()?,
                u64::try_from(ticks).ok()?,
            )
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// `statm`'s second field is resident pages; `stat`'s 14th and 15th are user and system
    /// time in clock ticks. The 2nd field of `stat` (the command name, in parentheses) may hold
    /// spaces and parentheses, so fields are counted after its last `)`.
    fn parse(statm: &str, stat: &str, page_size: u64, ticks_per_second: u64) -> Option<Self> {
        let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let mut after_name = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
        // After the name: state (field 3) ... utime is field 14, i.e. the 12th from here.
        let utime: u64 = after_name.nth(11)?.parse().ok()?;
        let stime: u64 = after_name.next()?.parse().ok()?;
        if ticks_per_second == 0 {
            return None;
        }
        Some(Self {
            resident_bytes: resident_pages * page_size,
            cpu_seconds: (utime + stime) as f64 / ticks_per_second as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_are_read_from_statm_and_stat() {
        let statm = "61440 2048 1024 300 0 4000 0\n";
        // A command name with a space and a parenthesis, as `stat` allows.
        let stat =
            "4242 (linedesk (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 \
                    100 251658240 2048 18446744073709551615";
        let stats = ProcessStats::parse(statm, stat, 4096, 100).unwrap();
        assert_eq!(stats.resident_bytes, 2048 * 4096);
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(ProcessStats::parse("", stat, 4096, 100), None);
        assert_eq!(ProcessStats::parse(statm, "4242 (x) S 1", 4096, 100), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_memory_and_has_used_cpu() {
        let stats = ProcessStats::read().expect("/proc is readable on Linux");
        assert!(stats.resident_bytes > 0);
        assert!(stats.cpu_seconds >= 0.0);
    }
}
