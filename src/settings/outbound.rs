//! Settings of the way back to LINE: the API client, the content store and the automated
//! messages.

use serde::Deserialize;
use std::collections::BTreeMap;

use super::{invalid, SettingsError};

/// LINE's Messaging API as linedesk calls it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSection {
    pub api_base: String,
    pub data_api_base: String,
    pub request_timeout_ms: u64,
    pub reply_token_ttl_ms: u64,
    pub profile_ttl_ms: u64,
    pub profile_wait_ms: u64,
    pub requests_per_second: f64,
    pub burst: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub retry_window_ms: u64,
    pub concurrency: usize,
}

impl LineSection {
    pub fn endpoints(&self) -> crate::line::client::LineEndpoints {
        crate::line::client::LineEndpoints {
            api_base: self.api_base.clone(),
            data_api_base: self.data_api_base.clone(),
            timeout: std::time::Duration::from_millis(self.request_timeout_ms),
        }
    }

    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        for (key, url) in [
            ("line.api_base", &self.api_base),
            ("line.data_api_base", &self.data_api_base),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(key, "must start with http:// or https://"));
            }
        }
        for (key, value) in [
            ("line.request_timeout_ms", self.request_timeout_ms),
            ("line.retry_base_ms", self.retry_base_ms),
            ("line.burst", self.burst as u64),
            ("line.concurrency", self.concurrency as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be above 0"));
            }
        }
        if self.requests_per_second.is_nan() || self.requests_per_second <= 0.0 {
            return Err(invalid("line.requests_per_second", "must be above 0"));
        }
        Ok(())
    }
}

/// Attachments: customers' downloaded media and agents' uploads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentSection {
    /// Largest file accepted either way.
    pub max_bytes: u64,
}

/// One automated message of one workstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutomatedMessageSettings {
    pub workstream: String,
    /// greeting, queued, assigned, ended, closed, outside_hours, overflow, transfer, consent,
    /// attachment_refused.
    pub trigger: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Language tag → text with `{customer_name}`, `{agent_name}`, `{queue_name}`, `{position}`.
    pub text: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}
