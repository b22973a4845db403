//! The LINE webhook event objects, as typed serde values.
//!
//! LINE POSTs `{"destination": .., "events": [..]}` to the webhook; this module owns the shape of
//! one element of `events` (see `src/fake_line/line-openapi/webhook.yml`, the authoritative
//! schema, and section 1 of the LINE reference notes). The webhook route verifies the signature, stores each
//! event's raw JSON, and calls [`parse_event`] to turn it into an [`Event`] for the actors.
//!
//! Two rules shape the types:
//!
//! - **LINE adds types over time**, so an event, message, mentionee, membership or module `type`
//!   we don't know parses into an `Unknown { type_name }` variant (a source type into
//!   `Source::Unknown`), and a string enum value we don't know (beacon type, sticker resource
//!   type, ...) into `Unknown(String)`. None of these is an error: the webhook must still answer
//!   200, and the raw JSON is kept by the caller.
//! - **A known type that breaks the schema is an error** (a `message` event without `message`, a
//!   text message without `text`, an event without `webhookEventId`). Falling back to `Unknown`
//!   there would silently drop a customer's message.
//!
//! serde alone can't do both: an `#[serde(other)]` catch-all can't keep the type name, and an
//! `#[serde(untagged)]` catch-all swallows malformed known types. So each polymorphic type is read
//! through a private "wire" twin, an internally tagged enum whose `#[serde(other)]` variant stands
//! for "some other type", flattened next to a [`TypeTag`] that keeps the name (see [`Tagged`]).
//! Serialization uses the public enum directly; the catch-all writes back only `{"type": name}`.
//!
//! One deliberate leniency: the schema requires `replyToken` on `follow`, `join`, `memberJoined`,
//! `videoPlayComplete`, `beacon` and `membership` events, but [`Event::reply_token`] is optional
//! for every type. The token is common to many events and is only usable once and briefly anyway,
//! so a missing one is handled where replies are sent (fall back to push), not rejected here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Parses one webhook event object (an element of the request's `events` array).
///
/// Unknown event and message types parse into their `Unknown` variants; a known type with a
/// missing or mistyped required field is an error. A message event of a known message type,
/// nearly every event a customer-service account gets, is read without serde's buffering of
/// tagged enums (verify + parse of a one-text-event webhook: 5.0 → 2.7 µs, `cargo bench
/// --bench webhook`); every other event goes through the tagged types.
pub fn parse_event(json: &str) -> Result<Event, serde_json::Error> {
    match message_event(json) {
        Some(event) => Ok(event),
        None => serde_json::from_str(json),
    }
}

/// A known message type read straight into its struct, skipping the buffering of the tagged
/// [`MessageContent`]; `None` for any other type or a malformed message.
fn message_content(raw: &str) -> Option<MessageContent> {
    #[derive(Deserialize)]
    struct TypeOnly<'a> {
        #[serde(rename = "type", borrow)]
        name: std::borrow::Cow<'a, str>,
    }
    let tag: TypeOnly<'_> = serde_json::from_str(raw).ok()?;
    fn read<'a, T: Deserialize<'a>>(raw: &'a str) -> Option<T> {
        serde_json::from_str(raw).ok()
    }
    Some(match &*tag.name {
        "text" => MessageContent::Text(read(raw)?),
        "image" => MessageContent::Image(read(raw)?),
        "video" => MessageContent::Video(read(raw)?),
        "audio" => MessageContent::Audio(read(raw)?),
        "file" => MessageContent::File(read(raw)?),
        "location" => MessageContent::Location(read(raw)?),
        "sticker" => MessageContent::Sticker(read(raw)?),
        _ => return None,
    })
}

/// The common fields of an event, and its `message` left raw.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageEventHead<'a> {
    #[serde(rename = "type", borrow)]
    type_name: std::borrow::Cow<'a, str>,
    timestamp: i64,
    mode: EventMode,
    webhook_event_id: String,
    delivery_context: DeliveryContext,
    #[serde(default)]
    source: Option<Source>,
    #[serde(default)]
    reply_token: Option<String>,
    #[serde(default, borrow)]
    message: Option<&'a serde_json::value::RawValue>,
}

/// The fast path for the event nearly every delivery carries, a customer's message: the
/// flattened [`EventKind`] makes serde buffer every field of the event into an intermediate
/// tree first, which cost about a third of the webhook handler's time. Reads the same fields
/// with the same types; anything it does not accept (another type, a malformed event) goes
/// through the full parser, which also words the error.
fn message_event(json: &str) -> Option<Event> {
    let head: MessageEventHead<'_> = serde_json::from_str(json).ok()?;
    if head.type_name != "message" {
        return None;
    }
    let raw = head.message?.get();
    let message = message_content(raw).or_else(|| serde_json::from_str(raw).ok())?;
    Some(Event {
        timestamp: head.timestamp,
        mode: head.mode,
        webhook_event_id: head.webhook_event_id,
        delivery_context: head.delivery_context,
        source: head.source,
        reply_token: head.reply_token,
        kind: EventKind::Message { message },
    })
}

/// One webhook event: the fields every event carries, plus the type-specific [`EventKind`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Time of the event in epoch milliseconds. A redelivered event keeps its original time, so
    /// order a conversation by this, not by arrival.
    pub timestamp: i64,
    /// Whether this channel may act on the event; in `standby` another channel has chat control
    /// and we must not send messages.
    pub mode: EventMode,
    /// ULID that identifies the event across redeliveries: the de-duplication key.
    pub webhook_event_id: String,
    /// Tells a first delivery from a redelivery of an event we failed to acknowledge.
    pub delivery_context: DeliveryContext,
    /// Who the event came from. Absent on events that aren't about a chat (module channel
    /// events, `delivery`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Single-use token for the reply API. Absent on events that can't be replied to, and not to
    /// be trusted on redeliveries (it has likely expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_token: Option<String>,
    /// The `type` discriminator and the payload that goes with it.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// The event's `type` as LINE spells it (`"message"`, `"memberJoined"`, ...), including the
    /// name of an unknown type. Handy for logs and metrics labels.
    pub fn type_name(&self) -> &str {
        self.kind.type_name()
    }
}

/// The channel state an event was delivered in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventMode {
    /// This channel has chat control and may reply or push.
    Active,
    /// Another (module) channel has chat control; this one only observes.
    Standby,
    /// A mode added after this code was written, kept verbatim.
    #[serde(untagged)]
    Unknown(String),
}

/// Webhook delivery metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryContext {
    /// `true` when LINE re-sends an event that was not acknowledged the first time.
    pub is_redelivery: bool,
}

/// The chat an event happened in, which is also the key of the conversation it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Source {
    /// A one-to-one chat with a user.
    User {
        /// The user (`U` + 32 hex). The schema leaves it optional, but a user source without a
        /// user can't be answered, so we require it.
        user_id: String,
    },
    /// A group chat.
    Group {
        /// The group (observed as `C` + 32 hex).
        group_id: String,
        /// The sender, only on some events and only for users who consented to profile access.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    /// A multi-person chat (the pre-10.17 kind of group).
    Room {
        /// The room (observed as `R` + 32 hex).
        room_id: String,
        /// The sender, with the same caveats as in a group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    /// A source type added after this code was written. Its name isn't kept (the raw event is);
    /// it serializes as `{"type": "unknown"}`.
    #[serde(other)]
    Unknown,
}

impl Source {
    /// The user who caused the event, when LINE tells us (never for unknown source types).
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Source::User { user_id } => Some(user_id),
            Source::Group { user_id, .. } | Source::Room { user_id, .. } => user_id.as_deref(),
            Source::Unknown => None,
        }
    }
}

/// The event `type` and its payload. Payload fields are named like the JSON keys they come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    from = "Tagged<EventKindWire>"
)]
pub enum EventKind {
    /// The user sent a message.
    Message {
        /// What was sent.
        message: MessageContent,
    },
    /// The user unsent (deleted) one of their messages; hide it from agents.
    Unsend {
        /// Which message.
        unsend: UnsendDetail,
    },
    /// The account was added as a friend, or unblocked.
    Follow {
        /// Which of the two.
        follow: FollowDetail,
    },
    /// The user blocked the account: stop pushing to them.
    Unfollow,
    /// The account joined a group or room.
    Join,
    /// The account was removed from, or left, a group or room.
    Leave,
    /// Users joined a group or room the account is in.
    MemberJoined {
        /// Who joined.
        joined: JoinedMembers,
    },
    /// Users left a group or room the account is in.
    MemberLeft {
        /// Who left.
        left: LeftMembers,
    },
    /// The user tapped a postback action (a button, quick reply or rich menu area).
    Postback {
        /// The action's data and, for pickers, what was picked.
        postback: PostbackContent,
    },
    /// The user watched a video sent with a `trackingId` to the end.
    VideoPlayComplete {
        /// Which video.
        video_play_complete: VideoPlayComplete,
    },
    /// The user came in range of a LINE Beacon.
    Beacon {
        /// Which beacon and what happened.
        beacon: BeaconContent,
    },
    /// An account-linking flow finished.
    AccountLink {
        /// Its result.
        link: LinkContent,
    },
    /// The user joined, left or renewed a paid membership.
    Membership {
        /// What changed.
        membership: MembershipContent,
    },
    /// A module channel was attached to or detached from an account (module channels only).
    Module {
        /// What happened.
        module: ModuleContent,
    },
    /// This module channel gained chat control.
    Activated {
        /// Until when.
        chat_control: ChatControl,
    },
    /// This module channel lost chat control.
    Deactivated,
    /// The account was suspended (module channels only).
    BotSuspended,
    /// The account came back from suspension (module channels only).
    BotResumed,
    /// A LINE notification message was delivered (corporate option).
    Delivery {
        /// Which delivery.
        delivery: PnpDelivery,
    },
    /// An event type added after this code was written.
    #[serde(untagged)]
    Unknown {
        /// The event's `type`.
        #[serde(rename = "type")]
        type_name: String,
    },
}

impl EventKind {
    /// The `type` as LINE spells it, including the name of an unknown type.
    pub fn type_name(&self) -> &str {
        match self {
            EventKind::Message { .. } => "message",
            EventKind::Unsend { .. } => "unsend",
            EventKind::Follow { .. } => "follow",
            EventKind::Unfollow => "unfollow",
            EventKind::Join => "join",
            EventKind::Leave => "leave",
            EventKind::MemberJoined { .. } => "memberJoined",
            EventKind::MemberLeft { .. } => "memberLeft",
            EventKind::Postback { .. } => "postback",
            EventKind::VideoPlayComplete { .. } => "videoPlayComplete",
            EventKind::Beacon { .. } => "beacon",
            EventKind::AccountLink { .. } => "accountLink",
            EventKind::Membership { .. } => "membership",
            EventKind::Module { .. } => "module",
            EventKind::Activated { .. } => "activated",
            EventKind::Deactivated => "deactivated",
            EventKind::BotSuspended => "botSuspended",
            EventKind::BotResumed => "botResumed",
            EventKind::Delivery { .. } => "delivery",
            EventKind::Unknown { type_name } => type_name,
        }
    }
}

/// Payload of an `unsend` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnsendDetail {
    /// The message ID of the unsent message.
    pub message_id: String,
}

/// Payload of a `follow` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowDetail {
    /// `true` for an unblock, `false` for a new friend: a returning customer may not want the
    /// first-contact greeting.
    pub is_unblocked: bool,
}

/// Payload of a `memberJoined` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinedMembers {
    /// The users who joined, as `user` sources.
    pub members: Vec<Source>,
}

/// Payload of a `memberLeft` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftMembers {
    /// The users who left, as `user` sources.
    pub members: Vec<Source>,
}

/// Payload of a `postback` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostbackContent {
    /// The `data` of the action the user tapped; we chose it when sending the action.
    pub data: String,
    /// What a picker action returned (`date`, `time`, `datetime`, `newRichMenuAliasId`, ...).
    /// Sorted, so serialization is stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<String, String>>,
}

/// Payload of a `videoPlayComplete` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoPlayComplete {
    /// The `trackingId` we gave the video message.
    pub tracking_id: String,
}

/// Payload of a `beacon` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BeaconContent {
    /// Hardware ID of the beacon.
    pub hwid: String,
    /// What the user did in range of the beacon.
    #[serde(rename = "type")]
    pub kind: BeaconType,
    /// Device message of the beacon, when it sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dm: Option<String>,
}

/// The kinds of beacon event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BeaconType {
    /// The user entered the beacon's range.
    Enter,
    /// The user tapped the beacon banner.
    Banner,
    /// The user is staying in range.
    Stay,
    /// A beacon type added after this code was written, kept verbatim.
    #[serde(untagged)]
    Unknown(String),
}

/// Payload of an `accountLink` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkContent {
    /// Whether linking worked.
    pub result: LinkResult,
    /// The nonce we issued when starting the link, to find the user on our side.
    pub nonce: String,
}

/// The outcome of account linking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LinkResult {
    /// The accounts are linked.
    Ok,
    /// Linking failed; the event then has no reply token.
    Failed,
    /// A result added after this code was written, kept verbatim.
    #[serde(untagged)]
    Unknown(String),
}

/// Payload of a `membership` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    from = "Tagged<MembershipContentWire>"
)]
pub enum MembershipContent {
    /// The user subscribed.
    Joined {
        /// The membership plan they joined.
        membership_id: i64,
    },
    /// The user unsubscribed.
    Left {
        /// The membership plan they left.
        membership_id: i64,
    },
    /// The user renewed.
    Renewed {
        /// The membership plan they renewed.
        membership_id: i64,
    },
    /// A membership event type added after this code was written.
    #[serde(untagged)]
    Unknown {
        /// The membership event's `type`.
        #[serde(rename = "type")]
        type_name: String,
    },
}

/// Payload of a `module` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    from = "Tagged<ModuleContentWire>"
)]
pub enum ModuleContent {
    /// The module channel was attached to an account.
    Attached {
        /// The account's bot user ID.
        bot_id: String,
        /// The scopes the account's admin granted.
        scopes: Vec<String>,
    },
    /// The module channel was detached from an account.
    Detached {
        /// The account's bot user ID.
        bot_id: String,
        /// Why.
        reason: DetachedReason,
    },
    /// A module event type added after this code was written.
    #[serde(untagged)]
    Unknown {
        /// The module event's `type`.
        #[serde(rename = "type")]
        type_name: String,
    },
}

/// Why a module channel was detached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetachedReason {
    /// The account was deleted.
    BotDeleted,
    /// A reason added after this code was written, kept verbatim.
    #[serde(untagged)]
    Unknown(String),
}

/// Payload of an `activated` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatControl {
    /// When chat control goes back, in epoch milliseconds.
    pub expire_at: i64,
}

/// Payload of a `delivery` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PnpDelivery {
    /// The hashed phone number, or the `X-Line-Delivery-Tag` we sent.
    pub data: String,
}

/// The `message` of a `message` event, by message type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    from = "Tagged<MessageContentWire>"
)]
pub enum MessageContent {
    /// Text, possibly with LINE emoji and mentions.
    Text(TextMessageContent),
    /// An image; the bytes are fetched separately.
    Image(ImageMessageContent),
    /// A video; the bytes are fetched separately.
    Video(VideoMessageContent),
    /// A voice or audio clip; the bytes are fetched separately.
    Audio(AudioMessageContent),
    /// A file; the bytes are fetched separately.
    File(FileMessageContent),
    /// A shared location.
    Location(LocationMessageContent),
    /// A sticker.
    Sticker(StickerMessageContent),
    /// A message type added after this code was written.
    #[serde(untagged)]
    Unknown {
        /// The message's `type`.
        #[serde(rename = "type")]
        type_name: String,
    },
}

impl MessageContent {
    /// The message `type` as LINE spells it, including the name of an unknown type.
    pub fn type_name(&self) -> &str {
        match self {
            MessageContent::Text(_) => "text",
            MessageContent::Image(_) => "image",
            MessageContent::Video(_) => "video",
            MessageContent::Audio(_) => "audio",
            MessageContent::File(_) => "file",
            MessageContent::Location(_) => "location",
            MessageContent::Sticker(_) => "sticker",
            MessageContent::Unknown { type_name } => type_name,
        }
    }

    /// The message ID, needed to fetch content and to match `unsend` events. `None` for unknown
    /// message types, which keep only their type name.
    pub fn id(&self) -> Option<&str> {
        match self {
            MessageContent::Text(m) => Some(&m.id),
            MessageContent::Image(m) => Some(&m.id),
            MessageContent::Video(m) => Some(&m.id),
            MessageContent::Audio(m) => Some(&m.id),
            MessageContent::File(m) => Some(&m.id),
            MessageContent::Location(m) => Some(&m.id),
            MessageContent::Sticker(m) => Some(&m.id),
            MessageContent::Unknown { .. } => None,
        }
    }
}

/// A text message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextMessageContent {
    /// Message ID.
    pub id: String,
    /// The text. LINE emoji appear as `(name)` placeholders located by [`Self::emojis`].
    pub text: String,
    /// The LINE emoji in the text, only when there are some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emojis: Option<Vec<Emoji>>,
    /// The mentions in the text, only when there are some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mention: Option<Mention>,
    /// Token to quote this message in a reply or push.
    pub quote_token: String,
    /// The message this one quotes, when it quotes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted_message_id: Option<String>,
    /// Token for the mark-as-read API, so an agent reading the message shows as "read".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_as_read_token: Option<String>,
}

/// A LINE emoji inside a text message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Emoji {
    /// Position of the emoji's placeholder in the text, from 0.
    pub index: i64,
    /// Length of the placeholder (`(hello)` is 7).
    pub length: i64,
    /// The emoji set.
    pub product_id: String,
    /// The emoji within the set.
    pub emoji_id: String,
}

/// The mentions in a text message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mention {
    /// One entry per mention, at most 20.
    pub mentionees: Vec<Mentionee>,
}

/// One mention in a text message, by what it targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", from = "Tagged<MentioneeWire>")]
pub enum Mentionee {
    /// A single user (possibly this bot).
    User(UserMentionee),
    /// Everyone in the chat (`@All`).
    All(AllMentionee),
    /// A mention type added after this code was written.
    #[serde(untagged)]
    Unknown {
        /// The mentionee's `type`.
        #[serde(rename = "type")]
        type_name: String,
    },
}

/// A mention of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserMentionee {
    /// Position of the mention in the text, from 0.
    pub index: i32,
    /// Length of the mention text (`@example` is 8).
    pub length: i32,
    /// The mentioned user, only if they consented to profile access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Whether the mentioned user is this bot, which is how a bot knows it was addressed in a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_self: Option<bool>,
}

/// A mention of everyone in the chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllMentionee {
    /// Position of the mention in the text, from 0.
    pub index: i32,
    /// Length of the mention text.
    pub length: i32,
}

/// Where the bytes of an image, video or audio message live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentProvider {
    /// LINE's content API, or an external URL.
    #[serde(rename = "type")]
    pub kind: ContentProviderType,
    /// The file's URL, only for `external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_content_url: Option<String>,
    /// The preview image's URL, only for `external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_image_url: Option<String>,
}

/// Who hosts the bytes of a media message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContentProviderType {
    /// LINE: fetch them from the content API with the message ID.
    Line,
    /// Someone else: fetch `originalContentUrl`.
    External,
    /// A provider added after this code was written, kept verbatim.
    #[serde(untagged)]
    Unknown(String),
}

/// An image message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageMessageContent {
    /// Message ID.
    pub id: String,
    /// Where the image lives.
    pub content_provider: ContentProvider,
    /// Which set this image belongs to, when several were sent at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_set: Option<ImageSet>,
    /// Token to quote this message.
    pub quote_token: String,
    /// Token for the mark-as-read API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_as_read_token: Option<String>,
}

/// Groups images sent together, so agents see them as one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSet {
    /// Image set ID.
    pub id: String,
    /// This image's position in the set, from 1 (absent from old Android clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<i64>,
    /// The number of images in the set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

/// A video message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoMessageContent {
    /// Message ID.
    pub id: String,
    /// Length in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    /// Where the video lives.
    pub content_provider: ContentProvider,
    /// Token to quote this message.
    pub quote_token: String,
    /// Token for the mark-as-read API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_as_read_token: Option<String>,
}

/// An audio message. It can't be quoted, so unlike image and video it has no quote token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioMessageContent {
    /// Message ID.
    pub id: String,
    /// Where the audio lives.
    pub content_provider: ContentProvider,
    /// Length in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    /// Token for the mark-as-read API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_as_read_token: Option<String>,
}

/// A file message; the bytes always come from LINE's content API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileMessageContent {
    /// Message ID.
    pub id: String,
    /// The file's name.
    pub file_name: String,
    /// The file's size in bytes.
    pub file_size: i64,
    /// Token for the mark-as-read API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_as_read_token: Option<String>,
}

/// A location message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationMessageContent {
    /// Message ID.
    pub id: String,
    /// The place's name, if the user picked a named place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The place's address, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
    /// Token for the mark-as-read API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_as_read_token: Option<String>,
}

/// A sticker message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StickerMessageContent {
    /// Message ID.
    pub id: String,
    /// The sticker package.
    pub package_id: String,
    /// The sticker within the package.
    pub sticker_id: String,
    /// How the sticker renders (animated, with sound, with custom text, ...).
    pub sticker_resource_type: StickerResourceType,
    /// Up to 15 keywords describing the sticker (experimental; a random subset each time).
    /// Useful to show agents what a sticker "says".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
    /// Text the user typed into a message sticker (at most 100 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Token to quote this message.
    pub quote_token: String,
    /// The message this one quotes, when it quotes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted_message_id: Option<String>,
    /// Token for the mark-as-read API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_as_read_token: Option<String>,
}

/// How a sticker renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StickerResourceType {
    /// A still image.
    Static,
    /// An animated sticker.
    Animation,
    /// A sticker with sound.
    Sound,
    /// An animated sticker with sound.
    AnimationSound,
    /// A pop-up (full-screen) sticker.
    Popup,
    /// A pop-up sticker with sound.
    PopupSound,
    /// A custom sticker with user-chosen text.
    Custom,
    /// A message sticker (see [`StickerMessageContent::text`]).
    Message,
    /// A name sticker.
    NameText,
    /// A sticker with per-sticker text.
    PerStickerText,
    /// A resource type added after this code was written, kept verbatim.
    #[serde(untagged)]
    Unknown(String),
}

/// Helper to read a polymorphic type with a catch-all that keeps the type name.
///
/// `K` is an internally tagged enum with the known types plus an `#[serde(other)]` variant. Both
/// fields are flattened from the same JSON object: serde hands a flattened enum every entry
/// without using any up, then hands the flattened [`TypeTag`] struct the `type` entry. The order
/// matters, so keep `known` first.
#[derive(Deserialize)]
struct Tagged<K> {
    #[serde(flatten)]
    known: K,
    #[serde(flatten)]
    tag: TypeTag,
}

/// The `type` of a polymorphic object, kept for the catch-all variant.
#[derive(Deserialize)]
struct TypeTag {
    #[serde(rename = "type")]
    name: String,
}

/// Wire twin of [`EventKind`]; see [`Tagged`].
#[derive(Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
enum EventKindWire {
    Message {
        message: MessageContent,
    },
    Unsend {
        unsend: UnsendDetail,
    },
    Follow {
        follow: FollowDetail,
    },
    Unfollow,
    Join,
    Leave,
    MemberJoined {
        joined: JoinedMembers,
    },
    MemberLeft {
        left: LeftMembers,
    },
    Postback {
        postback: PostbackContent,
    },
    VideoPlayComplete {
        video_play_complete: VideoPlayComplete,
    },
    Beacon {
        beacon: BeaconContent,
    },
    AccountLink {
        link: LinkContent,
    },
    Membership {
        membership: MembershipContent,
    },
    Module {
        module: ModuleContent,
    },
    Activated {
        chat_control: ChatControl,
    },
    Deactivated,
    BotSuspended,
    BotResumed,
    Delivery {
        delivery: PnpDelivery,
    },
    #[serde(other)]
    Other,
}

impl From<Tagged<EventKindWire>> for EventKind {
    fn from(wire: Tagged<EventKindWire>) -> Self {
        match wire.known {
            EventKindWire::Message { message } => EventKind::Message { message },
            EventKindWire::Unsend { unsend } => EventKind::Unsend { unsend },
            EventKindWire::Follow { follow } => EventKind::Follow { follow },
            EventKindWire::Unfollow => EventKind::Unfollow,
            EventKindWire::Join => EventKind::Join,
            EventKindWire::Leave => EventKind::Leave,
            EventKindWire::MemberJoined { joined } => EventKind::MemberJoined { joined },
            EventKindWire::MemberLeft { left } => EventKind::MemberLeft { left },
            EventKindWire::Postback { postback } => EventKind::Postback { postback },
            EventKindWire::VideoPlayComplete {
                video_play_complete,
            } => EventKind::VideoPlayComplete {
                video_play_complete,
            },
            EventKindWire::Beacon { beacon } => EventKind::Beacon { beacon },
            EventKindWire::AccountLink { link } => EventKind::AccountLink { link },
            EventKindWire::Membership { membership } => EventKind::Membership { membership },
            EventKindWire::Module { module } => EventKind::Module { module },
            EventKindWire::Activated { chat_control } => EventKind::Activated { chat_control },
            EventKindWire::Deactivated => EventKind::Deactivated,
            EventKindWire::BotSuspended => EventKind::BotSuspended,
            EventKindWire::BotResumed => EventKind::BotResumed,
            EventKindWire::Delivery { delivery } => EventKind::Delivery { delivery },
            EventKindWire::Other => EventKind::Unknown {
                type_name: wire.tag.name,
            },
        }
    }
}

/// Wire twin of [`MembershipContent`]; see [`Tagged`].
#[derive(Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
enum MembershipContentWire {
    Joined {
        membership_id: i64,
    },
    Left {
        membership_id: i64,
    },
    Renewed {
        membership_id: i64,
    },
    #[serde(other)]
    Other,
}

impl From<Tagged<MembershipContentWire>> for MembershipContent {
    fn from(wire: Tagged<MembershipContentWire>) -> Self {
        match wire.known {
            MembershipContentWire::Joined { membership_id } => {
                MembershipContent::Joined { membership_id }
            }
            MembershipContentWire::Left { membership_id } => {
                MembershipContent::Left { membership_id }
            }
            MembershipContentWire::Renewed { membership_id } => {
                MembershipContent::Renewed { membership_id }
            }
            MembershipContentWire::Other => MembershipContent::Unknown {
                type_name: wire.tag.name,
            },
        }
    }
}

/// Wire twin of [`ModuleContent`]; see [`Tagged`].
#[derive(Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
enum ModuleContentWire {
    Attached {
        bot_id: String,
        scopes: Vec<String>,
    },
    Detached {
        bot_id: String,
        reason: DetachedReason,
    },
    #[serde(other)]
    Other,
}

impl From<Tagged<ModuleContentWire>> for ModuleContent {
    fn from(wire: Tagged<ModuleContentWire>) -> Self {
        match wire.known {
            ModuleContentWire::Attached { bot_id, scopes } => {
                ModuleContent::Attached { bot_id, scopes }
            }
            ModuleContentWire::Detached { bot_id, reason } => {
                ModuleContent::Detached { bot_id, reason }
            }
            ModuleContentWire::Other => ModuleContent::Unknown {
                type_name: wire.tag.name,
            },
        }
    }
}

/// Wire twin of [`MessageContent`]; see [`Tagged`].
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum MessageContentWire {
    Text(TextMessageContent),
    Image(ImageMessageContent),
    Video(VideoMessageContent),
    Audio(AudioMessageContent),
    File(FileMessageContent),
    Location(LocationMessageContent),
    Sticker(StickerMessageContent),
    #[serde(other)]
    Other,
}

impl From<Tagged<MessageContentWire>> for MessageContent {
    fn from(wire: Tagged<MessageContentWire>) -> Self {
        match wire.known {
            MessageContentWire::Text(m) => MessageContent::Text(m),
            MessageContentWire::Image(m) => MessageContent::Image(m),
            MessageContentWire::Video(m) => MessageContent::Video(m),
            MessageContentWire::Audio(m) => MessageContent::Audio(m),
            MessageContentWire::File(m) => MessageContent::File(m),
            MessageContentWire::Location(m) => MessageContent::Location(m),
            MessageContentWire::Sticker(m) => MessageContent::Sticker(m),
            MessageContentWire::Other => MessageContent::Unknown {
                type_name: wire.tag.name,
            },
        }
    }
}

/// Wire twin of [`Mentionee`]; see [`Tagged`].
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum MentioneeWire {
    User(UserMentionee),
    All(AllMentionee),
    #[serde(other)]
    Other,
}

impl From<Tagged<MentioneeWire>> for Mentionee {
    fn from(wire: Tagged<MentioneeWire>) -> Self {
        match wire.known {
            MentioneeWire::User(m) => Mentionee::User(m),
            MentioneeWire::All(m) => Mentionee::All(m),
            MentioneeWire::Other => Mentionee::Unknown {
                type_name: wire.tag.name,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group text message with a LINE emoji and two mentions, shaped like the example in LINE's
    /// Messaging API reference (IDs lengthened to their real formats).
    const TEXT_MESSAGE_EVENT: &str = r#"{
        "replyToken": "nHuyWiB7yP5Zw52FIkcQobQuGDXCTA",
        "type": "message",
        "mode": "active",
        "timestamp": 1462629479859,
        "source": {
            "type": "group",
            "groupId": "Ca56f94637cc4347f90a25382909b24b9",
            "userId": "U4af4980629aaaaaaaaaaaaaaaaaaaaaa"
        },
        "webhookEventId": "01FZ74A0TDDPYRVKNK77XKC3ZR",
        "deliveryContext": { "isRedelivery": false },
        "message": {
            "id": "444573844083572737",
            "type": "text",
            "quoteToken": "q3Plxr4AgKd",
            "markAsReadToken": "30yhdy232",
            "text": "@All @example Good Morning!! (love)",
            "emojis": [
                { "index": 29, "length": 6, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001" }
            ],
            "mention": {
                "mentionees": [
                    { "index": 0, "length": 4, "type": "all" },
                    {
                        "index": 5,
                        "length": 8,
                        "userId": "U49585cd0d5bbbbbbbbbbbbbbbbbbbbbb",
                        "type": "user",
                        "isSelf": false
                    }
                ]
            }
        }
    }"#;

    fn user_event(type_and_payload: &str) -> String {
        format!(
            r#"{{
                {type_and_payload},
                "mode": "active",
                "timestamp": 1700000000000,
                "webhookEventId": "01HCZ5Q7W1XKJ8N3V2B6T4M9RA",
                "deliveryContext": {{ "isRedelivery": false }},
                "source": {{ "type": "user", "userId": "U0123456789abcdef0123456789abcdef" }}
            }}"#
        )
    }

    #[test]
    fn a_real_text_message_event_parses_with_every_field() {
        let event = parse_event(TEXT_MESSAGE_EVENT).expect("the reference example is valid");

        let expected = Event {
            timestamp: 1462629479859,
            mode: EventMode::Active,
            webhook_event_id: "01FZ74A0TDDPYRVKNK77XKC3ZR".into(),
            delivery_context: DeliveryContext {
                is_redelivery: false,
            },
            source: Some(Source::Group {
                group_id: "Ca56f94637cc4347f90a25382909b24b9".into(),
                user_id: Some("U4af4980629aaaaaaaaaaaaaaaaaaaaaa".into()),
            }),
            reply_token: Some("nHuyWiB7yP5Zw52FIkcQobQuGDXCTA".into()),
            kind: EventKind::Message {
                message: MessageContent::Text(TextMessageContent {
                    id: "444573844083572737".into(),
                    text: "@All @example Good Morning!! (love)".into(),
                    emojis: Some(vec![Emoji {
                        index: 29,
                        length: 6,
                        product_id: "5ac1bfd5040ab15980c9b435".into(),
                        emoji_id: "001".into(),
                    }]),
                    mention: Some(Mention {
                        mentionees: vec![
                            Mentionee::All(AllMentionee {
                                index: 0,
                                length: 4,
                            }),
                            Mentionee::User(UserMentionee {
                                index: 5,
                                length: 8,
                                user_id: Some("U49585cd0d5bbbbbbbbbbbbbbbbbbbbbb".into()),
                                is_self: Some(false),
                            }),
                        ],
                    }),
                    quote_token: "q3Plxr4AgKd".into(),
                    quoted_message_id: None,
                    mark_as_read_token: Some("30yhdy232".into()),
                }),
            },
        };
        assert_eq!(event, expected);
        assert_eq!(event.type_name(), "message");
        assert_eq!(
            event.source.as_ref().and_then(Source::user_id),
            Some("U4af4980629aaaaaaaaaaaaaaaaaaaaaa")
        );
        let EventKind::Message { message } = &event.kind else {
            unreachable!("checked equal to a message event above")
        };
        assert_eq!(message.type_name(), "text");
        assert_eq!(message.id(), Some("444573844083572737"));
    }

    #[test]
    fn an_unknown_event_type_parses_into_the_unknown_variant() {
        let json = user_event(r#""type": "futureEvent", "future": { "anything": [1, 2, 3] }"#);

        let event = parse_event(&json).expect("unknown types are not an error");

        assert_eq!(
            event.kind,
            EventKind::Unknown {
                type_name: "futureEvent".into()
            }
        );
        assert_eq!(event.type_name(), "futureEvent");
        assert_eq!(event.webhook_event_id, "01HCZ5Q7W1XKJ8N3V2B6T4M9RA");
    }

    #[test]
    fn an_unknown_message_type_parses_into_the_unknown_variant() {
        let json = user_event(
            r#""type": "message", "replyToken": "r", "message": { "id": "1", "type": "hologram", "depth": 3 }"#,
        );

        let event = parse_event(&json).expect("unknown message types are not an error");

        let EventKind::Message { message } = &event.kind else {
            panic!("expected a message event, got {:?}", event.kind)
        };
        assert_eq!(
            message,
            &MessageContent::Unknown {
                type_name: "hologram".into()
            }
        );
        assert_eq!(message.type_name(), "hologram");
        assert_eq!(message.id(), None);
    }

    #[test]
    fn unknown_source_mentionee_membership_and_module_types_do_not_fail() {
        let source: Source = serde_json::from_str(r#"{"type":"space","spaceId":"S1"}"#)
            .expect("unknown source type");
        assert_eq!(source, Source::Unknown);
        let serialized = serde_json::to_string(&source).expect("serialize");
        assert_eq!(serialized, r#"{"type":"unknown"}"#);
        assert_eq!(
            serde_json::from_str::<Source>(&serialized).ok(),
            Some(Source::Unknown)
        );
        assert_eq!(source.user_id(), None);

        let mentionee: Mentionee =
            serde_json::from_str(r#"{"type":"role","index":0,"length":5}"#).expect("mentionee");
        assert_eq!(
            mentionee,
            Mentionee::Unknown {
                type_name: "role".into()
            }
        );

        let membership: MembershipContent =
            serde_json::from_str(r#"{"type":"paused","membershipId":3}"#).expect("membership");
        assert_eq!(
            membership,
            MembershipContent::Unknown {
                type_name: "paused".into()
            }
        );

        let module: ModuleContent =
            serde_json::from_str(r#"{"type":"moved","botId":"U1"}"#).expect("module");
        assert_eq!(
            module,
            ModuleContent::Unknown {
                type_name: "moved".into()
            }
        );
    }

    #[test]
    fn a_message_event_without_a_message_is_an_error() {
        let json = user_event(r#""type": "message", "replyToken": "r""#);

        let error = parse_event(&json).expect_err("message is required");

        assert!(error.to_string().contains("message"), "{error}");
    }

    #[test]
    fn a_text_message_without_text_is_an_error() {
        let json = user_event(
            r#""type": "message", "replyToken": "r", "message": { "id": "1", "type": "text", "quoteToken": "q" }"#,
        );

        let error = parse_event(&json).expect_err("text is required");

        assert!(
            error.to_string().contains("missing field `text`"),
            "{error}"
        );
    }

    #[test]
    fn a_known_event_with_a_malformed_payload_is_an_error() {
        let json = user_event(r#""type": "follow", "replyToken": "r", "follow": {}"#);

        let error = parse_event(&json).expect_err("isUnblocked is required");

        assert!(error.to_string().contains("isUnblocked"), "{error}");
    }

    #[test]
    fn an_event_missing_a_common_field_is_an_error() {
        let complete = serde_json::json!({
            "type": "unfollow",
            "mode": "active",
            "timestamp": 1700000000000_i64,
            "webhookEventId": "01HCZ5Q7W1XKJ8N3V2B6T4M9RA",
            "deliveryContext": { "isRedelivery": false },
        });
        assert!(parse_event(&complete.to_string()).is_ok());

        for field in [
            "type",
            "mode",
            "timestamp",
            "webhookEventId",
            "deliveryContext",
        ] {
            let mut broken = complete.clone();
            // unwrap: `complete` is a JSON object literal.
            broken.as_object_mut().unwrap().remove(field);

            let error =
                parse_event(&broken.to_string()).expect_err("every common field is required");

            assert!(error.to_string().contains(field), "{field}: {error}");
        }
    }

    #[test]
    fn a_sticker_with_an_unknown_resource_type_parses() {
        let json = user_event(
            r#""type": "message", "replyToken": "r", "message": {
                "id": "2", "type": "sticker", "packageId": "446", "stickerId": "1988",
                "stickerResourceType": "HOLOGRAM", "quoteToken": "q"
            }"#,
        );

        let event = parse_event(&json).expect("unknown enum values are not an error");

        let EventKind::Message {
            message: MessageContent::Sticker(sticker),
        } = &event.kind
        else {
            panic!("expected a sticker message, got {:?}", event.kind)
        };
        assert_eq!(
            sticker.sticker_resource_type,
            StickerResourceType::Unknown("HOLOGRAM".into())
        );
    }

    #[test]
    fn unknown_string_enum_values_are_kept_verbatim() {
        let mode: EventMode = serde_json::from_str(r#""paused""#).expect("mode");
        assert_eq!(mode, EventMode::Unknown("paused".into()));
        assert_eq!(
            serde_json::to_string(&mode).expect("serialize"),
            r#""paused""#
        );

        let beacon: BeaconType = serde_json::from_str(r#""leave""#).expect("beacon type");
        assert_eq!(beacon, BeaconType::Unknown("leave".into()));

        let result: LinkResult = serde_json::from_str(r#""pending""#).expect("link result");
        assert_eq!(result, LinkResult::Unknown("pending".into()));

        let reason: DetachedReason = serde_json::from_str(r#""moved""#).expect("reason");
        assert_eq!(reason, DetachedReason::Unknown("moved".into()));

        let provider: ContentProviderType = serde_json::from_str(r#""cdn""#).expect("provider");
        assert_eq!(provider, ContentProviderType::Unknown("cdn".into()));

        let resource: StickerResourceType =
            serde_json::from_str(r#""ANIMATION_SOUND""#).expect("resource type");
        assert_eq!(resource, StickerResourceType::AnimationSound);
    }

    #[test]
    fn the_message_fast_path_reads_what_the_full_parser_reads() {
        let full = |json: &str| serde_json::from_str::<Event>(json);
        let text = user_event(
            r#""type": "message", "replyToken": "r", "message": { "type": "text", "id": "1", "quoteToken": "q", "text": "hi" }"#,
        );
        let sticker = user_event(
            r#""type": "message", "message": { "type": "sticker", "id": "2", "quoteToken": "q", "packageId": "1", "stickerId": "2", "stickerResourceType": "NEW_KIND" }"#,
        );
        let unknown_message =
            user_event(r#""type": "message", "message": { "type": "hologram", "id": "3" }"#);
        for json in [TEXT_MESSAGE_EVENT, &text, &sticker, &unknown_message] {
            let fast = message_event(json).expect("a message event takes the fast path");
            assert_eq!(fast, full(json).unwrap());
            assert_eq!(parse_event(json).unwrap(), fast);
        }
        // Not a message event, or not a valid one: the full parser decides, and words the error.
        let refused = [
            user_event(r#""type": "follow", "follow": { "isUnblocked": false }"#),
            user_event(r#""type": "message""#),
            user_event(r#""type": "message", "message": null"#),
            user_event(r#""type": "message", "message": { "type": "text", "id": "1", "quoteToken": "q" }"#),
            user_event(r#""type": "message", "type": "follow", "message": { "type": "text", "id": "1", "quoteToken": "q", "text": "hi" }"#),
            r#"{"type": "message", "message": { "type": "text", "id": "1", "quoteToken": "q", "text": "hi" }}"#.to_owned(),
        ];
        for json in &refused {
            assert!(message_event(json).is_none(), "{json}");
            assert_eq!(
                parse_event(json).map_err(|e| e.to_string()),
                full(json).map_err(|e| e.to_string())
            );
        }
    }

    #[test]
    fn serialized_events_parse_back_to_equal_values() {
        let base = |kind: EventKind| Event {
            timestamp: 1700000000000,
            mode: EventMode::Standby,
            webhook_event_id: "01HCZ5Q7W1XKJ8N3V2B6T4M9RA".into(),
            delivery_context: DeliveryContext {
                is_redelivery: true,
            },
            source: Some(Source::Room {
                room_id: "Ra8dbf4673c4c812cd491258042226c99".into(),
                user_id: None,
            }),
            reply_token: Some("reply".into()),
            kind,
        };
        let events = [
            parse_event(TEXT_MESSAGE_EVENT).expect("reference example"),
            base(EventKind::Message {
                message: MessageContent::Image(ImageMessageContent {
                    id: "3".into(),
                    content_provider: ContentProvider {
                        kind: ContentProviderType::External,
                        original_content_url: Some("https://example.com/a.jpg".into()),
                        preview_image_url: Some("https://example.com/a_p.jpg".into()),
                    },
                    image_set: Some(ImageSet {
                        id: "E005".into(),
                        index: Some(1),
                        total: Some(2),
                    }),
                    quote_token: "q".into(),
                    mark_as_read_token: None,
                }),
            }),
            base(EventKind::Message {
                message: MessageContent::Location(LocationMessageContent {
                    id: "4".into(),
                    title: None,
                    address: Some("1-3 Kioicho, Chiyoda-ku, Tokyo".into()),
                    latitude: 35.67966,
                    longitude: 139.73669,
                    mark_as_read_token: None,
                }),
            }),
            base(EventKind::Unfollow),
            base(EventKind::Postback {
                postback: PostbackContent {
                    data: "action=buy&itemid=111".into(),
                    params: Some(BTreeMap::from([(
                        "datetime".to_owned(),
                        "2017-12-25T01:00".to_owned(),
                    )])),
                },
            }),
            base(EventKind::Membership {
                membership: MembershipContent::Renewed { membership_id: 7 },
            }),
            base(EventKind::Module {
                module: ModuleContent::Detached {
                    bot_id: "U0123456789abcdef0123456789abcdef".into(),
                    reason: DetachedReason::BotDeleted,
                },
            }),
            base(EventKind::VideoPlayComplete {
                video_play_complete: VideoPlayComplete {
                    tracking_id: "track-1".into(),
                },
            }),
            base(EventKind::Activated {
                chat_control: ChatControl {
                    expire_at: 1700000100000,
                },
            }),
            base(EventKind::Unknown {
                type_name: "futureEvent".into(),
            }),
        ];

        for event in events {
            let json = serde_json::to_string(&event).expect("events serialize");
            let parsed = parse_event(&json).expect("serialized events parse");
            assert_eq!(parsed, event, "round trip of {json}");
            let full: Event = serde_json::from_str(&json).expect("the full parser too");
            assert_eq!(full, parsed, "fast and full paths agree on {json}");
        }
    }

    #[test]
    fn serialization_uses_line_field_names() {
        let event = parse_event(TEXT_MESSAGE_EVENT).expect("reference example");

        let json = serde_json::to_value(&event).expect("events serialize");

        assert_eq!(json["type"], "message");
        assert_eq!(json["webhookEventId"], "01FZ74A0TDDPYRVKNK77XKC3ZR");
        assert_eq!(json["deliveryContext"]["isRedelivery"], false);
        assert_eq!(json["message"]["type"], "text");
        assert_eq!(json["message"]["quoteToken"], "q3Plxr4AgKd");
        assert_eq!(json["message"]["mention"]["mentionees"][1]["isSelf"], false);
        assert!(json["message"].get("quotedMessageId").is_none());
    }
}
