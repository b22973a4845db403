//! Reading LINE request bodies as LINE does: JSON only, checked against the operation's schema
//! in `messaging-api.yml` (discriminators resolved, so a text message without `text` is refused),
//! and message `type`s LINE doesn't know refused too. A body that fails any check is answered
//! 400 `{"message": "The request body has N error(s)", "details": [{message, property}]}`.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::responses::{unparsable_body_message, Answer};
use super::schema::{OpenApi, Violation};

/// `POST /v2/bot/message/reply` (`ReplyMessageRequest`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReplyRequest {
    pub reply_token: String,
    pub messages: Vec<Value>,
    #[serde(default)]
    pub notification_disabled: bool,
}

/// `POST /v2/bot/message/push` (`PushMessageRequest`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PushRequest {
    pub to: String,
    pub messages: Vec<Value>,
    #[serde(default)]
    pub notification_disabled: bool,
}

/// `PUT /v2/bot/channel/webhook/endpoint` (`SetWebhookEndpointRequest`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SetWebhookEndpointRequest {
    pub endpoint: String,
}

/// `POST /v2/bot/channel/webhook/test` (`TestWebhookEndpointRequest`); the body is optional.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct TestWebhookEndpointRequest {
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// Parses `body` as the request `schema` names. With `schema_check` off, only what the fake
/// itself needs is checked (the fields it reads).
pub(crate) fn read<T: DeserializeOwned>(
    body: &[u8],
    content_type: Option<&str>,
    schema: &str,
    schema_check: bool,
) -> Result<T, Answer> {
    let value: Value = if body.is_empty() {
        Value::Object(Default::default())
    } else {
        let media_type = content_type
            .and_then(|ct| ct.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(Answer::error(
                actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "The content type, {}, is not supported",
                    content_type.unwrap_or("(none)")
                ),
            ));
        }
        serde_json::from_slice(body)
            .map_err(|e| Answer::bad_request(unparsable_body_message(&e)))?
    };
    if schema_check {
        let document = OpenApi::messaging_api();
        let mut violations = document.violations(schema, &value);
        violations.extend(unknown_message_types(document, &value));
        if !violations.is_empty() {
            return Err(Answer::invalid_body(&violations));
        }
    }
    serde_json::from_value(value).map_err(|e| {
        Answer::invalid_body(&[Violation {
            pointer: String::new(),
            property: String::new(),
            message: e.to_string(),
            line_message: e.to_string(),
        }])
    })
}

/// LINE refuses message types it doesn't have; the schema alone lets them through (its
/// discriminator dispatch only checks known types, so that LINE can add webhook types).
fn unknown_message_types(document: &OpenApi, body: &Value) -> Vec<Violation> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Vec::new();
    };
    let known = document.discriminator_values("Message");
    messages
        .iter()
        .enumerate()
        .filter_map(|(i, message)| {
            let kind = message.get("type")?.as_str()?;
            (!known.iter().any(|k| k == kind)).then(|| Violation {
                pointer: format!("/messages/{i}/type"),
                property: format!("messages[{i}].type"),
                message: format!("unknown message type {kind:?}"),
                line_message: format!(
                    "Must be one of the following values: [{}]",
                    known.join(", ")
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const JSON: Option<&str> = Some("application/json; charset=utf-8");

    fn read_push(body: &Value) -> Result<PushRequest, Answer> {
        read(
            &serde_json::to_vec(body).unwrap(),
            JSON,
            "PushMessageRequest",
            true,
        )
    }

    fn details(answer: Answer) -> Value {
        answer.json_body().cloned().unwrap_or_default()
    }

    #[test]
    fn a_valid_push_reads() {
        let push = read_push(&json!({
            "to": "U4af4980629c0b2e7a1f5d3c8b6e9f0a1",
            "messages": [{ "type": "text", "text": "hi" }],
            "notificationDisabled": true
        }))
        .expect("valid");
        assert_eq!(push.messages.len(), 1);
        assert!(push.notification_disabled);
    }

    #[test]
    fn schema_violations_come_back_as_line_details() {
        let answer = read_push(&json!({
            "to": "U4af4980629c0b2e7a1f5d3c8b6e9f0a1",
            "messages": [{ "type": "text" }, { "type": "hologram" }]
        }))
        .expect_err("invalid");
        let body = details(answer);
        assert_eq!(body["message"], "The request body has 2 error(s)");
        assert_eq!(body["details"][0]["property"], "messages[0].text");
        assert_eq!(body["details"][0]["message"], "must be specified");
        assert_eq!(body["details"][1]["property"], "messages[1].type");
    }

    #[test]
    fn too_many_messages_and_a_missing_to_are_refused() {
        let text = json!({ "type": "text", "text": "hi" });
        let answer = read_push(&json!({ "messages": vec![text; 6] })).expect_err("invalid");
        let body = details(answer);
        let properties: Vec<&str> = body["details"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["property"].as_str())
            .collect();
        assert!(properties.contains(&"to"), "{body}");
        assert!(properties.contains(&"messages"), "{body}");
    }

    #[test]
    fn a_body_that_is_not_json_is_refused_with_its_position() {
        let answer = read::<PushRequest>(b"{\"to\": ", JSON, "PushMessageRequest", true)
            .expect_err("not JSON");
        assert!(details(answer)["message"]
            .as_str()
            .unwrap()
            .starts_with("The request body could not be parsed as JSON (line: 1"));
        let answer = read::<PushRequest>(b"{}", Some("text/plain"), "PushMessageRequest", true)
            .expect_err("not JSON");
        assert_eq!(answer.status.as_u16(), 415);
    }

    #[test]
    fn without_the_schema_check_only_the_fields_read_are_checked() {
        let lenient = read::<PushRequest>(
            br#"{"to": "x", "messages": [{"type": "hologram"}]}"#,
            JSON,
            "PushMessageRequest",
            false,
        );
        assert!(lenient.is_ok());
        let missing =
            read::<PushRequest>(br#"{"messages": []}"#, JSON, "PushMessageRequest", false);
        assert_eq!(missing.expect_err("no `to`").status.as_u16(), 400);
    }
}
