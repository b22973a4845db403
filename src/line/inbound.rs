//! Turns a LINE webhook event into the actors' [`Inbound`]: the one place where LINE's wire
//! format meets the domain.

use linedesk_actors::domain::{Content, Inbound, InboundKind};

use super::events::{ContentProviderType, Event, EventKind, MessageContent, Source};

/// The domain view of `event`, the journal entry `seq` acknowledged at `received_at_ms`.
pub fn to_inbound(account: &str, event: &Event, seq: u64, received_at_ms: i64) -> Inbound {
    Inbound {
        seq,
        webhook_event_id: event.webhook_event_id.clone(),
        at_ms: event.timestamp,
        received_at_ms,
        sender: event
            .source
            .as_ref()
            .and_then(Source::user_id)
            .map(str::to_owned),
        reply_token: event.reply_token.clone(),
        redelivery: event.delivery_context.is_redelivery,
        kind: kind_of(account, event),
    }
}

fn kind_of(account: &str, event: &Event) -> InboundKind {
    match &event.kind {
        EventKind::Message { message } => InboundKind::Message {
            message_id: message.id().unwrap_or_default().to_owned(),
            quote_token: quote_token(message),
            content: content_of(account, message),
        },
        EventKind::Postback { postback } => InboundKind::Postback {
            data: postback.data.clone(),
            params: postback.params.clone().unwrap_or_default(),
        },
        EventKind::Follow { follow } => InboundKind::Follow {
            unblocked: follow.is_unblocked,
        },
        EventKind::Unfollow => InboundKind::Unfollow,
        EventKind::Unsend { unsend } => InboundKind::Unsend {
            message_id: unsend.message_id.clone(),
        },
        EventKind::Join => InboundKind::Joined,
        EventKind::Leave => InboundKind::Left,
        EventKind::MemberJoined { joined } => InboundKind::MembersJoined {
            user_ids: user_ids(&joined.members),
        },
        EventKind::MemberLeft { left } => InboundKind::MembersLeft {
            user_ids: user_ids(&left.members),
        },
        _ => InboundKind::Other {
            type_name: event.type_name().to_owned(),
        },
    }
}

fn user_ids(members: &[Source]) -> Vec<String> {
    members
        .iter()
        .filter_map(Source::user_id)
        .map(str::to_owned)
        .collect()
}

fn quote_token(message: &MessageContent) -> Option<String> {
    match message {
        MessageContent::Text(m) => Some(m.quote_token.clone()),
        MessageContent::Image(m) => Some(m.quote_token.clone()),
        MessageContent::Video(m) => Some(m.quote_token.clone()),
        MessageContent::Sticker(m) => Some(m.quote_token.clone()),
        _ => None,
    }
}

/// Where agents fetch a customer's LINE-hosted media once linedesk downloaded it (relative to
/// the server; agents authenticate with their token).
pub fn stored_content_path(account: &str, message_id: &str) -> String {
    format!(
        "/api/content/{}",
        crate::storage::ContentStore::customer_id(account, message_id)
    )
}

fn content_of(account: &str, message: &MessageContent) -> Content {
    // LINE-hosted content is served from linedesk's copy; external content from its provider.
    let external = |id: &str, p: &super::events::ContentProvider| match p.kind {
        ContentProviderType::External => {
            (p.original_content_url.clone(), p.preview_image_url.clone())
        }
        _ => (Some(stored_content_path(account, id)), None),
    };
    match message {
        MessageContent::Text(m) => Content::Text {
            text: m.text.clone(),
        },
        MessageContent::Image(m) => {
            let (url, preview_url) = external(&m.id, &m.content_provider);
            Content::Image { url, preview_url }
        }
        MessageContent::Video(m) => {
            let (url, preview_url) = external(&m.id, &m.content_provider);
            Content::Video {
                url,
                preview_url,
                duration_ms: m.duration,
            }
        }
        MessageContent::Audio(m) => Content::Audio {
            url: external(&m.id, &m.content_provider).0,
            duration_ms: m.duration,
        },
        MessageContent::File(m) => Content::File {
            name: m.file_name.clone(),
            size: Some(m.file_size),
            url: Some(stored_content_path(account, &m.id)),
        },
        MessageContent::Location(m) => Content::Location {
            title: m.title.clone(),
            address: m.address.clone(),
            latitude: m.latitude,
            longitude: m.longitude,
        },
        MessageContent::Sticker(m) => Content::Sticker {
            package_id: m.package_id.clone(),
            sticker_id: m.sticker_id.clone(),
            keywords: m.keywords.clone().unwrap_or_default(),
            text: m.text.clone(),
        },
        MessageContent::Unknown { type_name } => Content::Unsupported {
            type_name: type_name.clone(),
        },
    }
}
