//! The fake acting as LINE toward linedesk: webhook bodies signed with the channel secret and
//! POSTed to the account's webhook URL, and the events in them built as LINE builds them (fresh
//! `webhookEventId`, a reply token the fake will honour, `mode: active`, timestamps now).
//!
//! The fake only ever calls loopback URLs (`http://127.0.0.1`, `http://[::1]`,
//! `http://localhost`): it signs with real channel secrets, and must not become a way to send
//! signed requests elsewhere.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::ids;
use super::state::Shared;
use crate::line::signature;

/// Why a webhook could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("no channel is configured for account `{0}`")]
    UnknownAccount(String),
    #[error("account `{0}` has no webhook URL (set a webhook target)")]
    NoWebhookUrl(String),
    #[error("{0}")]
    NotLoopback(String),
    #[error("could not connect to {url}: {reason}")]
    CouldNotConnect { url: String, reason: String },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("sending to {url} failed: {reason}")]
    Failed { url: String, reason: String },
}

/// A customer's text message, sent as a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct SentText {
    /// What linedesk answered the webhook.
    pub status: StatusCode,
    /// The reply token in the event; the fake honours it once, for this user.
    pub reply_token: String,
    pub webhook_event_id: String,
    pub message_id: String,
    /// The whole event object, as sent.
    pub event: Value,
}

/// Refuses any URL the fake should not call: only plain `http://` on a loopback host.
pub(crate) fn check_loopback_url(url: &str) -> Result<(), WebhookError> {
    let refuse = || {
        WebhookError::NotLoopback(format!(
            "the fake LINE platform only calls http:// URLs on 127.0.0.1, [::1] or localhost, \
             not {url:?}"
        ))
    };
    let rest = url.strip_prefix("http://").ok_or_else(refuse)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(refuse());
    }
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// POSTs `body` to `url` signed with `secret`, with LINE's headers; returns the status answered.
#[tracing::instrument(name = "fake_line.webhook", skip_all, fields(url = %url))]
pub(crate) async fn post_signed(
    client: &awc::Client,
    url: &str,
    secret: &[u8],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<StatusCode, WebhookError> {
    check_loopback_url(url)?;
    let signature = signature::sign(secret, &body);
    let response = client
        .post(url)
        .timeout(timeout)
        .insert_header(("content-type", "application/json; charset=utf-8"))
        .insert_header(("user-agent", "LineBotWebhook/2.0"))
        .insert_header(("x-line-signature", signature))
        .send_body(body)
        .await;
    match response {
        Ok(response) => Ok(response.status()),
        Err(awc::error::SendRequestError::Timeout) => Err(WebhookError::Timeout {
            url: url.to_owned(),
            timeout,
        }),
        Err(awc::error::SendRequestError::Connect(e)) => Err(WebhookError::CouldNotConnect {
            url: url.to_owned(),
            reason: e.to_string(),
        }),
        Err(e) => Err(WebhookError::Failed {
            url: url.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// A client for webhooks: no default timeout (each request sets its own), no redirects.
pub(crate) fn client() -> awc::Client {
    awc::Client::builder().disable_redirects().finish()
}

impl Shared {
    /// Signs `{"destination": <bot user id>, "events": events}` with `account`'s secret and
    /// POSTs it to the account's webhook URL.
    pub(crate) async fn send_webhook(
        &self,
        client: &awc::Client,
        account: &str,
        events: Vec<Value>,
    ) -> Result<StatusCode, WebhookError> {
        let channel = self
            .channel(account)
            .ok_or_else(|| WebhookError::UnknownAccount(account.to_owned()))?;
        let url = self
            .lock()
            .webhook_url(account)
            .ok_or_else(|| WebhookError::NoWebhookUrl(account.to_owned()))?;
        let body = json!({ "destination": channel.bot_user_id, "events": events });
        // unwrap: a `Value` always serializes.
        let body = serde_json::to_vec(&body).unwrap();
        post_signed(
            client,
            &url,
            channel.channel_secret.expose_secret().as_bytes(),
            body,
            self.config.webhook_timeout,
        )
        .await
    }

    /// A one-to-one text message event from `user_id`, sent now, carrying a fresh reply token
    /// issued for that user on `account`.
    pub(crate) fn text_event(&self, account: &str, user_id: &str, text: &str) -> Value {
        let reply_token = self
            .lock()
            .issue_reply_token(account, user_id, Instant::now());
        let now = ids::now_ms();
        json!({
            "type": "message",
            "message": {
                "type": "text",
                "id": ids::message_id(),
                "text": text,
                "quoteToken": ids::quote_token(),
                "markAsReadToken": ids::quote_token(),
            },
            "webhookEventId": ids::webhook_event_id(now),
            "deliveryContext": { "isRedelivery": false },
            "timestamp": now,
            "source": { "type": "user", "userId": user_id },
            "replyToken": reply_token,
            "mode": "active",
        })
    }

    /// Sends a text message from `user_id` to `account` as a webhook.
    pub(crate) async fn send_text_as(
        &self,
        client: &awc::Client,
        account: &str,
        user_id: &str,
        text: &str,
    ) -> Result<SentText, WebhookError> {
        if self.channel(account).is_none() {
            return Err(WebhookError::UnknownAccount(account.to_owned()));
        }
        let event = self.text_event(account, user_id, text);
        let status = self
            .send_webhook(client, account, vec![event.clone()])
            .await?;
        let field = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        Ok(SentText {
            status,
            reply_token: field(&event["replyToken"]),
            webhook_event_id: field(&event["webhookEventId"]),
            message_id: field(&event["message"]["id"]),
            event,
        })
    }

    /// `POST /v2/bot/channel/webhook/test`: sends an empty, signed webhook (as LINE's "Verify"
    /// does) and reports how it went, in LINE's `TestWebhookEndpointResponse`.
    pub(crate) async fn test_webhook(&self, account: &str, url: &str) -> Value {
        let Some(channel) = self.channel(account) else {
            return json!({});
        };
        let body = json!({ "destination": channel.bot_user_id, "events": [] });
        // unwrap: a `Value` always serializes.
        let body = serde_json::to_vec(&body).unwrap();
        let outcome = post_signed(
            &client(),
            url,
            channel.channel_secret.expose_secret().as_bytes(),
            body,
            self.config.webhook_timeout,
        )
        .await;
        let (success, status, reason, detail) = match outcome {
            Ok(status) if status.is_success() => {
                (true, status.as_u16(), "OK", status.as_u16().to_string())
            }
            Ok(status) => (
                false,
                status.as_u16(),
                "ERROR_STATUS_CODE",
                format!("The webhook returned an HTTP status code other than 200.({status})"),
            ),
            Err(e @ WebhookError::Timeout { .. }) => (false, 0, "REQUEST_TIMEOUT", e.to_string()),
            Err(e @ WebhookError::CouldNotConnect { .. }) => {
                (false, 0, "COULD_NOT_CONNECT", e.to_string())
            }
            Err(e) => (false, 0, "UNCLASSIFIED", e.to_string()),
        };
        json!({
            "success": success,
            "timestamp": ids::rfc3339(ids::now_ms()),
            "statusCode": status,
            "reason": reason,
            "detail": detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_urls_are_called() {
        for url in [
            "http://127.0.0.1:8080/line/webhook/demo",
            "http://127.0.0.2",
            "http://localhost:1/x",
            "http://[::1]:9/line/webhook/demo",
        ] {
            assert_eq!(check_loopback_url(url), Ok(()), "{url}");
        }
        for url in [
            "https://127.0.0.1/x",
            "http://example.com/x",
            "http://10.0.0.1:80/",
            "http://127.0.0.1@example.com/",
            "http://localhost.example.com/",
            "ftp://127.0.0.1/",
        ] {
            assert!(check_loopback_url(url).is_err(), "{url}");
        }
    }
}
