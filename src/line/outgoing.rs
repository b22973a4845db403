//! linedesk content → LINE message objects (reference section 4), ready for
//! [`super::client::LineClient::reply`] and [`super::client::LineClient::push`].
//!
//! [`line_messages`] turns one [`Content`] into one or more message objects, bending it into what
//! LINE accepts: long text is split, a file (LINE has no file message) becomes a link, media LINE
//! can't show natively becomes a link too. [`requests`] then groups messages five to a request and
//! puts the quick replies where LINE shows them: on the last message sent.

use linedesk_actors::domain::Content;
use serde_json::{json, Map, Value};
use unicode_segmentation::UnicodeSegmentation;

/// Longest text message LINE accepts, counted in UTF-16 code units.
pub const MAX_TEXT_UTF16: usize = 5_000;
/// Message objects per reply or push request.
pub const MAX_MESSAGES_PER_REQUEST: usize = 5;
/// Quick-reply buttons LINE shows on one message.
pub const MAX_QUICK_REPLIES: usize = 13;
/// Longest quick-reply label, in characters.
pub const MAX_QUICK_REPLY_LABEL: usize = 20;
/// Longest `sender.name`, in characters.
pub const MAX_SENDER_NAME: usize = 20;
/// Longest media or icon URL LINE accepts.
pub const MAX_URL_CHARS: usize = 2_000;
/// Longest location title or address.
pub const MAX_LOCATION_FIELD: usize = 100;

/// Who a message appears to come from: an agent's name and icon, shown in the bubble as
/// "name from <account name>".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Truncated to 20 characters; omitted when blank. LINE also refuses some words (such as
    /// "LINE") with a 400, which only LINE can tell.
    pub name: String,
    /// Must be https.
    pub icon_url: Option<String>,
}

/// A quick-reply button that sends `text` as the customer when tapped (a `message` action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuickReply {
    /// The button's caption, truncated to 20 characters; the text's start when blank.
    pub label: String,
    pub text: String,
}

/// Why content can't be sent to LINE. Each names the offending field, for the agent who sent it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutgoingError {
    #[error("{type_name} messages can't be sent to LINE")]
    Unsupported { type_name: String },
    #[error("a text message can't be empty")]
    EmptyText,
    #[error("`{field}` is missing: LINE needs a URL to fetch the media from")]
    MissingUrl { field: &'static str },
    #[error("`{field}` must be an https URL: LINE fetches media over https only")]
    NotHttps { field: &'static str },
    #[error("`{field}` is longer than LINE's limit of {limit} characters")]
    UrlTooLong { field: &'static str, limit: usize },
    #[error("the location ({latitude}, {longitude}) is not a valid latitude and longitude")]
    InvalidLocation { latitude: f64, longitude: f64 },
}

impl OutgoingError {
    /// A stable snake_case label for metrics and for agents' clients.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unsupported { .. } => "unsupported",
            Self::EmptyText => "empty_text",
            Self::MissingUrl { .. } => "missing_url",
            Self::NotHttps { .. } => "not_https",
            Self::UrlTooLong { .. } => "url_too_long",
            Self::InvalidLocation { .. } => "invalid_location",
        }
    }
}

/// LINE message objects for one piece of content, in order.
///
/// - Text above 5,000 UTF-16 units is split: after the last newline of the window when that keeps
///   at least half of it, else after the last space likewise, else at the last grapheme boundary
///   (never inside a surrogate pair, emoji sequence or combining mark). The newline or space at a
///   split is dropped.
/// - A file becomes a text with its name, size and link (LINE has no file message).
/// - A video without a preview image and audio without a positive duration also go as links.
/// - An image without a preview uses the image itself as its preview.
/// - A location without title or address gets "Location" and its coordinates.
/// - [`Content::Unsupported`] is an error, and so is any media URL that is missing, not https, or
///   longer than 2,000 characters.
///
/// `sender`, when given, is set on every message.
pub fn line_messages(
    content: &Content,
    sender: Option<&Sender>,
) -> Result<Vec<Value>, OutgoingError> {
    let sender = sender.map(sender_object).transpose()?.flatten();
    let mut messages = match content {
        Content::Text { text } => text_messages(text)?,
        Content::Image { url, preview_url } => {
            let original = media_url(url.as_deref(), "content.url")?;
            let preview = match preview_url {
                Some(preview) => media_url(Some(preview), "content.preview_url")?,
                None => original,
            };
            vec![json!({
                "type": "image",
                "originalContentUrl": original,
                "previewImageUrl": preview,
            })]
        }
        Content::Video {
            url, preview_url, ..
        } => {
            let original = media_url(url.as_deref(), "content.url")?;
            match preview_url {
                Some(preview) => vec![json!({
                    "type": "video",
                    "originalContentUrl": original,
                    "previewImageUrl": media_url(Some(preview), "content.preview_url")?,
                })],
                None => text_messages(&format!("Video: {original}"))?,
            }
        }
        Content::Audio { url, duration_ms } => {
            let original = media_url(url.as_deref(), "content.url")?;
            match duration_ms {
                Some(duration) if *duration > 0 => vec![json!({
                    "type": "audio",
                    "originalContentUrl": original,
                    "duration": duration,
                })],
                _ => text_messages(&format!("Voice message: {original}"))?,
            }
        }
        Content::File { name, size, url } => {
            let link = media_url(url.as_deref(), "content.url")?;
            let name = match name.trim() {
                "" => "file",
                name => name,
            };
            let text = match size {
                Some(bytes) if *bytes >= 0 => {
                    format!("File: {name} ({})\n{link}", readable_size(*bytes))
                }
                _ => format!("File: {name}\n{link}"),
            };
            text_messages(&text)?
        }
        Content::Location {
            title,
            address,
            latitude,
            longitude,
        } => vec![location_message(
            title.as_deref(),
            address.as_deref(),
            *latitude,
            *longitude,
        )?],
        Content::Sticker {
            package_id,
            sticker_id,
            ..
        } => vec![json!({
            "type": "sticker",
            "packageId": package_id,
            "stickerId": sticker_id,
        })],
        Content::Unsupported { type_name } => {
            return Err(OutgoingError::Unsupported {
                type_name: type_name.clone(),
            })
        }
    };
    if let Some(sender) = sender {
        for message in &mut messages {
            message["sender"] = sender.clone();
        }
    }
    Ok(messages)
}

/// Groups `messages` into requests of at most five, in order. The quick replies (the first 13;
/// labels truncated to 20 characters) go on the last message of the last request, the one LINE
/// shows them with. No messages, no requests.
pub fn requests(messages: Vec<Value>, quick_replies: &[QuickReply]) -> Vec<Vec<Value>> {
    let mut requests: Vec<Vec<Value>> = Vec::new();
    for message in messages {
        match requests.last_mut() {
            Some(request) if request.len() < MAX_MESSAGES_PER_REQUEST => request.push(message),
            _ => requests.push(vec![message]),
        }
    }
    if !quick_replies.is_empty() {
        if let Some(last) = requests.last_mut().and_then(|r| r.last_mut()) {
            let items: Vec<Value> = quick_replies
                .iter()
                .take(MAX_QUICK_REPLIES)
                .map(quick_reply_item)
                .collect();
            last["quickReply"] = json!({ "items": items });
        }
    }
    requests
}

fn quick_reply_item(reply: &QuickReply) -> Value {
    let label = match reply.label.trim() {
        "" => reply.text.trim(),
        label => label,
    };
    json!({
        "type": "action",
        "action": {
            "type": "message",
            "label": truncate_chars(label, MAX_QUICK_REPLY_LABEL),
            "text": reply.text,
        },
    })
}

/// LINE's `sender` object, or `None` when there is nothing to show.
fn sender_object(sender: &Sender) -> Result<Option<Value>, OutgoingError> {
    let mut object = Map::new();
    let name = truncate_chars(sender.name.trim(), MAX_SENDER_NAME);
    if !name.is_empty() {
        object.insert("name".into(), Value::String(name.to_owned()));
    }
    if let Some(icon) = &sender.icon_url {
        let icon = media_url(Some(icon), "sender.icon_url")?;
        object.insert("iconUrl".into(), Value::String(icon.to_owned()));
    }
    Ok((!object.is_empty()).then_some(Value::Object(object)))
}

fn text_messages(text: &str) -> Result<Vec<Value>, OutgoingError> {
    if text.is_empty() {
        return Err(OutgoingError::EmptyText);
    }
    Ok(split_text(text, MAX_TEXT_UTF16)
        .into_iter()
        .map(|part| json!({ "type": "text", "text": part }))
        .collect())
}

/// `text` in pieces of at most `limit` UTF-16 units each (see [`line_messages`] for where it
/// cuts). Empty pieces are left out.
fn split_text(text: &str, limit: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(window) = utf16_prefix_end(rest, limit) else {
            parts.push(rest);
            break;
        };
        let (part, next) = cut(rest, window);
        if !part.is_empty() {
            parts.push(part);
        }
        rest = next;
    }
    parts
}

/// The byte length of the longest prefix of `text` that fits in `limit` UTF-16 units, or `None`
/// when all of `text` fits.
fn utf16_prefix_end(text: &str, limit: usize) -> Option<usize> {
    let mut units = 0;
    for (at, c) in text.char_indices() {
        units += c.len_utf16();
        if units > limit {
            return Some(at);
        }
    }
    None
}

/// Splits `text`, which is longer than its first `window` bytes allow, into a part of at most
/// `window` bytes and the rest, preferring a newline, then a space, then a grapheme boundary.
fn cut(text: &str, window: usize) -> (&str, &str) {
    // A separator right at the window's end still counts: it is dropped, not kept.
    let searchable = &text[..window + text[window..].chars().next().map_or(0, char::len_utf8)];
    for separator in ['\n', ' '] {
        if let Some(at) = searchable.rfind(separator) {
            if at >= window / 2 {
                return (&text[..at], &text[at + separator.len_utf8()..]);
            }
        }
    }
    let boundary = text
        .grapheme_indices(true)
        .map(|(at, _)| at)
        .take_while(|&at| at <= window)
        .last()
        .filter(|&at| at > 0)
        // A single grapheme longer than the limit (absurd, but possible): cut between chars.
        .unwrap_or(window);
    text.split_at(boundary)
}

fn location_message(
    title: Option<&str>,
    address: Option<&str>,
    latitude: f64,
    longitude: f64,
) -> Result<Value, OutgoingError> {
    if !(latitude.is_finite()
        && longitude.is_finite()
        && (-90.0..=90.0).contains(&latitude)
        && (-180.0..=180.0).contains(&longitude))
    {
        return Err(OutgoingError::InvalidLocation {
            latitude,
            longitude,
        });
    }
    fn non_blank(s: Option<&str>) -> Option<&str> {
        s.map(str::trim).filter(|s| !s.is_empty())
    }
    let coordinates = format!("{latitude:.5}, {longitude:.5}");
    let title = non_blank(title).unwrap_or("Location");
    let address = non_blank(address).unwrap_or(&coordinates);
    Ok(json!({
        "type": "location",
        "title": truncate_chars(title, MAX_LOCATION_FIELD),
        "address": truncate_chars(address, MAX_LOCATION_FIELD),
        "latitude": latitude,
        "longitude": longitude,
    }))
}

/// `url` if it is present, https and not too long for LINE.
fn media_url<'a>(url: Option<&'a str>, field: &'static str) -> Result<&'a str, OutgoingError> {
    let url = url.map(str::trim).filter(|u| !u.is_empty());
    let url = url.ok_or(OutgoingError::MissingUrl { field })?;
    let scheme_is_https = url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    if !scheme_is_https || url.len() == 8 {
        return Err(OutgoingError::NotHttps { field });
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(OutgoingError::UrlTooLong {
            field,
            limit: MAX_URL_CHARS,
        });
    }
    Ok(url)
}

/// At most `max` characters of `s`, cut at a grapheme boundary so no emoji or accent is halved.
fn truncate_chars(s: &str, max: usize) -> &str {
    let mut chars = 0;
    let mut end = 0;
    for grapheme in s.graphemes(true) {
        chars += grapheme.chars().count();
        if chars > max {
            break;
        }
        end += grapheme.len();
    }
    &s[..end]
}

fn readable_size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Content {
        Content::Text { text: t.into() }
    }

    fn texts(messages: &[Value]) -> Vec<&str> {
        messages
            .iter()
            .map(|m| {
                assert_eq!(m["type"], "text", "{m}");
                m["text"].as_str().expect("text messages carry text")
            })
            .collect()
    }

    fn utf16_len(s: &str) -> usize {
        s.encode_utf16().count()
    }

    fn image(url: &str) -> Content {
        Content::Image {
            url: Some(url.into()),
            preview_url: None,
        }
    }

    #[test]
    fn short_text_is_one_text_message() {
        let messages = line_messages(&text("こんにちは 👋"), None).unwrap();
        assert_eq!(
            messages,
            vec![json!({"type": "text", "text": "こんにちは 👋"})]
        );
    }

    #[test]
    fn empty_text_is_refused() {
        assert_eq!(
            line_messages(&text(""), None),
            Err(OutgoingError::EmptyText)
        );
    }

    #[test]
    fn text_of_exactly_5000_utf16_units_is_not_split() {
        let t = "a".repeat(4_998) + "😀"; // the emoji is a surrogate pair: 2 units
        assert_eq!(utf16_len(&t), 5_000);
        let messages = line_messages(&text(&t), None).unwrap();
        assert_eq!(texts(&messages), vec![t.as_str()]);
    }

    #[test]
    fn long_text_splits_after_the_last_newline() {
        let first = "line one\n".repeat(400); // 3,600 units
        let t = format!("{first}{}", "b".repeat(3_000));
        let messages = line_messages(&text(&t), None).unwrap();
        let parts = texts(&messages);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], first.trim_end_matches('\n'));
        assert_eq!(parts[1], "b".repeat(3_000));
    }

    #[test]
    fn long_text_without_newlines_splits_at_a_space() {
        let t = "word ".repeat(2_000); // 10,000 units
        let messages = line_messages(&text(&t), None).unwrap();
        let parts = texts(&messages);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| utf16_len(p) <= MAX_TEXT_UTF16));
        assert!(parts[0].ends_with("word"), "cut inside a word");
        assert!(parts[1].starts_with("word"), "cut inside a word");
        assert_eq!(parts.join(" "), t);
    }

    #[test]
    fn a_surrogate_pair_at_the_limit_is_never_halved() {
        // 4,999 units, then an emoji of 2 units straddling the limit.
        let t = "a".repeat(4_999) + &"😀".repeat(10);
        let messages = line_messages(&text(&t), None).unwrap();
        let parts = texts(&messages);
        assert_eq!(parts, vec!["a".repeat(4_999), "😀".repeat(10)]);
        // The JSON would not even hold a lone surrogate, but check the units anyway.
        assert_eq!(utf16_len(parts[0]) + utf16_len(parts[1]), utf16_len(&t));
    }

    #[test]
    fn emoji_only_text_splits_on_whole_emoji() {
        let t = "👍".repeat(6_000); // 12,000 units
        let messages = line_messages(&text(&t), None).unwrap();
        let parts = texts(&messages);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), t);
        for part in &parts {
            assert!(utf16_len(part) <= MAX_TEXT_UTF16);
            assert!(part.chars().all(|c| c == '👍'));
        }
    }

    #[test]
    fn a_zwj_family_emoji_is_kept_whole() {
        let family = "👨‍👩‍👧"; // 8 UTF-16 units, one grapheme
        let t = "a".repeat(4_996) + family + "tail";
        let parts_owned = line_messages(&text(&t), None).unwrap();
        let parts = texts(&parts_owned);
        assert_eq!(parts, vec!["a".repeat(4_996), format!("{family}tail")]);
    }

    #[test]
    fn japanese_text_splits_within_the_limit_and_loses_nothing() {
        // No spaces or newlines: the cut falls on a character boundary.
        let t = "日本語のテキスト。".repeat(1_200); // 10,800 chars, 1 unit each
        let messages = line_messages(&text(&t), None).unwrap();
        let parts = texts(&messages);
        assert_eq!(parts.len(), 3);
        assert_eq!(utf16_len(parts[0]), MAX_TEXT_UTF16);
        assert_eq!(parts.concat(), t);
    }

    #[test]
    fn a_combining_mark_stays_with_its_base_character() {
        // か + combining dakuten (U+3099) is one grapheme of two units.
        let t = "あ".repeat(4_999) + "か\u{3099}" + "end";
        let parts_owned = line_messages(&text(&t), None).unwrap();
        let parts = texts(&parts_owned);
        assert_eq!(parts[0], "あ".repeat(4_999));
        assert_eq!(parts[1], "か\u{3099}end");
    }

    #[test]
    fn a_newline_right_at_the_limit_is_the_cut() {
        let t = "a".repeat(5_000) + "\n" + "b";
        let parts_owned = line_messages(&text(&t), None).unwrap();
        assert_eq!(texts(&parts_owned), vec!["a".repeat(5_000), "b".into()]);
    }

    #[test]
    fn image_without_preview_uses_itself_as_preview() {
        let messages = line_messages(&image("https://cdn.example/a.jpg"), None).unwrap();
        assert_eq!(
            messages,
            vec![json!({
                "type": "image",
                "originalContentUrl": "https://cdn.example/a.jpg",
                "previewImageUrl": "https://cdn.example/a.jpg",
            })]
        );
        let with_preview = Content::Image {
            url: Some("https://cdn.example/a.jpg".into()),
            preview_url: Some("https://cdn.example/a.small.jpg".into()),
        };
        let messages = line_messages(&with_preview, None).unwrap();
        assert_eq!(
            messages[0]["previewImageUrl"],
            "https://cdn.example/a.small.jpg"
        );
    }

    #[test]
    fn video_with_a_preview_is_a_video_and_without_one_a_link() {
        let video = Content::Video {
            url: Some("https://cdn.example/v.mp4".into()),
            preview_url: Some("https://cdn.example/v.jpg".into()),
            duration_ms: Some(5_000),
        };
        assert_eq!(
            line_messages(&video, None).unwrap(),
            vec![json!({
                "type": "video",
                "originalContentUrl": "https://cdn.example/v.mp4",
                "previewImageUrl": "https://cdn.example/v.jpg",
            })]
        );
        let bare = Content::Video {
            url: Some("https://cdn.example/v.mp4".into()),
            preview_url: None,
            duration_ms: None,
        };
        let messages = line_messages(&bare, None).unwrap();
        assert_eq!(texts(&messages), vec!["Video: https://cdn.example/v.mp4"]);
    }

    #[test]
    fn audio_with_a_duration_is_audio_and_without_one_a_link() {
        let audio = Content::Audio {
            url: Some("https://cdn.example/a.m4a".into()),
            duration_ms: Some(3_000),
        };
        assert_eq!(
            line_messages(&audio, None).unwrap(),
            vec![json!({
                "type": "audio",
                "originalContentUrl": "https://cdn.example/a.m4a",
                "duration": 3_000,
            })]
        );
        for duration_ms in [None, Some(0)] {
            let bare = Content::Audio {
                url: Some("https://cdn.example/a.m4a".into()),
                duration_ms,
            };
            let messages = line_messages(&bare, None).unwrap();
            assert_eq!(
                texts(&messages),
                vec!["Voice message: https://cdn.example/a.m4a"]
            );
        }
    }

    #[test]
    fn a_file_becomes_a_text_with_its_name_size_and_link() {
        let file = Content::File {
            name: "見積書.pdf".into(),
            size: Some(1_536_000),
            url: Some("https://desk.example/uploads/42".into()),
        };
        let messages = line_messages(&file, None).unwrap();
        assert_eq!(
            texts(&messages),
            vec!["File: 見積書.pdf (1.5 MB)\nhttps://desk.example/uploads/42"]
        );
        let unnamed = Content::File {
            name: " ".into(),
            size: None,
            url: Some("https://desk.example/uploads/43".into()),
        };
        let messages = line_messages(&unnamed, None).unwrap();
        assert_eq!(
            texts(&messages),
            vec!["File: file\nhttps://desk.example/uploads/43"]
        );
    }

    #[test]
    fn location_keeps_its_title_and_address() {
        let location = Content::Location {
            title: Some("Tokyo Tower".into()),
            address: Some("4 Chome-2-8 Shibakoen, Minato City, Tokyo".into()),
            latitude: 35.6586,
            longitude: 139.7454,
        };
        assert_eq!(
            line_messages(&location, None).unwrap(),
            vec![json!({
                "type": "location",
                "title": "Tokyo Tower",
                "address": "4 Chome-2-8 Shibakoen, Minato City, Tokyo",
                "latitude": 35.6586,
                "longitude": 139.7454,
            })]
        );
    }

    #[test]
    fn location_without_title_or_address_gets_readable_defaults() {
        let location = Content::Location {
            title: None,
            address: Some("  ".into()),
            latitude: 35.6586,
            longitude: 139.7454,
        };
        let messages = line_messages(&location, None).unwrap();
        assert_eq!(messages[0]["title"], "Location");
        assert_eq!(messages[0]["address"], "35.65860, 139.74540");
    }

    #[test]
    fn location_with_impossible_coordinates_is_refused() {
        for (latitude, longitude) in [(f64::NAN, 0.0), (91.0, 0.0), (0.0, 181.0)] {
            let location = Content::Location {
                title: None,
                address: None,
                latitude,
                longitude,
            };
            let error = line_messages(&location, None).unwrap_err();
            assert_eq!(error.kind(), "invalid_location");
        }
    }

    #[test]
    fn sticker_keeps_its_package_and_id() {
        let sticker = Content::Sticker {
            package_id: "446".into(),
            sticker_id: "1988".into(),
            keywords: vec!["Happy".into()],
            text: None,
        };
        assert_eq!(
            line_messages(&sticker, None).unwrap(),
            vec![json!({"type": "sticker", "packageId": "446", "stickerId": "1988"})]
        );
    }

    #[test]
    fn unsupported_content_is_an_error_naming_its_type() {
        let error = line_messages(
            &Content::Unsupported {
                type_name: "imagemap".into(),
            },
            None,
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "imagemap messages can't be sent to LINE");
    }

    #[test]
    fn non_https_media_urls_are_refused_naming_the_field() {
        let cases = [
            (image("http://cdn.example/a.jpg"), "content.url"),
            (
                Content::Image {
                    url: Some("https://cdn.example/a.jpg".into()),
                    preview_url: Some("ftp://cdn.example/a.jpg".into()),
                },
                "content.preview_url",
            ),
            (
                Content::Video {
                    url: Some("https://cdn.example/v.mp4".into()),
                    preview_url: Some("http://cdn.example/v.jpg".into()),
                    duration_ms: None,
                },
                "content.preview_url",
            ),
            (
                Content::Audio {
                    url: Some("/uploads/a.m4a".into()),
                    duration_ms: Some(1),
                },
                "content.url",
            ),
            (
                Content::File {
                    name: "a.pdf".into(),
                    size: None,
                    url: Some("http://desk.example/a.pdf".into()),
                },
                "content.url",
            ),
        ];
        for (content, field) in cases {
            let error = line_messages(&content, None).unwrap_err();
            assert_eq!(error, OutgoingError::NotHttps { field }, "{content:?}");
            assert!(error.to_string().contains(field), "{error}");
        }
    }

    #[test]
    fn missing_or_overlong_media_urls_are_refused() {
        let missing = Content::Image {
            url: None,
            preview_url: None,
        };
        assert_eq!(
            line_messages(&missing, None),
            Err(OutgoingError::MissingUrl {
                field: "content.url"
            })
        );
        let long = image(&format!("https://cdn.example/{}", "a".repeat(2_000)));
        assert_eq!(
            line_messages(&long, None).unwrap_err().kind(),
            "url_too_long"
        );
    }

    #[test]
    fn the_sender_is_set_on_every_message_with_its_name_truncated() {
        let sender = Sender {
            name: "Customer Support Team Tokyo".into(),
            icon_url: Some("https://desk.example/agents/7.png".into()),
        };
        let t = "x".repeat(6_000);
        let messages = line_messages(&text(&t), Some(&sender)).unwrap();
        assert_eq!(messages.len(), 2);
        for message in &messages {
            assert_eq!(
                message["sender"],
                json!({"name": "Customer Support Tea", "iconUrl": "https://desk.example/agents/7.png"})
            );
        }
    }

    #[test]
    fn sender_names_are_truncated_by_characters_not_bytes() {
        let sender = Sender {
            name: "カスタマーサポート担当の山田花子です、よろしく".into(),
            icon_url: None,
        };
        let messages = line_messages(&text("hi"), Some(&sender)).unwrap();
        let name = messages[0]["sender"]["name"].as_str().unwrap();
        assert_eq!(name.chars().count(), 20);
        assert_eq!(name, "カスタマーサポート担当の山田花子です、よ");
        assert!(messages[0]["sender"].get("iconUrl").is_none());
    }

    #[test]
    fn a_blank_sender_is_left_out() {
        let sender = Sender {
            name: "  ".into(),
            icon_url: None,
        };
        let messages = line_messages(&text("hi"), Some(&sender)).unwrap();
        assert!(messages[0].get("sender").is_none(), "{}", messages[0]);
    }

    #[test]
    fn a_non_https_sender_icon_is_refused() {
        let sender = Sender {
            name: "Aiko".into(),
            icon_url: Some("http://desk.example/agents/7.png".into()),
        };
        assert_eq!(
            line_messages(&text("hi"), Some(&sender)),
            Err(OutgoingError::NotHttps {
                field: "sender.icon_url"
            })
        );
    }

    fn numbered(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"type": "text", "text": format!("m{i}")}))
            .collect()
    }

    #[test]
    fn messages_are_grouped_five_to_a_request_in_order() {
        let batches = requests(numbered(12), &[]);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![5, 5, 2]);
        let order: Vec<&str> = batches
            .iter()
            .flatten()
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
        assert_eq!(order, expected);
        assert!(batches
            .iter()
            .flatten()
            .all(|m| m.get("quickReply").is_none()));
        assert!(requests(Vec::new(), &[]).is_empty());
    }

    #[test]
    fn quick_replies_go_on_the_last_message_of_the_last_request() {
        let replies: Vec<QuickReply> = (0..15)
            .map(|i| QuickReply {
                label: format!("Option number {i} with a long label"),
                text: format!("option {i}"),
            })
            .collect();
        let batches = requests(numbered(10), &replies);
        assert_eq!(batches.len(), 2);
        let all: Vec<&Value> = batches.iter().flatten().collect();
        let (last, others) = all.split_last().unwrap();
        assert!(others.iter().all(|m| m.get("quickReply").is_none()));
        let items = last["quickReply"]["items"].as_array().unwrap();
        assert_eq!(items.len(), MAX_QUICK_REPLIES);
        assert_eq!(
            items[0],
            json!({
                "type": "action",
                "action": {"type": "message", "label": "Option number 0 with", "text": "option 0"},
            })
        );
        assert!(items.iter().all(|item| {
            item["action"]["label"].as_str().unwrap().chars().count() <= MAX_QUICK_REPLY_LABEL
        }));
    }

    #[test]
    fn a_blank_quick_reply_label_falls_back_to_its_text() {
        let replies = [QuickReply {
            label: String::new(),
            text: "Yes please".into(),
        }];
        let batches = requests(numbered(1), &replies);
        assert_eq!(
            batches[0][0]["quickReply"]["items"][0]["action"]["label"],
            "Yes please"
        );
    }

    /// Checks messages against LINE's `messaging-api.yml`: each against its own subtype schema
    /// (the spec's `discriminator` is invisible to JSON Schema, so the base `Message` alone would
    /// pass a text without `text`), each quick-reply action against `MessageAction`, and every
    /// request against `ReplyMessageRequest` and `PushMessageRequest` (at most 5 messages,
    /// at most 13 quick replies, a sender name of at most 20 characters).
    mod schema {
        use super::*;

        fn check(schema: &str, instance: &Value) {
            let verdict =
                crate::fake_line::schema::OpenApi::messaging_api().validate(schema, instance);
            if let Err(errors) = verdict {
                panic!("{instance} breaks {schema}:\n{}", errors.join("\n"));
            }
        }

        fn subtype(message: &Value) -> String {
            let kind = message["type"].as_str().expect("every message has a type");
            let mut chars = kind.chars();
            let first = chars
                .next()
                .expect("types are not empty")
                .to_ascii_uppercase();
            format!("{first}{}Message", chars.as_str())
        }

        #[test]
        fn every_message_line_messages_produces_matches_messaging_api_yml() {
            let sender = Sender {
                name: "Support agent with a long name".into(),
                icon_url: Some("https://desk.example/agents/1.png".into()),
            };
            let contents = [
                text(&"長文".repeat(3_000)),
                image("https://cdn.example/a.jpg"),
                Content::Video {
                    url: Some("https://cdn.example/v.mp4".into()),
                    preview_url: Some("https://cdn.example/v.jpg".into()),
                    duration_ms: Some(1_000),
                },
                Content::Video {
                    url: Some("https://cdn.example/v.mp4".into()),
                    preview_url: None,
                    duration_ms: None,
                },
                Content::Audio {
                    url: Some("https://cdn.example/a.m4a".into()),
                    duration_ms: Some(1_000),
                },
                Content::Audio {
                    url: Some("https://cdn.example/a.m4a".into()),
                    duration_ms: None,
                },
                Content::File {
                    name: "a.pdf".into(),
                    size: Some(10),
                    url: Some("https://desk.example/uploads/1".into()),
                },
                Content::Location {
                    title: None,
                    address: None,
                    latitude: 35.0,
                    longitude: 139.0,
                },
                Content::Sticker {
                    package_id: "446".into(),
                    sticker_id: "1988".into(),
                    keywords: Vec::new(),
                    text: None,
                },
            ];
            let mut all = Vec::new();
            for content in &contents {
                for message in line_messages(content, Some(&sender)).unwrap() {
                    check(&subtype(&message), &message);
                    all.push(message);
                }
            }
            let replies: Vec<QuickReply> = (0..20)
                .map(|i| QuickReply {
                    label: format!("A rather long label number {i}"),
                    text: format!("{i}"),
                })
                .collect();
            let batches = requests(all, &replies);
            let last = batches.last().unwrap().last().unwrap();
            check(&subtype(last), last);
            for item in last["quickReply"]["items"].as_array().unwrap() {
                check("QuickReplyItem", item);
                check("MessageAction", &item["action"]);
            }
            for batch in &batches {
                check(
                    "ReplyMessageRequest",
                    &json!({"replyToken": "r", "messages": batch}),
                );
                check(
                    "PushMessageRequest",
                    &json!({"to": "U4af4980629", "messages": batch}),
                );
            }
        }

        #[test]
        fn the_schema_check_catches_a_broken_message() {
            let result = std::panic::catch_unwind(|| {
                check("TextMessage", &json!({"type": "text"}));
            });
            assert!(result.is_err(), "a text without `text` must fail the check");
            let result = std::panic::catch_unwind(|| {
                check(
                    "PushMessageRequest",
                    &json!({"to": "U1", "messages": numbered(6)}),
                );
            });
            assert!(result.is_err(), "six messages must fail the check");
        }
    }
}
