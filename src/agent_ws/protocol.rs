//! The agent websocket protocol: JSON text frames with a `type` field. Documented frame by
//! frame in docs/agent-protocol.md; these types are that document's source of truth.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Agent → server. Frames live for one handler call, so `send`'s size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Presence {
        status: String,
    },
    Accept {
        conversation_id: String,
    },
    Reject {
        conversation_id: String,
    },
    Send {
        conversation_id: String,
        client_msg_id: String,
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        sticker: Option<StickerRef>,
        #[serde(default)]
        image_url: Option<String>,
        #[serde(default)]
        video_url: Option<String>,
        /// The still shown before an image or video loads (LINE needs one for video).
        #[serde(default)]
        preview_url: Option<String>,
        #[serde(default)]
        audio_url: Option<String>,
        #[serde(default)]
        duration_ms: Option<i64>,
        #[serde(default)]
        file_url: Option<String>,
        #[serde(default)]
        file_name: Option<String>,
        #[serde(default)]
        location: Option<LocationRef>,
        /// Buttons under the message (≤ 13); a tap sends `text` as the customer.
        #[serde(default)]
        quick_replies: Vec<QuickReplyRef>,
    },
    SetWaiting {
        conversation_id: String,
    },
    End {
        conversation_id: String,
    },
    WrapUpDone {
        conversation_id: String,
    },
    Transfer {
        conversation_id: String,
        #[serde(default)]
        queue: Option<String>,
        #[serde(default)]
        agent_id: Option<String>,
    },
    Note {
        conversation_id: String,
        text: String,
    },
    Ping {},
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocationRef {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuickReplyRef {
    pub label: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct StickerRef {
    pub package_id: String,
    pub sticker_id: String,
}

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Hello {
        agent: AgentInfo,
        presence: String,
        conversations: Vec<Value>,
    },
    Offer {
        conversation_id: String,
        queue: String,
        customer: Value,
        recent_messages: Vec<Value>,
        expires_at_ms: i64,
    },
    OfferRevoked {
        conversation_id: String,
        reason: String,
    },
    /// With the latest messages: some may have come after the offer.
    Assigned {
        conversation_id: String,
        #[serde(default)]
        recent_messages: Vec<Value>,
    },
    Message {
        conversation_id: String,
        from: String,
        content: Value,
        preview: String,
        at_ms: i64,
    },
    Conversation {
        conversation_id: String,
        status: String,
    },
    Ack {
        client_msg_id: String,
        conversation_id: String,
    },
    /// The agent's effective presence (`busy` at full capacity).
    Presence {
        status: String,
    },
    /// What became of a sent message: `queued` (retrying: `attempts`, `last_error`),
    /// `sent_reply`, `sent_push` or `failed` (`reason`).
    Delivery {
        conversation_id: String,
        client_msg_id: String,
        #[serde(flatten)]
        status: linedesk_actors::domain::DeliveryStatus,
    },
    Error {
        code: String,
        message: String,
        #[serde(rename = "ref")]
        reference: Option<String>,
    },
    Pong {},
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    pub name: String,
}

impl ServerFrame {
    pub fn error(code: &str, message: impl Into<String>, reference: Option<String>) -> Self {
        Self::Error {
            code: code.into(),
            message: message.into(),
            reference,
        }
    }

    pub fn to_text(&self) -> String {
        // unwrap: frames are strings, numbers and JSON values: they always serialise.
        serde_json::to_string(self).unwrap()
    }
}

/// Parses one text frame, or says precisely what is wrong with it.
pub fn parse(text: &str) -> Result<ClientFrame, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or("a frame needs a string `type`")?
        .to_owned();
    serde_json::from_value(value).map_err(|e| {
        if e.to_string().starts_with("unknown variant") {
            format!("unknown frame type `{kind}`")
        } else {
            format!("bad `{kind}` frame: {e}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse(r#"{"type":"accept","conversation_id":"demo.user.U1.1"}"#),
            Ok(ClientFrame::Accept {
                conversation_id: "demo.user.U1.1".into()
            })
        );
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping {}));
        assert!(parse("nope").unwrap_err().starts_with("not JSON"));
        assert_eq!(
            parse(r#"{"kind":"x"}"#).unwrap_err(),
            "a frame needs a string `type`"
        );
        assert_eq!(
            parse(r#"{"type":"dance"}"#).unwrap_err(),
            "unknown frame type `dance`"
        );
        assert!(parse(r#"{"type":"accept"}"#)
            .unwrap_err()
            .contains("conversation_id"));
    }

    #[test]
    fn server_frames_carry_their_type() {
        let text = ServerFrame::error("not_yours", "no", Some("c1".into())).to_text();
        assert_eq!(
            text,
            r#"{"type":"error","code":"not_yours","message":"no","ref":"c1"}"#
        );
        assert_eq!(ServerFrame::Pong {}.to_text(), r#"{"type":"pong"}"#);
    }
}
