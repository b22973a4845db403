//! What LINE told us, as a conversation sees it: decoded from the journal by the server, free of
//! LINE's wire format. Content is shared with outbound messages, so a bot or an agent sends the
//! same types a customer does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One journal event for one conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    /// Journal sequence number: applied in increasing order, each at most once.
    pub seq: u64,
    pub webhook_event_id: String,
    /// When it happened, per LINE (ms since the epoch).
    pub at_ms: i64,
    /// When linedesk acknowledged it to LINE.
    pub received_at_ms: i64,
    /// The LINE user who acted; in groups and rooms the member, when LINE tells us.
    pub sender: Option<String>,
    /// Usable once, briefly, and not on redeliveries; kept for the outbound path.
    pub reply_token: Option<String>,
    pub redelivery: bool,
    pub kind: InboundKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboundKind {
    Message {
        message_id: String,
        content: Content,
        /// Lets a reply quote this message.
        quote_token: Option<String>,
    },
    Postback {
        data: String,
        params: BTreeMap<String, String>,
    },
    /// Added as a friend, or unblocked.
    Follow {
        unblocked: bool,
    },
    /// Blocked the account: nothing may be sent any more.
    Unfollow,
    /// The customer took a message back; it must disappear from agents' view.
    Unsend {
        message_id: String,
    },
    /// The account was added to the group or room.
    Joined,
    /// The account left or was removed from the group or room.
    Left,
    MembersJoined {
        user_ids: Vec<String>,
    },
    MembersLeft {
        user_ids: Vec<String>,
    },
    /// Anything else (beacon, account link, membership, module events, types added later):
    /// recorded, no state change.
    Other {
        type_name: String,
    },
}

/// A message body, in either direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text {
        text: String,
    },
    /// `url` is where the bytes are: LINE's content API (`None` until downloaded) or an
    /// external URL.
    Image {
        url: Option<String>,
        preview_url: Option<String>,
    },
    Video {
        url: Option<String>,
        preview_url: Option<String>,
        duration_ms: Option<i64>,
    },
    Audio {
        url: Option<String>,
        duration_ms: Option<i64>,
    },
    File {
        name: String,
        size: Option<i64>,
        url: Option<String>,
    },
    Location {
        title: Option<String>,
        address: Option<String>,
        latitude: f64,
        longitude: f64,
    },
    Sticker {
        package_id: String,
        sticker_id: String,
        /// LINE's words for the sticker, so an agent can tell what it says.
        keywords: Vec<String>,
        /// The text of a message sticker.
        text: Option<String>,
    },
    /// A message type linedesk cannot show; agents see a placeholder.
    Unsupported {
        type_name: String,
    },
}

impl Content {
    /// A one-line rendering for agents and lists: the text itself, or a readable placeholder
    /// for what can't be shown inline.
    pub fn preview(&self) -> String {
        match self {
            Self::Text { text } => text.clone(),
            Self::Image { .. } => "[image]".into(),
            Self::Video { duration_ms, .. } => match duration_ms {
                Some(ms) => format!("[video, {}s]", ms / 1000),
                None => "[video]".into(),
            },
            Self::Audio { duration_ms, .. } => match duration_ms {
                Some(ms) => format!("[voice message, {}s]", ms / 1000),
                None => "[voice message]".into(),
            },
            Self::File { name, size, .. } => match size {
                Some(bytes) => format!("[file: {name}, {bytes} bytes]"),
                None => format!("[file: {name}]"),
            },
            Self::Location {
                title,
                address,
                latitude,
                longitude,
            } => {
                let place = title
                    .as_deref()
                    .or(address.as_deref())
                    .unwrap_or("location");
                format!("[location: {place} ({latitude:.5}, {longitude:.5})]")
            }
            Self::Sticker { keywords, text, .. } => match (text, keywords.first()) {
                (Some(text), _) => format!("[sticker: {text}]"),
                (None, Some(word)) => format!("[sticker: {word}]"),
                (None, None) => "[sticker]".into(),
            },
            Self::Unsupported { type_name } => {
                format!("[{type_name} message: not shown here, open LINE to see it]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_content_has_a_readable_preview() {
        let previews = [
            Content::Text { text: "hi".into() }.preview(),
            Content::Image {
                url: None,
                preview_url: None,
            }
            .preview(),
            Content::Video {
                url: None,
                preview_url: None,
                duration_ms: Some(12_000),
            }
            .preview(),
            Content::Audio {
                url: None,
                duration_ms: Some(3_000),
            }
            .preview(),
            Content::File {
                name: "a.pdf".into(),
                size: Some(10),
                url: None,
            }
            .preview(),
            Content::Location {
                title: Some("Tokyo Tower".into()),
                address: None,
                latitude: 35.6586,
                longitude: 139.7454,
            }
            .preview(),
            Content::Sticker {
                package_id: "1".into(),
                sticker_id: "2".into(),
                keywords: vec!["Happy".into()],
                text: None,
            }
            .preview(),
            Content::Unsupported {
                type_name: "hologram".into(),
            }
            .preview(),
        ];
        assert_eq!(
            previews,
            [
                "hi",
                "[image]",
                "[video, 12s]",
                "[voice message, 3s]",
                "[file: a.pdf, 10 bytes]",
                "[location: Tokyo Tower (35.65860, 139.74540)]",
                "[sticker: Happy]",
                "[hologram message: not shown here, open LINE to see it]",
            ]
        );
    }
}
