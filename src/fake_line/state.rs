//! The fake platform's memory and its decisions: which reply tokens are valid, which retry keys
//! were accepted, who is blocked, which content exists, and what a reply, push, profile or
//! content request is answered. Everything here is plain code over [`FakeState`]; the HTTP layer
//! (`server.rs`) locks it, calls one method and turns the [`Answer`] into a response.
//!
//! One `Mutex` guards all of it (never held across an `.await`), and a `Notify` wakes whoever
//! waits for a request or delivery to be recorded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::faults::Faults;
use super::ids;
use super::recorder::{Delivery, Recorder, SentMessage, Via};
use super::requests::{PushRequest, ReplyRequest};
use super::responses::{
    Answer, FAILED_TO_SEND, INVALID_REPLY_TOKEN, INVALID_RETRY_KEY, INVALID_USER_ID,
    RETRY_KEY_ACCEPTED,
};
use super::{FakeChannel, FakeLineConfig};

/// Reply tokens remembered at most (the oldest are forgotten first, used or not).
pub const MAX_REPLY_TOKENS: usize = 100_000;
/// Accepted retry keys remembered at most (the oldest are forgotten first).
pub const MAX_RETRY_KEYS: usize = 100_000;
/// How long LINE blocks a repeated retry key.
pub const RETRY_KEY_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// A LINE user profile, as `GET /v2/bot/profile/{userId}` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub display_name: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// BCP 47; absent until the user accepted LINE's privacy policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

impl Profile {
    /// The profile of a user nobody registered: derived from the id, so the same user always
    /// looks the same (`Customer 1a2b` for `U1a2b...`).
    pub fn generated(user_id: &str, language: &str) -> Profile {
        const STATUS: [&str; 4] = [
            "よろしくお願いします",
            "Living my best life",
            "週末は山へ",
            "Coffee first",
        ];
        let short: String = user_id.chars().skip(1).take(4).collect();
        let hash = ids::fnv1a(user_id.as_bytes());
        Profile {
            display_name: format!("Customer {short}"),
            user_id: user_id.to_owned(),
            picture_url: Some(format!("https://profile.line-scdn.net/fake/{user_id}")),
            status_message: Some(STATUS[(hash % STATUS.len() as u64) as usize].to_owned()),
            language: Some(language.to_owned()),
        }
    }
}

/// What the fake serves at `/v2/bot/message/{id}/content`.
#[derive(Debug, Clone)]
pub(crate) struct Content {
    pub content_type: String,
    pub bytes: Bytes,
}

/// A reply token the fake issued: valid once, for the channel and chat it was issued for.
#[derive(Debug, Clone)]
struct IssuedToken {
    account: String,
    chat: String,
    issued: Instant,
    used: bool,
}

/// A push accepted with a retry key: what a repeat of the key is answered.
#[derive(Debug, Clone)]
struct AcceptedPush {
    request_id: String,
    sent_messages: Vec<SentMessage>,
    accepted: Instant,
}

/// Everything the fake platform keeps, behind the one lock.
#[derive(Debug, Default)]
pub(crate) struct FakeState {
    pub recorder: Recorder,
    pub faults: Faults,
    /// Added to every LINE API request.
    pub latency: Duration,
    /// Base URL of linedesk; an account's webhook URL is `{target}/line/webhook/{account}`.
    pub webhook_target: Option<String>,
    /// Webhook URLs set through `PUT /v2/bot/channel/webhook/endpoint`, by account.
    webhook_endpoints: HashMap<String, String>,
    reply_tokens: BoundedMap<String, IssuedToken>,
    /// By (account, retry key): keys are per channel.
    retry_keys: BoundedMap<(String, String), AcceptedPush>,
    profiles: HashMap<String, Profile>,
    blocked: HashSet<String>,
    content: HashMap<String, Content>,
}

impl FakeState {
    /// Issues a reply token for `chat` (a user, group or room id) of `account`.
    pub fn issue_reply_token(&mut self, account: &str, chat: &str, now: Instant) -> String {
        let token = ids::reply_token();
        self.reply_tokens.insert(
            token.clone(),
            IssuedToken {
                account: account.to_owned(),
                chat: chat.to_owned(),
                issued: now,
                used: false,
            },
        );
        token
    }

    /// `POST /v2/bot/message/reply`, body already validated.
    pub fn reply(
        &mut self,
        channel: &FakeChannel,
        ttl: Duration,
        request: ReplyRequest,
        request_id: &str,
        now: Instant,
    ) -> Answer {
        let Some(token) = self.reply_tokens.get_mut(&request.reply_token) else {
            return Answer::bad_request(INVALID_REPLY_TOKEN);
        };
        let expired = now.saturating_duration_since(token.issued) >= ttl;
        if token.used || expired || token.account != channel.account_id.as_str() {
            return Answer::bad_request(INVALID_REPLY_TOKEN);
        }
        token.used = true;
        let to = token.chat.clone();
        let sent_messages = sent_messages(&request.messages);
        self.recorder.record_delivery(Delivery {
            seq: 0,
            account_id: channel.account_id.to_string(),
            via: Via::Reply,
            to,
            messages: request.messages,
            notification_disabled: request.notification_disabled,
            reply_token: Some(request.reply_token),
            retry_key: None,
            request_id: request_id.to_owned(),
            sent_messages: sent_messages.clone(),
            at_ms: ids::now_ms(),
        });
        Answer::ok(json!({ "sentMessages": sent_messages }))
    }

    /// `POST /v2/bot/message/push`, body already validated.
    pub fn push(
        &mut self,
        channel: &FakeChannel,
        request: PushRequest,
        retry_key: Option<&str>,
        request_id: &str,
        now: Instant,
    ) -> Answer {
        if retry_key.is_some_and(|key| !ids::is_uuid(key)) {
            return Answer::bad_request(INVALID_RETRY_KEY);
        }
        if !ids::is_chat_id(&request.to) {
            return Answer::bad_request(FAILED_TO_SEND);
        }
        let account = channel.account_id.to_string();
        let key = retry_key.map(|key| (account.clone(), key.to_ascii_lowercase()));
        if let Some(accepted) = key.as_ref().and_then(|key| self.retry_keys.get(key)) {
            if now.saturating_duration_since(accepted.accepted) < RETRY_KEY_VALIDITY {
                return Answer::json(
                    StatusCode::CONFLICT,
                    json!({
                        "message": RETRY_KEY_ACCEPTED,
                        "sentMessages": accepted.sent_messages,
                    }),
                )
                .with_header("x-line-accepted-request-id", accepted.request_id.clone());
            }
        }
        let sent_messages = sent_messages(&request.messages);
        if let Some(key) = key {
            self.retry_keys.insert(
                key,
                AcceptedPush {
                    request_id: request_id.to_owned(),
                    sent_messages: sent_messages.clone(),
                    accepted: now,
                },
            );
        }
        self.recorder.record_delivery(Delivery {
            seq: 0,
            account_id: account,
            via: Via::Push,
            to: request.to,
            messages: request.messages,
            notification_disabled: request.notification_disabled,
            reply_token: None,
            retry_key: retry_key.map(str::to_owned),
            request_id: request_id.to_owned(),
            sent_messages: sent_messages.clone(),
            at_ms: ids::now_ms(),
        });
        Answer::ok(json!({ "sentMessages": sent_messages }))
    }

    /// `GET /v2/bot/profile/{userId}`.
    pub fn profile(&self, user_id: &str, default_language: &str) -> Answer {
        if !ids::is_user_id(user_id) {
            return Answer::bad_request(INVALID_USER_ID);
        }
        if self.blocked.contains(user_id) {
            return Answer::not_found();
        }
        let profile = self
            .profiles
            .get(user_id)
            .cloned()
            .unwrap_or_else(|| Profile::generated(user_id, default_language));
        Answer::ok(json!(profile))
    }

    pub fn register_profile(&mut self, profile: Profile) {
        self.profiles.insert(profile.user_id.clone(), profile);
    }

    /// The user blocked the account (or never added it): their profile answers 404.
    pub fn block_user(&mut self, user_id: &str) {
        self.blocked.insert(user_id.to_owned());
    }

    pub fn unblock_user(&mut self, user_id: &str) {
        self.blocked.remove(user_id);
    }

    /// `GET /v2/bot/message/{messageId}/content` and `/content/preview` (the fake serves the
    /// same bytes for both).
    pub fn content(&self, message_id: &str) -> Answer {
        match self.content.get(message_id) {
            Some(content) => Answer::bytes(&content.content_type, content.bytes.clone()),
            None => Answer::not_found(),
        }
    }

    /// `GET /v2/bot/message/{messageId}/content/transcoding`: registered content is ready.
    pub fn transcoding(&self, message_id: &str) -> Answer {
        if self.content.contains_key(message_id) {
            Answer::ok(json!({ "status": "succeeded" }))
        } else {
            Answer::not_found()
        }
    }

    pub fn register_content(&mut self, message_id: &str, content: Content) {
        self.content.insert(message_id.to_owned(), content);
    }

    /// Where the fake POSTs `account`'s webhooks: the URL set through the API, else the one
    /// under the webhook target.
    pub fn webhook_url(&self, account: &str) -> Option<String> {
        self.webhook_endpoints.get(account).cloned().or_else(|| {
            self.webhook_target
                .as_deref()
                .map(|target| format!("{}/line/webhook/{account}", target.trim_end_matches('/')))
        })
    }

    /// `GET /v2/bot/channel/webhook/endpoint`.
    pub fn webhook_endpoint(&self, account: &str) -> Answer {
        let endpoint = self.webhook_url(account);
        Answer::ok(json!({
            "active": endpoint.is_some(),
            "endpoint": endpoint.unwrap_or_default(),
        }))
    }

    /// `PUT /v2/bot/channel/webhook/endpoint`, the URL already checked.
    pub fn set_webhook_endpoint(&mut self, account: &str, endpoint: String) -> Answer {
        self.webhook_endpoints.insert(account.to_owned(), endpoint);
        Answer::ok(json!({}))
    }

    /// Forgets the recording (requests and deliveries); tokens, keys and registrations stay.
    pub fn reset_recording(&mut self) {
        self.recorder.clear();
    }
}

/// `GET /v2/bot/info` of `channel`.
pub(crate) fn bot_info(channel: &FakeChannel) -> Answer {
    let hash = ids::fnv1a(channel.account_id.as_str().as_bytes());
    let letters: String = (0..4)
        .map(|i| char::from(b'a' + ((hash >> (8 * i)) % 26) as u8))
        .collect();
    Answer::ok(json!({
        "userId": channel.bot_user_id,
        "basicId": format!("@{:03}{letters}", hash % 1000),
        "displayName": channel.account_id.as_str(),
        "pictureUrl": format!("https://profile.line-scdn.net/fake/{}", channel.bot_user_id),
        "chatMode": "chat",
        "markAsReadMode": "manual",
    }))
}

/// A fresh id (and quote token, for types that can be quoted) per message sent.
fn sent_messages(messages: &[Value]) -> Vec<SentMessage> {
    messages
        .iter()
        .map(|message| {
            let quotable = matches!(
                message["type"].as_str(),
                Some("text" | "textV2" | "sticker" | "image" | "video")
            );
            SentMessage {
                id: ids::message_id(),
                quote_token: quotable.then(ids::quote_token),
            }
        })
        .collect()
}

/// The state shared by the server's workers and every [`super::FakeLine`] handle.
pub(crate) struct Shared {
    pub config: FakeLineConfig,
    state: Mutex<FakeState>,
    /// Notified whenever a request or delivery is recorded.
    pub changed: Notify,
}

impl Shared {
    pub fn new(config: FakeLineConfig) -> Shared {
        let state = FakeState {
            webhook_target: config.webhook_target.clone(),
            latency: config.latency,
            ..FakeState::default()
        };
        Shared {
            config,
            state: Mutex::new(state),
            changed: Notify::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A poisoned lock only means a panic elsewhere mid-update; the fake keeps serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes everyone waiting for the recording to change.
    pub fn notify(&self) {
        self.changed.notify_waiters();
    }

    pub fn channel(&self, account: &str) -> Option<&FakeChannel> {
        self.config
            .channels
            .iter()
            .find(|c| c.account_id.as_str() == account)
    }

    /// The channel whose access token is `token`.
    pub fn channel_by_token(&self, token: &str) -> Option<&FakeChannel> {
        self.config
            .channels
            .iter()
            .find(|c| c.access_token.expose_secret() == token)
    }

    /// The first configured channel: the one the single-account helpers use.
    pub fn default_account(&self) -> Option<&str> {
        self.config.channels.first().map(|c| c.account_id.as_str())
    }
}

/// A map that forgets its oldest entries past `cap`. Entries are never removed otherwise, so
/// the insertion order and the map stay in step.
#[derive(Debug)]
struct BoundedMap<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    fn with_cap(cap: usize) -> Self {
        BoundedMap {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, key: K, value: V) {
        if let Some(slot) = self.map.get_mut(&key) {
            *slot = value;
            return;
        }
        if self.order.len() >= self.cap {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }
}

impl Default for BoundedMap<String, IssuedToken> {
    fn default() -> Self {
        BoundedMap::with_cap(MAX_REPLY_TOKENS)
    }
}

impl Default for BoundedMap<(String, String), AcceptedPush> {
    fn default() -> Self {
        BoundedMap::with_cap(MAX_RETRY_KEYS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linedesk_actors::domain::AccountId;

    const USER: &str = "U4af4980629c0b2e7a1f5d3c8b6e9f0a1";
    const KEY: &str = "123e4567-e89b-12d3-a456-426614174000";
    const TTL: Duration = Duration::from_secs(60);

    fn channel(account: &str) -> FakeChannel {
        FakeChannel::new(AccountId::parse(account).unwrap(), "token", "secret")
    }

    fn reply(token: &str) -> ReplyRequest {
        ReplyRequest {
            reply_token: token.to_owned(),
            messages: vec![json!({ "type": "text", "text": "hi" })],
            notification_disabled: false,
        }
    }

    fn push(to: &str) -> PushRequest {
        PushRequest {
            to: to.to_owned(),
            messages: vec![json!({ "type": "text", "text": "hi" })],
            notification_disabled: false,
        }
    }

    fn message(answer: &Answer) -> &str {
        answer
            .json_body()
            .and_then(|b| b["message"].as_str())
            .unwrap_or_default()
    }

    #[test]
    fn a_reply_token_works_once_for_its_channel_within_its_ttl() {
        let mut state = FakeState::default();
        let now = Instant::now();
        let demo = channel("demo");
        let token = state.issue_reply_token("demo", USER, now);

        let other = state.reply(&channel("other"), TTL, reply(&token), "r0", now);
        assert_eq!(message(&other), INVALID_REPLY_TOKEN);
        let first = state.reply(&demo, TTL, reply(&token), "r1", now);
        assert_eq!(first.status, StatusCode::OK);
        let again = state.reply(&demo, TTL, reply(&token), "r2", now);
        assert_eq!(message(&again), INVALID_REPLY_TOKEN);

        let late = state.issue_reply_token("demo", USER, now);
        let answer = state.reply(&demo, TTL, reply(&late), "r3", now + TTL);
        assert_eq!(message(&answer), INVALID_REPLY_TOKEN);

        let deliveries: Vec<_> = state.recorder.deliveries().cloned().collect();
        assert_eq!(deliveries.len(), 1);
        assert_eq!(deliveries[0].to, USER);
        assert_eq!(deliveries[0].via, Via::Reply);
        assert_eq!(deliveries[0].request_id, "r1");
    }

    #[test]
    fn a_retry_key_is_accepted_once_per_channel_and_repeats_get_409() {
        let mut state = FakeState::default();
        let now = Instant::now();
        let demo = channel("demo");

        let first = state.push(&demo, push(USER), Some(KEY), "r1", now);
        assert_eq!(first.status, StatusCode::OK);
        let repeat = state.push(&demo, push(USER), Some(&KEY.to_uppercase()), "r2", now);
        assert_eq!(repeat.status, StatusCode::CONFLICT);
        assert_eq!(message(&repeat), RETRY_KEY_ACCEPTED);
        assert_eq!(
            repeat.headers,
            vec![("x-line-accepted-request-id", "r1".to_owned())]
        );
        assert_eq!(
            repeat.json_body().unwrap()["sentMessages"],
            first.json_body().unwrap()["sentMessages"]
        );
        let other = state.push(&channel("other"), push(USER), Some(KEY), "r3", now);
        assert_eq!(other.status, StatusCode::OK);
        let a_day_later = state.push(&demo, push(USER), Some(KEY), "r4", now + RETRY_KEY_VALIDITY);
        assert_eq!(a_day_later.status, StatusCode::OK);

        assert_eq!(state.recorder.deliveries().len(), 3);
    }

    #[test]
    fn a_push_needs_a_uuid_retry_key_and_a_line_chat_id() {
        let mut state = FakeState::default();
        let now = Instant::now();
        let demo = channel("demo");
        let answer = state.push(&demo, push(USER), Some("retry-1"), "r", now);
        assert_eq!(message(&answer), INVALID_RETRY_KEY);
        let answer = state.push(&demo, push("someone"), None, "r", now);
        assert_eq!(message(&answer), FAILED_TO_SEND);
        assert_eq!(state.recorder.deliveries().len(), 0);
    }

    #[test]
    fn profiles_are_registered_generated_or_hidden_when_blocked() {
        let mut state = FakeState::default();
        let generated = state.profile(USER, "ja");
        assert_eq!(
            generated.json_body().unwrap()["displayName"],
            "Customer 4af4"
        );
        assert_eq!(generated.json_body().unwrap()["language"], "ja");
        assert_eq!(state.profile(USER, "ja"), generated, "deterministic");

        state.register_profile(Profile {
            display_name: "山田 花子".into(),
            user_id: USER.into(),
            picture_url: None,
            status_message: None,
            language: Some("en".into()),
        });
        let registered = state.profile(USER, "ja");
        assert_eq!(registered.json_body().unwrap()["displayName"], "山田 花子");
        assert!(registered.json_body().unwrap().get("pictureUrl").is_none());

        state.block_user(USER);
        assert_eq!(state.profile(USER, "ja").status, StatusCode::NOT_FOUND);
        state.unblock_user(USER);
        assert_eq!(state.profile(USER, "ja").status, StatusCode::OK);
        assert_eq!(state.profile("U123", "ja").status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_bounded_map_forgets_its_oldest_entries() {
        let mut map = BoundedMap::with_cap(2);
        map.insert("a", 1);
        map.insert("b", 2);
        map.insert("a", 3);
        map.insert("c", 4);
        assert_eq!(map.get(&"a"), None);
        assert_eq!(map.get(&"b"), Some(&2));
        assert_eq!(map.get(&"c"), Some(&4));
    }
}
