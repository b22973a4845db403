//! Webhook payloads as LINE sends them: one event per event type and per message type.
//!
//! `src/fake_line/line-openapi/webhook.yml` has no `example:` values, so these are built by hand
//! from its field definitions (required and optional fields, enums, formats) and from section 1 of
//! `line-messaging-api.md`. Where the schema is loose the values follow LINE's real formats:
//! user IDs are `U` + 32 hex, group IDs `C` + 32 hex, room IDs `R` + 32 hex, `webhookEventId` is
//! a ULID whose time part is the event's `timestamp`, timestamps are epoch milliseconds and
//! message IDs are 18-digit decimal strings. `line_schema.rs` checks every payload against the
//! schema, so a drift here shows up there.

use serde_json::{json, Value};

/// A customer chatting one-to-one with the account.
pub const USER_ID: &str = "U4af4980629c0b2e7a1f5d3c8b6e9f0a1";
/// Another customer, who joins and leaves group chats.
pub const OTHER_USER_ID: &str = "U206d25c2ea6bd87c17655609a1c37cb8";
/// A group chat the account is in.
pub const GROUP_ID: &str = "Ca56f94637cc4347f90a25382909b24b9";
/// A multi-person chat (room) the account is in.
pub const ROOM_ID: &str = "Ra8dbf4673c4c812cd491258042226c99";

/// Time of the first event of [`every_event`]: 2024-11-25T00:00:00Z in milliseconds.
const FIRST_TIMESTAMP_MS: u64 = 1_732_492_800_000;

/// One webhook event object per event type and per message type, each labelled, in the order a
/// customer might produce them. `destination` is the bot's user ID: it appears where LINE
/// would put the bot itself (a mention of the bot, the bot of an attached module).
///
/// Also contains one event of a type LINE doesn't have yet (`futureEvent`) and one message of a
/// type it doesn't have yet (`futureMessage`), which the engine must accept and keep.
pub fn every_event(destination: &str) -> Vec<(&'static str, Value)> {
    let payloads: Vec<(&'static str, Value)> = vec![
        (
            "message/text",
            json!({
                "type": "message",
                "replyToken": "b60d432864f44d079f6d8efe86cf404b",
                "source": user_source(USER_ID),
                "message": {
                    "type": "text",
                    "id": "468789577898262530",
                    "text": "@example @All Good Morning!! (love)",
                    "emojis": [
                        {
                            "index": 29,
                            "length": 6,
                            "productId": "5ac1bfd5040ab15980c9b435",
                            "emojiId": "001"
                        }
                    ],
                    "mention": {
                        "mentionees": [
                            {
                                "index": 0,
                                "length": 8,
                                "type": "user",
                                "userId": destination,
                                "isSelf": true
                            },
                            { "index": 9, "length": 4, "type": "all" }
                        ]
                    },
                    "quoteToken": "q3Plxr4AgKd8cTfbZSOhnyZyVsP3ot2Rb3Wtzh7MBnY",
                    "quotedMessageId": "468789532432007169",
                    "markAsReadToken": "30yhdy232ddhdd8zz2nnj3y1ll2s"
                }
            }),
        ),
        (
            "message/image",
            json!({
                "type": "message",
                "replyToken": "fbf94e269485410da6b7e3a5e33283e8",
                "source": user_source(USER_ID),
                "message": {
                    "type": "image",
                    "id": "354718705033693861",
                    "contentProvider": { "type": "line" },
                    "imageSet": { "id": "E005D41A7288F41B65593ED38FF6E9834B046AB36A37921A56BC236F13A91855", "index": 1, "total": 2 },
                    "quoteToken": "yHAz4Ua2wx7s6iq0CKqXVQSmuGrVt5gy0JeFCJZqxh0",
                    "markAsReadToken": "30yhdy232ddhdd8zz2nnj3y1ll2t"
                }
            }),
        ),
        (
            "message/image (external)",
            json!({
                "type": "message",
                "replyToken": "0f3779fba3b349968c5d07db31eab56f",
                "source": user_source(USER_ID),
                "message": {
                    "type": "image",
                    "id": "354718705033693862",
                    "contentProvider": {
                        "type": "external",
                        "originalContentUrl": "https://example.com/original.jpg",
                        "previewImageUrl": "https://example.com/preview.jpg"
                    },
                    "quoteToken": "yHAz4Ua2wx7s6iq0CKqXVQSmuGrVt5gy0JeFCJZqxh1"
                }
            }),
        ),
        (
            "message/video",
            json!({
                "type": "message",
                "replyToken": "8d7e0e9e5f7c4e1fb1d2f8e6b2c7a9d0",
                "source": user_source(USER_ID),
                "message": {
                    "type": "video",
                    "id": "325708475308672101",
                    "duration": 60000,
                    "contentProvider": { "type": "line" },
                    "quoteToken": "yHAz4Ua2wx7s6iq0CKqXVQSmuGrVt5gy0JeFCJZqxh2",
                    "markAsReadToken": "30yhdy232ddhdd8zz2nnj3y1ll2u"
                }
            }),
        ),
        (
            "message/audio",
            json!({
                "type": "message",
                "replyToken": "5c3a7e9e1b2d4f6a8c0e2a4c6e8a0c2e",
                "source": user_source(USER_ID),
                "message": {
                    "type": "audio",
                    "id": "325708475308672102",
                    "duration": 12000,
                    "contentProvider": { "type": "line" },
                    "markAsReadToken": "30yhdy232ddhdd8zz2nnj3y1ll2v"
                }
            }),
        ),
        (
            "message/file",
            json!({
                "type": "message",
                "replyToken": "9a1b3c5d7e9f4a2b6c8d0e1f3a5b7c9d",
                "source": user_source(USER_ID),
                "message": {
                    "type": "file",
                    "id": "325708475308672103",
                    "fileName": "invoice-2024-11.pdf",
                    "fileSize": 2138,
                    "markAsReadToken": "30yhdy232ddhdd8zz2nnj3y1ll2w"
                }
            }),
        ),
        (
            "message/location",
            json!({
                "type": "message",
                "replyToken": "2e4a6c8e0a2c4e6a8c0e2a4c6e8a0c2f",
                "source": user_source(USER_ID),
                "message": {
                    "type": "location",
                    "id": "325708475308672104",
                    "title": "LINE Corporation",
                    "address": "1-6-1 Yotsuya, Shinjuku-ku, Tokyo, 160-0004, Japan",
                    "latitude": 35.687574,
                    "longitude": 139.72922,
                    "markAsReadToken": "30yhdy232ddhdd8zz2nnj3y1ll2x"
                }
            }),
        ),
        (
            "message/sticker",
            json!({
                "type": "message",
                "replyToken": "7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a",
                "source": user_source(USER_ID),
                "message": {
                    "type": "sticker",
                    "id": "325708475308672105",
                    "packageId": "11538",
                    "stickerId": "51626501",
                    "stickerResourceType": "MESSAGE",
                    "keywords": ["hello", "hi", "greetings"],
                    "text": "See you at the shop!",
                    "quoteToken": "yHAz4Ua2wx7s6iq0CKqXVQSmuGrVt5gy0JeFCJZqxh3",
                    "quotedMessageId": "468789577898262530",
                    "markAsReadToken": "30yhdy232ddhdd8zz2nnj3y1ll2y"
                }
            }),
        ),
        (
            "message/futureMessage",
            json!({
                "type": "message",
                "replyToken": "3c5e7a9c1e3a5c7e9a1c3e5a7c9e1a3c",
                "source": user_source(USER_ID),
                "message": {
                    "type": "futureMessage",
                    "id": "325708475308672106",
                    "hologram": { "depth": 3 },
                    "markAsReadToken": "30yhdy232ddhdd8zz2nnj3y1ll2z"
                }
            }),
        ),
        (
            "follow",
            json!({
                "type": "follow",
                "replyToken": "85cbe770fa8b4f45bbe077b1d4be4a36",
                "source": user_source(USER_ID),
                "follow": { "isUnblocked": false }
            }),
        ),
        (
            "follow (unblocked)",
            json!({
                "type": "follow",
                "replyToken": "a1c3e5a7c9e1a3c5e7a9c1e3a5c7e9a1",
                "source": user_source(USER_ID),
                "follow": { "isUnblocked": true }
            }),
        ),
        (
            "unfollow",
            json!({
                "type": "unfollow",
                "source": user_source(USER_ID)
            }),
        ),
        (
            "join",
            json!({
                "type": "join",
                "replyToken": "0f3779fba3b349968c5d07db31eab56e",
                "source": { "type": "group", "groupId": GROUP_ID }
            }),
        ),
        (
            "leave",
            json!({
                "type": "leave",
                "source": { "type": "group", "groupId": GROUP_ID }
            }),
        ),
        (
            "memberJoined",
            json!({
                "type": "memberJoined",
                "replyToken": "0f3779fba3b349968c5d07db31eabf65",
                "source": { "type": "group", "groupId": GROUP_ID },
                "joined": { "members": [user_source(USER_ID), user_source(OTHER_USER_ID)] }
            }),
        ),
        (
            "memberLeft",
            json!({
                "type": "memberLeft",
                "source": { "type": "room", "roomId": ROOM_ID },
                "left": { "members": [user_source(OTHER_USER_ID)] }
            }),
        ),
        (
            "postback",
            json!({
                "type": "postback",
                "replyToken": "b60d432864f44d079f6d8efe86cf404c",
                "source": user_source(USER_ID),
                "postback": {
                    "data": "action=book&slot=morning",
                    "params": { "datetime": "2024-12-25T10:00" }
                }
            }),
        ),
        (
            "unsend",
            json!({
                "type": "unsend",
                "source": user_source(USER_ID),
                "unsend": { "messageId": "468789577898262530" }
            }),
        ),
        (
            "videoPlayComplete",
            json!({
                "type": "videoPlayComplete",
                "replyToken": "d7e9f1a3c5e7a9c1e3a5c7e9a1c3e5a7",
                "source": user_source(USER_ID),
                "videoPlayComplete": { "trackingId": "track-id-onboarding-1" }
            }),
        ),
        (
            "beacon",
            json!({
                "type": "beacon",
                "replyToken": "e9f1a3c5e7a9c1e3a5c7e9a1c3e5a7c9",
                "source": user_source(USER_ID),
                "beacon": { "hwid": "d41d8cd98f", "type": "enter", "dm": "1234567890abcdef" }
            }),
        ),
        (
            "accountLink",
            json!({
                "type": "accountLink",
                "replyToken": "b60d432864f44d079f6d8efe86cf404d",
                "source": user_source(USER_ID),
                "link": { "result": "ok", "nonce": "xxxxxxxxxxxxxxx" }
            }),
        ),
        (
            "membership",
            json!({
                "type": "membership",
                "replyToken": "f1a3c5e7a9c1e3a5c7e9a1c3e5a7c9e1",
                "source": user_source(USER_ID),
                "membership": { "type": "joined", "membershipId": 3189 }
            }),
        ),
        (
            "module",
            json!({
                "type": "module",
                "module": {
                    "type": "attached",
                    "botId": destination,
                    "scopes": ["message:send", "message:receive"]
                }
            }),
        ),
        (
            "activated",
            json!({
                "type": "activated",
                "source": user_source(USER_ID),
                "chatControl": { "expireAt": FIRST_TIMESTAMP_MS + 3_600_000 }
            }),
        ),
        (
            "deactivated",
            json!({
                "type": "deactivated",
                "source": user_source(USER_ID)
            }),
        ),
        ("botSuspended", json!({ "type": "botSuspended" })),
        ("botResumed", json!({ "type": "botResumed" })),
        (
            "delivery",
            json!({
                "type": "delivery",
                "source": user_source(USER_ID),
                "delivery": {
                    "data": "d41d8cd98f00b204e9800998ecf8427e8c3f2a7a1e5b0f6d9c4e2b7a3f1d0c5e"
                }
            }),
        ),
        (
            "futureEvent",
            json!({
                "type": "futureEvent",
                "source": user_source(USER_ID),
                "futureEvent": { "anything": ["LINE", "may", "add"] }
            }),
        ),
    ];

    payloads
        .into_iter()
        .zip(0u64..)
        .map(|((label, mut event), n)| {
            let timestamp = FIRST_TIMESTAMP_MS + n * 1_000;
            add_common_fields(&mut event, timestamp, &ulid(timestamp, n));
            (label, event)
        })
        .collect()
}

/// A one-to-one text message from `user_id`, sent now, as the webhook delivers it.
pub fn text_event(user_id: &str, webhook_event_id: &str, text: &str) -> Value {
    text_event_at(user_id, webhook_event_id, text, now_ms())
}

/// [`text_event`] sent at `timestamp_ms`: what a test that delivers an event again uses, since
/// LINE's redelivery keeps the event's original `timestamp`.
pub fn text_event_at(
    user_id: &str,
    webhook_event_id: &str,
    text: &str,
    timestamp_ms: u64,
) -> Value {
    let mut event = json!({
        "type": "message",
        "replyToken": format!("{:016x}{:016x}", fnv1a(webhook_event_id.as_bytes()), fnv1a(text.as_bytes())),
        "source": user_source(user_id),
        "message": {
            "type": "text",
            "id": message_id(webhook_event_id),
            "text": text,
            "quoteToken": format!("q{webhook_event_id}"),
            "markAsReadToken": format!("r{webhook_event_id}")
        }
    });
    add_common_fields(&mut event, timestamp_ms, webhook_event_id);
    event
}

/// The webhook request body: the events for the bot whose user ID is `destination`.
pub fn callback(destination: &str, events: Vec<Value>) -> Value {
    json!({ "destination": destination, "events": events })
}

/// A ULID (Crockford base32: 48 bits of milliseconds, then 80 bits of entropy), like LINE's
/// `webhookEventId`. Deterministic, so `entropy` tells apart events of the same millisecond.
pub fn ulid(timestamp_ms: u64, entropy: u64) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    // Spread `entropy` over the 80 random bits so consecutive values don't look alike.
    let random = (u128::from(fnv1a(&entropy.to_be_bytes())) << 16) | u128::from(entropy & 0xffff);
    let value = (u128::from(timestamp_ms & 0xffff_ffff_ffff) << 80) | random;
    (0..26)
        .rev()
        .map(|i| char::from(ALPHABET[((value >> (i * 5)) & 0x1f) as usize]))
        .collect()
}

fn user_source(user_id: &str) -> Value {
    json!({ "type": "user", "userId": user_id })
}

fn add_common_fields(event: &mut Value, timestamp_ms: u64, webhook_event_id: &str) {
    let common = json!({
        "mode": "active",
        "timestamp": timestamp_ms,
        "webhookEventId": webhook_event_id,
        "deliveryContext": { "isRedelivery": false }
    });
    if let (Some(event), Value::Object(common)) = (event.as_object_mut(), common) {
        event.extend(common);
    }
}

/// An 18-digit message ID derived from the event, so the same event always has the same message.
fn message_id(webhook_event_id: &str) -> String {
    format!(
        "{}",
        100_000_000_000_000_000 + fnv1a(webhook_event_id.as_bytes()) % 900_000_000_000_000_000
    )
}

/// FNV-1a: a tiny stable hash, enough to derive fixture IDs from other fixture IDs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(FIRST_TIMESTAMP_MS)
}
