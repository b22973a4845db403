//! What the fake saw: every LINE API request (with the status it answered) and, separately,
//! every message delivery it accepted (a successful reply or push).
//!
//! Both lists are bounded by [`MAX_RECORDED`]: past it the oldest entries are dropped, so a
//! long load test keeps a window of recent traffic rather than growing without end. Sequence
//! numbers keep counting, so a gap at the front shows what was dropped.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How many requests, and how many deliveries, the recorder keeps.
pub const MAX_RECORDED: usize = 100_000;

/// One request to the fake LINE API. Control routes (`/_fake/...`) are not recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Position in arrival order, from 1 (0 after a reset starts again from 1).
    pub seq: u64,
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The `X-Line-Request-Id` the fake answered with.
    pub request_id: String,
    /// The `X-Line-Retry-Key` header, as sent.
    pub retry_key: Option<String>,
    /// The `Authorization` header with the token masked (`Bearer ******** (38 chars)`); the
    /// token itself is never kept.
    pub authorization: Option<String>,
    /// The channel whose access token was presented, if any was.
    pub account_id: Option<String>,
    /// The body, when it was JSON.
    pub body: Option<Value>,
    pub body_bytes: usize,
    /// The status answered; `None` while the request is in flight and when the connection was
    /// dropped on purpose.
    pub status: Option<u16>,
    /// The JSON body answered, if any.
    pub response: Option<Value>,
    /// The injected fault that was applied to this request, described.
    pub fault: Option<String>,
    pub received_at_ms: u64,
}

/// Which API a delivery went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Reply,
    Push,
}

/// A message id and quote token, as LINE returns them in `sentMessages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    pub id: String,
    /// Only for messages that can be quoted (text, textV2, sticker, image, video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_token: Option<String>,
}

/// Messages the fake accepted for a chat: the effect of a 200 on reply or push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Position in acceptance order, from 1.
    pub seq: u64,
    pub account_id: String,
    pub via: Via,
    /// The chat: for a push its `to`, for a reply the chat the reply token was issued for.
    pub to: String,
    pub messages: Vec<Value>,
    pub notification_disabled: bool,
    /// The reply token used (replies only).
    pub reply_token: Option<String>,
    /// The `X-Line-Retry-Key` the push was accepted with.
    pub retry_key: Option<String>,
    /// The `X-Line-Request-Id` of the accepting response.
    pub request_id: String,
    pub sent_messages: Vec<SentMessage>,
    pub at_ms: u64,
}

impl Delivery {
    /// The `text` of every text message, in order.
    pub fn texts(&self) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|m| m["type"] == "text")
            .filter_map(|m| m["text"].as_str())
            .collect()
    }
}

/// Called with every accepted delivery, on the fake's worker thread while it holds the state
/// lock: keep it cheap (the load generator finds its markers and sends them on a channel).
pub type DeliveryHook = Arc<dyn Fn(&Delivery) + Send + Sync>;

/// The bounded recording of requests and deliveries.
#[derive(Debug, Default)]
pub struct Recorder {
    requests: VecDeque<RecordedRequest>,
    deliveries: VecDeque<Delivery>,
    last_request: u64,
    last_delivery: u64,
    hooks: Hooks,
}

/// The delivery hooks; they survive a reset.
#[derive(Default, Clone)]
struct Hooks(Vec<DeliveryHook>);

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} delivery hooks", self.0.len())
    }
}

impl Recorder {
    /// The requests kept, oldest first.
    pub fn requests(
        &self,
    ) -> impl DoubleEndedIterator<Item = &RecordedRequest> + ExactSizeIterator {
        self.requests.iter()
    }

    /// The deliveries kept, oldest first.
    pub fn deliveries(&self) -> impl DoubleEndedIterator<Item = &Delivery> + ExactSizeIterator {
        self.deliveries.iter()
    }

    /// Keeps `request`, numbering it; returns its number for [`Recorder::answered`].
    pub(crate) fn record_request(&mut self, mut request: RecordedRequest) -> u64 {
        self.last_request += 1;
        request.seq = self.last_request;
        push_bounded(&mut self.requests, request);
        self.last_request
    }

    /// Notes what request `seq` was answered (nothing if it was dropped from the window or a
    /// reset came in between).
    pub(crate) fn answered(
        &mut self,
        seq: u64,
        status: Option<u16>,
        response: Option<Value>,
        fault: Option<String>,
    ) {
        let Some(first) = self.requests.front().map(|r| r.seq) else {
            return;
        };
        let index = seq.checked_sub(first).and_then(|i| usize::try_from(i).ok());
        if let Some(request) = index.and_then(|i| self.requests.get_mut(i)) {
            if request.seq == seq {
                request.status = status;
                request.response = response;
                request.fault = fault;
            }
        }
    }

    /// Keeps `delivery`, numbering it.
    pub(crate) fn record_delivery(&mut self, mut delivery: Delivery) {
        self.last_delivery += 1;
        delivery.seq = self.last_delivery;
        for hook in &self.hooks.0 {
            hook(&delivery);
        }
        push_bounded(&mut self.deliveries, delivery);
    }

    /// Calls `hook` with every delivery accepted from now on.
    pub(crate) fn on_delivery(&mut self, hook: DeliveryHook) {
        self.hooks.0.push(hook);
    }

    /// Forgets every request and delivery; numbering starts again from 1.
    pub(crate) fn clear(&mut self) {
        let hooks = std::mem::take(&mut self.hooks);
        *self = Recorder {
            hooks,
            ..Recorder::default()
        };
    }
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() == MAX_RECORDED {
        list.pop_front();
    }
    list.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> RecordedRequest {
        RecordedRequest {
            seq: 0,
            method: "POST".into(),
            path: path.into(),
            request_id: "r".into(),
            retry_key: None,
            authorization: None,
            account_id: None,
            body: None,
            body_bytes: 0,
            status: None,
            response: None,
            fault: None,
            received_at_ms: 0,
        }
    }

    #[test]
    fn the_recorder_keeps_the_newest_entries_up_to_its_cap() {
        let mut recorder = Recorder::default();
        for _ in 0..MAX_RECORDED + 2 {
            recorder.record_request(request("/p"));
        }
        assert_eq!(recorder.requests().len(), MAX_RECORDED);
        assert_eq!(recorder.requests().next().map(|r| r.seq), Some(3));
        assert_eq!(
            recorder.requests().last().map(|r| r.seq),
            Some(MAX_RECORDED as u64 + 2)
        );
    }

    #[test]
    fn an_answer_is_noted_on_its_own_request() {
        let mut recorder = Recorder::default();
        let first = recorder.record_request(request("/a"));
        let second = recorder.record_request(request("/b"));
        recorder.answered(second, Some(200), None, None);
        recorder.answered(first, None, None, Some("drop".into()));
        let requests: Vec<_> = recorder.requests().cloned().collect();
        assert_eq!(requests[0].status, None);
        assert_eq!(requests[0].fault.as_deref(), Some("drop"));
        assert_eq!(requests[1].status, Some(200));

        recorder.clear();
        recorder.answered(second, Some(500), None, None);
        assert_eq!(recorder.requests().len(), 0);
    }
}
