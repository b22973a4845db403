//! Contract tests against LINE's own OpenAPI files: our webhook fixtures must be what LINE sends,
//! our parser must read all of them, and the schema validator must be able to say no.

use linedesk::fake_line::schema::OpenApi;
use linedesk::line::events::{parse_event, EventKind, MessageContent};
use serde_json::{json, Value};

use crate::line_payloads::{callback, every_event, text_event, ulid, USER_ID};

/// The bot's user ID, as `destination` of every request.
const DEST: &str = "Ub1f2a3c4d5e6f708192a3b4c5d6e7f80";

fn webhook_schema() -> &'static OpenApi {
    OpenApi::webhook()
}

fn messaging_api_schema() -> &'static OpenApi {
    OpenApi::messaging_api()
}

/// `webhook.yml`'s event types and message types: the ones the parser must know.
fn known_types() -> (Vec<String>, Vec<String>) {
    let schema = webhook_schema();
    (
        schema.discriminator_values("Event"),
        schema.discriminator_values("MessageContent"),
    )
}

fn message_type(event: &Value) -> Option<&str> {
    event.get("message")?.get("type")?.as_str()
}

fn assert_rejected(errors: Result<(), Vec<String>>, expected: &[&str]) {
    let errors = errors.expect_err("the instance breaks the schema");
    let all = errors.join("\n");
    for needle in expected {
        assert!(all.contains(needle), "no error mentions {needle:?}:\n{all}");
    }
}

#[test]
fn every_payload_validates_against_callback_request() {
    let events = every_event(DEST);
    for (label, event) in &events {
        if let Err(errors) = webhook_schema().validate("Event", event) {
            panic!("{label} breaks webhook.yml:\n{}", errors.join("\n"));
        }
    }

    let body = callback(DEST, events.into_iter().map(|(_, event)| event).collect());

    if let Err(errors) = webhook_schema().validate("CallbackRequest", &body) {
        panic!("the callback breaks webhook.yml:\n{}", errors.join("\n"));
    }
}

#[test]
fn unknown_event_and_message_types_validate_against_the_base_schemas() {
    let (event_types, message_types) = known_types();
    let unknown: Vec<(&str, Value)> = every_event(DEST)
        .into_iter()
        .filter(|(_, event)| {
            let event_type = event["type"].as_str().unwrap_or_default();
            let unknown_message =
                message_type(event).is_some_and(|t| !message_types.iter().any(|k| k == t));
            !event_types.iter().any(|k| k == event_type) || unknown_message
        })
        .collect();
    assert_eq!(
        unknown.iter().map(|(label, _)| *label).collect::<Vec<_>>(),
        ["message/futureMessage", "futureEvent"]
    );

    for (label, event) in unknown {
        let body = callback(DEST, vec![event]);
        if let Err(errors) = webhook_schema().validate("CallbackRequest", &body) {
            panic!("{label} breaks webhook.yml:\n{}", errors.join("\n"));
        }
    }
}

#[test]
fn every_event_and_message_type_in_the_schema_has_a_payload() {
    let (event_types, message_types) = known_types();
    let events = every_event(DEST);

    for event_type in &event_types {
        assert!(
            events.iter().any(|(_, e)| e["type"] == event_type.as_str()),
            "no payload for event type {event_type}"
        );
    }
    for kind in &message_types {
        assert!(
            events.iter().any(|(_, e)| message_type(e) == Some(kind)),
            "no payload for message type {kind}"
        );
    }
}

#[test]
fn every_payload_has_a_unique_webhook_event_id() {
    let events = every_event(DEST);
    let mut ids: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["webhookEventId"].as_str().unwrap_or_default())
        .collect();
    ids.sort_unstable();
    ids.dedup();

    assert_eq!(ids.len(), events.len());
    assert!(ids.iter().all(|id| id.len() == 26), "{ids:?}");
}

#[test]
fn every_payload_parses_into_the_kind_its_type_names() {
    let (event_types, message_types) = known_types();

    for (label, json) in every_event(DEST) {
        let event = parse_event(&json.to_string())
            .unwrap_or_else(|e| panic!("{label} does not parse: {e}"));

        let event_type = json["type"].as_str().unwrap_or_default();
        assert_eq!(event.type_name(), event_type, "{label}");
        let known = event_types.iter().any(|k| k == event_type);
        assert_eq!(
            !matches!(event.kind, EventKind::Unknown { .. }),
            known,
            "{label} parsed as {:?}",
            event.kind
        );
        assert_eq!(
            event.webhook_event_id,
            json["webhookEventId"].as_str().unwrap_or_default(),
            "{label}"
        );
        assert_eq!(
            event.source.as_ref().and_then(|s| s.user_id()),
            json["source"]["userId"].as_str(),
            "{label}"
        );

        if let EventKind::Message { message } = &event.kind {
            let kind = message_type(&json).unwrap_or_default();
            assert_eq!(message.type_name(), kind, "{label}");
            let known = message_types.iter().any(|k| k == kind);
            assert_eq!(
                !matches!(message, MessageContent::Unknown { .. }),
                known,
                "{label} parsed as {message:?}"
            );
            if known {
                assert_eq!(message.id(), json["message"]["id"].as_str(), "{label}");
            }
        }
    }
}

#[test]
fn every_known_payload_survives_a_serialize_and_parse_round_trip() {
    for (label, json) in every_event(DEST) {
        let event = parse_event(&json.to_string())
            .unwrap_or_else(|e| panic!("{label} does not parse: {e}"));
        if matches!(event.kind, EventKind::Unknown { .. }) {
            continue;
        }

        let serialized = serde_json::to_value(&event).expect("events serialize");

        assert_eq!(
            parse_event(&serialized.to_string()).ok().as_ref(),
            Some(&event),
            "{label}"
        );
        let is_message_of_unknown_type = matches!(
            &event.kind,
            EventKind::Message {
                message: MessageContent::Unknown { .. }
            }
        );
        if !is_message_of_unknown_type {
            assert_eq!(
                serialized, json,
                "{label} serializes back to what LINE sent"
            );
        }
    }
}

#[test]
fn a_text_event_validates_and_parses() {
    let id = ulid(1_732_492_800_000, 42);
    let event = text_event(USER_ID, &id, "Where is my order?");

    if let Err(errors) =
        webhook_schema().validate("CallbackRequest", &callback(DEST, vec![event.clone()]))
    {
        panic!("text_event breaks webhook.yml:\n{}", errors.join("\n"));
    }
    let parsed = parse_event(&event.to_string()).expect("text_event parses");
    let EventKind::Message {
        message: MessageContent::Text(text),
    } = parsed.kind
    else {
        panic!("expected a text message, got {:?}", parsed.kind)
    };
    assert_eq!(text.text, "Where is my order?");
    assert_eq!(parsed.webhook_event_id, id);
    assert_eq!(
        parsed.source.as_ref().and_then(|s| s.user_id()),
        Some(USER_ID)
    );
}

#[test]
fn the_validator_rejects_a_text_message_without_text() {
    let mut event = text_event(USER_ID, &ulid(1_732_492_800_000, 1), "hello");
    event["message"]
        .as_object_mut()
        .expect("text_event has a message object")
        .remove("text");

    assert_rejected(
        webhook_schema().validate("CallbackRequest", &callback(DEST, vec![event])),
        &["/events/0/message", "\"text\" is a required property"],
    );
}

#[test]
fn the_validator_rejects_a_known_event_without_its_payload() {
    let (_, mut follow) = every_event(DEST)
        .into_iter()
        .find(|(label, _)| *label == "follow")
        .expect("every_event has a follow event");
    follow
        .as_object_mut()
        .expect("events are objects")
        .remove("follow");

    assert_rejected(
        webhook_schema().validate("Event", &follow),
        &["\"follow\" is a required property"],
    );
    assert!(parse_event(&follow.to_string()).is_err());
}

#[test]
fn the_validator_rejects_a_wrongly_typed_field_deep_in_a_subtype() {
    let mut event = text_event(USER_ID, &ulid(1_732_492_800_000, 2), "@bot hi");
    event["message"]["mention"] = json!({
        "mentionees": [{ "type": "user", "index": 0, "length": 4, "isSelf": "yes" }]
    });

    assert_rejected(
        webhook_schema().validate("Event", &event),
        &["/message/mention/mentionees/0/isSelf"],
    );
}

#[test]
fn the_validator_rejects_a_destination_not_matching_the_pattern() {
    let body = callback("U123", Vec::new());

    assert_rejected(
        webhook_schema().validate("CallbackRequest", &body),
        &["/destination"],
    );
    assert!(webhook_schema()
        .validate("CallbackRequest", &callback(DEST, Vec::new()))
        .is_ok());
}

#[test]
fn the_validator_accepts_a_valid_push_request() {
    let push = json!({
        "to": USER_ID,
        "messages": [
            { "type": "text", "text": "Your order has shipped.", "quoteToken": "q" },
            { "type": "sticker", "packageId": "446", "stickerId": "1988" }
        ]
    });

    if let Err(errors) = messaging_api_schema().validate("PushMessageRequest", &push) {
        panic!("a valid push request was rejected:\n{}", errors.join("\n"));
    }
}

#[test]
fn the_validator_rejects_a_push_request_with_a_text_message_missing_text() {
    let push = json!({
        "to": USER_ID,
        "messages": [{ "type": "text", "quoteToken": "q" }]
    });

    assert_rejected(
        messaging_api_schema().validate("PushMessageRequest", &push),
        &["/messages/0", "\"text\" is a required property"],
    );
}

#[test]
fn the_validator_rejects_a_reply_request_without_messages() {
    let reply = json!({ "replyToken": "b60d432864f44d079f6d8efe86cf404b", "messages": [] });

    assert_rejected(
        messaging_api_schema().validate("ReplyMessageRequest", &reply),
        &["/messages"],
    );
}

#[test]
fn the_validator_checks_nested_discriminators_in_outgoing_messages() {
    // Message -> TextMessage -> QuickReply -> Action -> PostbackAction, whose `data` is at most
    // 300 characters. (Most action fields, such as a message action's `text`, are not `required`
    // in messaging-api.yml, though LINE's docs say they are.)
    let too_long_postback = json!({
        "type": "text",
        "text": "Pick one",
        "quickReply": {
            "items": [{
                "type": "action",
                "action": { "type": "postback", "label": "Yes", "data": "x".repeat(301) }
            }]
        }
    });

    assert_rejected(
        messaging_api_schema().validate("Message", &too_long_postback),
        &["/quickReply/items/0/action/data"],
    );
}
