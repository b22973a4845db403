//! Validated identifiers. Each is built only through a checking constructor, so code that holds
//! one never has to re-check it (and storage keys built from them cannot be ambiguous).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {max} characters")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} may only contain {allowed}")]
    BadCharacter {
        kind: &'static str,
        allowed: &'static str,
    },
}

pub(crate) fn check(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(u8) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    if !value.bytes().all(ok) {
        return Err(IdError::BadCharacter { kind, allowed });
    }
    Ok(())
}

/// A configured identifier kept to lowercase letters, digits, `-` and `_`, so it is safe in
/// URLs, storage keys and conversation ids. Held as `Arc<str>`: ids are cloned into every
/// routing offer and index key, and a clone should not allocate. Serialized as the plain string.
///
/// Equality and order are those of the text; clones share one allocation, so equal pointers
/// answer without reading it (the router compares ids in every lookup and index search).
macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            pub const MAX_LEN: usize = 64;

            pub fn parse(value: impl Into<String>) -> Result<Self, $crate::domain::IdError> {
                let value = value.into();
                $crate::domain::ids::check(
                    $kind,
                    &value,
                    Self::MAX_LEN,
                    "lowercase letters, digits, '-' and '_'",
                    |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_',
                )?;
                Ok(Self(value.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
            }
        }

        impl Eq for $name {}

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                std::hash::Hash::hash(&self.0, state);
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                if std::sync::Arc::ptr_eq(&self.0, &other.0) {
                    std::cmp::Ordering::Equal
                } else {
                    self.0.cmp(&other.0)
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::domain::IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0.as_ref().to_owned()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use slug_id;

slug_id!(
    /// The id of a LINE Official Account as configured in linedesk. It appears in the callback
    /// URL (`/line/webhook/{id}`) and in storage keys.
    AccountId,
    "account id"
);

slug_id!(
    /// An agent as configured (and, later, created through the admin API).
    AgentId,
    "agent id"
);

/// Where a LINE conversation happens: one-to-one with a user, or in a group or a room. Group and
/// room chats are conversations of their own; the sender of each message is kept on the message.
/// The ids are `Arc<str>` so that cloning a conversation id does not allocate. The serde form
/// is that of `LineSourceWire`, which has the `String`s these once were.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "LineSourceWire", into = "LineSourceWire")]
pub enum LineSource {
    User(Arc<str>),
    Group(Arc<str>),
    Room(Arc<str>),
    /// Events without a chat (module and delivery events) belong to the account itself.
    Channel,
}

/// `LineSource` as stored and sent: `{"type":"user","id":"U…"}`, `{"type":"channel"}`.
#[derive(Serialize, Deserialize)]
#[serde(
    rename = "LineSource",
    tag = "type",
    content = "id",
    rename_all = "lowercase"
)]
enum LineSourceWire {
    User(String),
    Group(String),
    Room(String),
    Channel,
}

impl From<LineSourceWire> for LineSource {
    fn from(wire: LineSourceWire) -> Self {
        match wire {
            LineSourceWire::User(id) => Self::User(id.into()),
            LineSourceWire::Group(id) => Self::Group(id.into()),
            LineSourceWire::Room(id) => Self::Room(id.into()),
            LineSourceWire::Channel => Self::Channel,
        }
    }
}

impl From<LineSource> for LineSourceWire {
    fn from(source: LineSource) -> Self {
        match source {
            LineSource::User(id) => Self::User(id.as_ref().to_owned()),
            LineSource::Group(id) => Self::Group(id.as_ref().to_owned()),
            LineSource::Room(id) => Self::Room(id.as_ref().to_owned()),
            LineSource::Channel => Self::Channel,
        }
    }
}

impl LineSource {
    /// LINE ids are `U`/`C`/`R` followed by hex; anything printable without separators is accepted
    /// so that a format change at LINE does not drop events.
    const MAX_LEN: usize = 128;

    fn checked(kind: &'static str, id: String) -> Result<Arc<str>, IdError> {
        check(
            kind,
            &id,
            Self::MAX_LEN,
            "printable ASCII without '/', '.' or spaces",
            |b| b.is_ascii_graphic() && b != b'/' && b != b'.',
        )?;
        Ok(id.into())
    }

    pub fn user(id: impl Into<String>) -> Result<Self, IdError> {
        Ok(Self::User(Self::checked("LINE user id", id.into())?))
    }

    pub fn group(id: impl Into<String>) -> Result<Self, IdError> {
        Ok(Self::Group(Self::checked("LINE group id", id.into())?))
    }

    pub fn room(id: impl Into<String>) -> Result<Self, IdError> {
        Ok(Self::Room(Self::checked("LINE room id", id.into())?))
    }

    /// The LINE id to push to (`to`), if the source is a chat.
    pub fn chat_id(&self) -> Option<&str> {
        match self {
            Self::User(id) | Self::Group(id) | Self::Room(id) => Some(id),
            Self::Channel => None,
        }
    }
}

impl fmt::Display for LineSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(id) => write!(f, "user/{id}"),
            Self::Group(id) => write!(f, "group/{id}"),
            Self::Room(id) => write!(f, "room/{id}"),
            Self::Channel => f.write_str("channel"),
        }
    }
}

/// Identifies the conversation actor of one source of one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationKey {
    pub account: AccountId,
    pub source: LineSource,
}

impl ConversationKey {
    pub fn new(account: AccountId, source: LineSource) -> Self {
        Self { account, source }
    }

    /// Parses the `Display` form, `{account}/{kind}/{id}` or `{account}/channel`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let bad = IdError::BadCharacter {
            kind: "conversation key",
            allowed: "the form account/user|group|room/id or account/channel",
        };
        let mut parts = value.splitn(3, '/');
        let account = AccountId::parse(parts.next().unwrap_or_default())?;
        let source = match (parts.next(), parts.next()) {
            (Some("user"), Some(id)) => LineSource::user(id)?,
            (Some("group"), Some(id)) => LineSource::group(id)?,
            (Some("room"), Some(id)) => LineSource::room(id)?,
            (Some("channel"), None) => LineSource::Channel,
            _ => return Err(bad),
        };
        Ok(Self { account, source })
    }
}

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.source)
    }
}

/// One conversation: the `number`th of a chat. A customer who writes again after a conversation
/// closed starts the next number; the earlier ones stay readable. Written
/// `{account}.{user|group|room}.{line id}.{number}`: URL-safe, and sortable by chat.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConversationId {
    pub key: ConversationKey,
    pub number: u32,
}

impl ConversationId {
    pub fn new(key: ConversationKey, number: u32) -> Self {
        Self { key, number }
    }

    pub fn parse(value: &str) -> Result<Self, IdError> {
        let bad = IdError::BadCharacter {
            kind: "conversation id",
            allowed: "the form account.user|group|room.id.number",
        };
        let parts: Vec<&str> = value.split('.').collect();
        let [account, kind, id, number] = parts[..] else {
            return Err(bad);
        };
        let account = AccountId::parse(account)?;
        let source = match kind {
            "user" => LineSource::user(id)?,
            "group" => LineSource::group(id)?,
            "room" => LineSource::room(id)?,
            _ => return Err(bad),
        };
        let number = number.parse().map_err(|_| bad)?;
        Ok(Self::new(ConversationKey::new(account, source), number))
    }
}

impl TryFrom<String> for ConversationId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ConversationId> for String {
    fn from(id: ConversationId) -> Self {
        id.to_string()
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, id) = match &self.key.source {
            LineSource::User(id) => ("user", &**id),
            LineSource::Group(id) => ("group", &**id),
            LineSource::Room(id) => ("room", &**id),
            LineSource::Channel => ("channel", "-"),
        };
        write!(f, "{}.{kind}.{id}.{}", self.key.account, self.number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_url_and_key_safe() {
        assert!(AccountId::parse("demo").is_ok());
        assert!(AccountId::parse("shop-2_jp").is_ok());
        assert!(matches!(AccountId::parse(""), Err(IdError::Empty { .. })));
        assert!(AccountId::parse("Demo").is_err());
        assert!(AccountId::parse("a/b").is_err());
        assert!(AccountId::parse("a".repeat(65)).is_err());
    }

    #[test]
    fn a_conversation_key_round_trips_through_its_display_form() {
        let account = AccountId::parse("demo").unwrap();
        for source in [
            LineSource::user("U4af4980629").unwrap(),
            LineSource::group("Ca56f9").unwrap(),
            LineSource::room("Ra8dbf4").unwrap(),
            LineSource::Channel,
        ] {
            let key = ConversationKey::new(account.clone(), source);
            assert_eq!(ConversationKey::parse(&key.to_string()).unwrap(), key);
        }
        assert!(ConversationKey::parse("demo/user").is_err());
        assert!(ConversationKey::parse("demo/user/a/b").is_err());
    }

    #[test]
    fn a_conversation_id_round_trips_and_names_its_chat() {
        let key = ConversationKey::parse("demo/user/U4af4980629").unwrap();
        let id = ConversationId::new(key.clone(), 3);
        assert_eq!(id.to_string(), "demo.user.U4af4980629.3");
        assert_eq!(
            ConversationId::parse("demo.user.U4af4980629.3").unwrap(),
            id
        );
        assert!(ConversationId::parse("demo.user.U4af4980629").is_err());
        assert!(ConversationId::parse("demo.bot.U1.1").is_err());
        assert!(ConversationId::parse("demo.user.U1.x").is_err());
    }

    /// `LineSource` as it was derived when its ids were `String`s: stored snapshots hold this.
    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type", content = "id", rename_all = "lowercase")]
    enum StringLineSource {
        User(String),
        Group(String),
        Room(String),
        Channel,
    }

    #[test]
    fn ids_serialize_as_they_did_when_they_were_strings() {
        let sources = [
            (
                LineSource::user("U4af4").unwrap(),
                StringLineSource::User("U4af4".into()),
            ),
            (
                LineSource::group("Ca56").unwrap(),
                StringLineSource::Group("Ca56".into()),
            ),
            (
                LineSource::room("Ra8d").unwrap(),
                StringLineSource::Room("Ra8d".into()),
            ),
            (LineSource::Channel, StringLineSource::Channel),
        ];
        for (source, old) in sources {
            let old = serde_json::to_string(&old).unwrap();
            assert_eq!(serde_json::to_string(&source).unwrap(), old);
            assert_eq!(serde_json::from_str::<LineSource>(&old).unwrap(), source);
        }
        let key = ConversationKey::parse("demo/user/U4af4").unwrap();
        let json = r#"{"account":"demo","source":{"type":"user","id":"U4af4"}}"#;
        assert_eq!(serde_json::to_string(&key).unwrap(), json);
        assert_eq!(serde_json::from_str::<ConversationKey>(json).unwrap(), key);
        let agent = AgentId::parse("agent-1").unwrap();
        assert_eq!(serde_json::to_string(&agent).unwrap(), r#""agent-1""#);
        assert_eq!(
            serde_json::from_str::<AgentId>(r#""agent-1""#).unwrap(),
            agent
        );
        assert!(serde_json::from_str::<AgentId>(r#""Agent""#).is_err());
        assert!(serde_json::from_str::<LineSource>(r#"{"type":"user"}"#).is_err());
    }

    #[test]
    fn source_ids_with_separators_are_refused() {
        assert!(LineSource::user("U1 2").is_err());
        assert!(LineSource::user("").is_err());
        assert!(LineSource::group("C/1").is_err());
    }
}
