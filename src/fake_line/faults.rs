//! Injected faults: make the next N matching LINE API requests fail the way LINE or the network
//! fails (an error status with LINE's body, latency, a connection closed without an answer).
//!
//! Faults apply in the order they were injected: a request takes the first pending fault whose
//! path matches, and that fault counts as consumed only then. Requests refused before a fault
//! could apply (401, 404, 413) don't consume any. Control routes (`/_fake/...`) never fault.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::responses::{INTERNAL_ERROR, QUOTA_EXCEEDED, RATE_LIMITED};

/// A fault to apply to matching requests. Build one with a constructor, then narrow it with
/// [`Fault::on`] and [`Fault::times`]:
///
/// ```
/// use linedesk::fake_line::Fault;
/// let fault = Fault::rate_limited().on("/v2/bot/message/push").times(2);
/// ```
///
/// Over the control API (`POST /_fake/faults`) the same fault is
/// `{"path": "/v2/bot/message/push", "times": 2, "kind": "respond", "status": 429}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Which requests: an exact path, or a path prefix when it ends with `*`
    /// (`/v2/bot/profile/*`). Every LINE API request when `None`.
    #[serde(default)]
    pub path: Option<String>,
    /// How many matching requests it applies to; `None`: all of them, until cleared.
    #[serde(default = "once")]
    pub times: Option<u32>,
    #[serde(flatten)]
    pub action: FaultAction,
}

fn once() -> Option<u32> {
    Some(1)
}

/// What a fault does to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer `status` with LINE's body `{"message": ..}` instead of handling the request. Without
    /// a message, LINE's usual one for the status (429: the rate limit; 500: an internal error).
    Respond {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Wait this long, then handle the request as usual.
    Latency {
        #[serde(rename = "ms", with = "millis")]
        delay: Duration,
    },
    /// Close the connection without answering, after waiting `after` (a wait past the client's
    /// timeout is a hang). With `processed`, the request is handled first and takes effect (a
    /// push is delivered, its retry key accepted): only the answer is lost on the way back.
    Drop {
        #[serde(rename = "after_ms", with = "millis", default)]
        after: Duration,
        #[serde(default)]
        processed: bool,
    },
}

impl Fault {
    fn new(action: FaultAction) -> Fault {
        Fault {
            path: None,
            times: Some(1),
            action,
        }
    }

    /// Answer `status` with LINE's usual message for it.
    pub fn status(status: u16) -> Fault {
        Fault::new(FaultAction::Respond {
            status,
            message: None,
        })
    }

    /// Answer `status` with `{"message": message}`.
    pub fn status_with_message(status: u16, message: impl Into<String>) -> Fault {
        Fault::new(FaultAction::Respond {
            status,
            message: Some(message.into()),
        })
    }

    /// 429: the channel's rate limit is exceeded.
    pub fn rate_limited() -> Fault {
        Fault::status_with_message(429, RATE_LIMITED)
    }

    /// 429: the month's message quota is used up.
    pub fn quota_exceeded() -> Fault {
        Fault::status_with_message(429, QUOTA_EXCEEDED)
    }

    /// 500.
    pub fn server_error() -> Fault {
        Fault::status_with_message(500, INTERNAL_ERROR)
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Fault {
        Fault::status_with_message(400, message)
    }

    /// Handle the request `delay` late.
    pub fn latency(delay: Duration) -> Fault {
        Fault::new(FaultAction::Latency { delay })
    }

    /// Close the connection at once, without handling the request or answering.
    pub fn drop_connection() -> Fault {
        Fault::new(FaultAction::Drop {
            after: Duration::ZERO,
            processed: false,
        })
    }

    /// Say nothing for `duration` (make it longer than the client's timeout), then close the
    /// connection; the request is not handled.
    pub fn hang(duration: Duration) -> Fault {
        Fault::new(FaultAction::Drop {
            after: duration,
            processed: false,
        })
    }

    /// Handle the request (it takes effect), then close the connection without answering.
    pub fn lose_response() -> Fault {
        Fault::new(FaultAction::Drop {
            after: Duration::ZERO,
            processed: true,
        })
    }

    /// Only requests to `path` (a prefix if it ends with `*`).
    pub fn on(mut self, path: impl Into<String>) -> Fault {
        self.path = Some(path.into());
        self
    }

    /// Only the next `n` matching requests (the default is 1).
    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }

    /// Every matching request, until the faults are cleared.
    pub fn always(mut self) -> Fault {
        self.times = None;
        self
    }

    /// Whether the fault applies to a request for `path`.
    pub fn matches(&self, path: &str) -> bool {
        match self.path.as_deref() {
            None => true,
            Some(pattern) => match pattern.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == pattern,
            },
        }
    }

    /// A short description, recorded on the request the fault applied to.
    pub fn describe(&self) -> String {
        match &self.action {
            FaultAction::Respond { status, .. } => format!("respond {status}"),
            FaultAction::Latency { delay } => format!("latency {} ms", delay.as_millis()),
            FaultAction::Drop {
                after,
                processed: false,
            } => format!("drop after {} ms", after.as_millis()),
            FaultAction::Drop {
                after,
                processed: true,
            } => format!("drop after processing and {} ms", after.as_millis()),
        }
    }
}

/// The pending faults, in injection order.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pending: Vec<Fault>,
}

impl Faults {
    pub fn inject(&mut self, fault: Fault) {
        if fault.times != Some(0) {
            self.pending.push(fault);
        }
    }

    /// Consumes one use of the first fault matching `path`, and returns it.
    pub fn take(&mut self, path: &str) -> Option<Fault> {
        let index = self.pending.iter().position(|f| f.matches(path))?;
        let fault = &mut self.pending[index];
        match &mut fault.times {
            Some(1) => Some(self.pending.remove(index)),
            Some(n) => {
                *n -= 1;
                Some(fault.clone())
            }
            None => Some(fault.clone()),
        }
    }

    pub fn pending(&self) -> Vec<Fault> {
        self.pending.clone()
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

/// `Duration` as whole milliseconds in JSON.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fault_is_consumed_only_by_requests_it_matches() {
        let mut faults = Faults::default();
        faults.inject(Fault::rate_limited().on("/v2/bot/message/push").times(2));

        assert_eq!(faults.take("/v2/bot/message/reply"), None);
        assert!(faults.take("/v2/bot/message/push").is_some());
        assert!(faults.take("/v2/bot/message/push").is_some());
        assert_eq!(faults.take("/v2/bot/message/push"), None);
        assert!(faults.pending().is_empty());
    }

    #[test]
    fn faults_apply_in_injection_order_and_prefixes_match() {
        let mut faults = Faults::default();
        faults.inject(Fault::server_error().on("/v2/bot/profile/*"));
        faults.inject(Fault::latency(Duration::from_millis(5)).always());

        let first = faults.take("/v2/bot/profile/U1").expect("a fault");
        assert_eq!(first.describe(), "respond 500");
        let second = faults.take("/v2/bot/profile/U1").expect("a fault");
        assert_eq!(second.describe(), "latency 5 ms");
        assert!(faults.take("/v2/bot/info").is_some(), "latency stays");
    }

    #[test]
    fn faults_read_from_json_as_the_control_api_takes_them() {
        let fault: Fault = serde_json::from_value(json!({
            "path": "/v2/bot/message/push", "times": 2, "kind": "respond", "status": 429
        }))
        .unwrap();
        assert_eq!(
            fault,
            Fault::status(429).on("/v2/bot/message/push").times(2)
        );

        let fault: Fault =
            serde_json::from_value(json!({ "kind": "drop", "processed": true })).unwrap();
        assert_eq!(fault, Fault::lose_response());

        let fault: Fault =
            serde_json::from_value(json!({ "kind": "latency", "ms": 250, "times": null })).unwrap();
        assert_eq!(fault, Fault::latency(Duration::from_millis(250)).always());

        let round_trip: Fault = serde_json::from_value(
            serde_json::to_value(Fault::hang(Duration::from_secs(3))).unwrap(),
        )
        .unwrap();
        assert_eq!(round_trip, Fault::hang(Duration::from_secs(3)));
    }
}
