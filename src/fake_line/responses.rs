//! What the fake answers: LINE's status codes and error bodies (`{"message": ..}`, with
//! `details` for an invalid body and `sentMessages` for a repeated retry key).
//!
//! The messages marked "LINE's" are LINE's own wording (from its error reference and observed
//! responses); the others are the fake's, for cases whose wording LINE doesn't publish.

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use serde_json::{json, Value};

use super::schema::Violation;

/// 401 with a token that matches no channel. LINE's.
pub const AUTHENTICATION_FAILED: &str = "Authentication failed due to the following reason: \
     invalid token. Confirm that the access token in the authorization header is valid.";
/// 401 without an `Authorization: Bearer` header. LINE's.
pub const AUTHORIZATION_REQUIRED: &str =
    "Authorization header required. Must follow the scheme, 'Authorization: Bearer <ACCESS TOKEN>'";
/// 400 for a reply token that is unknown, used, expired or another channel's. LINE's.
pub const INVALID_REPLY_TOKEN: &str = "Invalid reply token";
/// 409 for a push whose retry key was already accepted. LINE's.
pub const RETRY_KEY_ACCEPTED: &str = "The retry key is already accepted";
/// 400 for a retry key that is not a UUID. The fake's wording.
pub const INVALID_RETRY_KEY: &str = "The retry key must be a UUID";
/// 400 for a retry key on an API that doesn't take one (reply, ...). The fake's wording.
pub const RETRY_KEY_NOT_SUPPORTED: &str = "The retry key is not supported by this API";
/// 400 for a push to something that is not a user, group or room id. LINE's.
pub const FAILED_TO_SEND: &str = "Failed to send messages";
/// 404 for a profile of a user who is not a friend (or blocked the account), unknown content,
/// or an unknown path. LINE's.
pub const NOT_FOUND: &str = "Not found";
/// 429 when the per-channel rate limit is hit. LINE's.
pub const RATE_LIMITED: &str = "The API rate limit has been exceeded. Try again later.";
/// 429 when the month's message quota is used up. LINE's.
pub const QUOTA_EXCEEDED: &str = "You have reached your monthly limit.";
/// 500. The fake's wording.
pub const INTERNAL_ERROR: &str = "Internal server error";
/// 413 for a body over [`MAX_BODY_BYTES`]. The fake's wording.
pub const PAYLOAD_TOO_LARGE: &str = "The request body is larger than 2 MB";
/// 400 for a path parameter of the wrong shape (a profile of `Uxyz`). LINE's.
pub const INVALID_USER_ID: &str = "The value for the 'userId' parameter is invalid";

/// LINE refuses request bodies over 2 MB with 413.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The message LINE puts in a 400 for a body that breaks the schema. LINE's.
pub fn invalid_body_message(errors: usize) -> String {
    format!("The request body has {errors} error(s)")
}

/// The message of a body that is not JSON. LINE's.
pub fn unparsable_body_message(error: &serde_json::Error) -> String {
    format!(
        "The request body could not be parsed as JSON (line: {}, column: {})",
        error.line(),
        error.column()
    )
}

/// The default message of an injected status.
pub fn default_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => AUTHENTICATION_FAILED,
        404 => NOT_FOUND,
        409 => RETRY_KEY_ACCEPTED,
        413 => PAYLOAD_TOO_LARGE,
        429 => RATE_LIMITED,
        500..=599 => INTERNAL_ERROR,
        _ => "Bad request",
    }
}

/// One answer of the fake LINE API, before it becomes an HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: AnswerBody,
    /// Extra headers (`X-Line-Accepted-Request-Id`); `X-Line-Request-Id` is added to all.
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AnswerBody {
    Json(Value),
    Bytes { content_type: String, bytes: Bytes },
}

impl Answer {
    pub fn json(status: StatusCode, body: Value) -> Answer {
        Answer {
            status,
            body: AnswerBody::Json(body),
            headers: Vec::new(),
        }
    }

    pub fn ok(body: Value) -> Answer {
        Answer::json(StatusCode::OK, body)
    }

    /// LINE's error body: `{"message": ..}`.
    pub fn error(status: StatusCode, message: impl Into<String>) -> Answer {
        Answer::json(status, json!({ "message": message.into() }))
    }

    pub fn bad_request(message: impl Into<String>) -> Answer {
        Answer::error(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found() -> Answer {
        Answer::error(StatusCode::NOT_FOUND, NOT_FOUND)
    }

    /// 400 for a body that breaks the schema, with one `details` entry per violation.
    pub fn invalid_body(violations: &[Violation]) -> Answer {
        let details: Vec<Value> = violations
            .iter()
            .map(|v| json!({ "message": v.line_message, "property": v.property }))
            .collect();
        Answer::json(
            StatusCode::BAD_REQUEST,
            json!({ "message": invalid_body_message(details.len()), "details": details }),
        )
    }

    pub fn bytes(content_type: &str, bytes: Bytes) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: AnswerBody::Bytes {
                content_type: content_type.to_owned(),
                bytes,
            },
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    /// The JSON body, if the answer has one (recorded next to the request).
    pub fn json_body(&self) -> Option<&Value> {
        match &self.body {
            AnswerBody::Json(value) => Some(value),
            AnswerBody::Bytes { .. } => None,
        }
    }
}
