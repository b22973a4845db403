//! Counters for operators, served at `GET /metrics` in Prometheus' text format. Plain atomics:
//! a handful of counters does not justify a metrics framework yet.

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
            "sled batches written (concurrent deliveries share one).",
            &[("", batches)],
        );
        counter(
            "linedesk_journal_commits_total",
            "Durable commits requested (storage.durability = flush).",
            &[("", commits)],
        );
        counter(
            "linedesk_journal_flushes_total",
            "fsyncs issued for those commits (group commit shares them).",
            &[("", flushes)],
        );
        out
    }
}
