//! Contacts: what LINE told about each customer (profile), with when it was fetched, so that a
//! profile is fetched once per `line.profile_ttl_ms` and a 404 is not asked again in a loop.
//!
//! Tree `contacts`: chat-key → [`ContactRecord`] (JSON, versioned).

use linedesk_actors::domain::{ConversationKey, CustomerProfile};
use linedesk_actors::outbound::ContactBook;
use serde::{Deserialize, Serialize};

use super::StorageError;

const TREE: &str = "contacts";

/// Record format written by this release.
pub const CONTACT_FORMAT_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub v: u16,
    /// `None` when LINE has no profile for them (404: blocked, not a friend).
    pub profile: Option<CustomerProfile>,
    pub fetched_at_ms: i64,
}

impl ContactRecord {
    pub fn is_fresh(&self, now_ms: i64, ttl_ms: i64) -> bool {
        now_ms - self.fetched_at_ms < ttl_ms
    }
}

#[derive(Clone)]
pub struct SledContacts {
    tree: sled::Tree,
}

impl SledContacts {
    pub fn open(db: &sled::Db) -> Result<Self, StorageError> {
        Ok(Self {
            tree: db.open_tree(TREE)?,
        })
    }

    pub fn get(&self, key: &ConversationKey) -> Result<Option<ContactRecord>, StorageError> {
        let id = key.to_string();
        match self.tree.get(id.as_bytes())? {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StorageError::Corrupt {
                        key: format!("contacts/{id}"),
                        reason: e.to_string(),
                    })
            }
            None => Ok(None),
        }
    }

    pub fn put(&self, key: &ConversationKey, record: &ContactRecord) -> Result<(), StorageError> {
        // unwrap: plain data serialises to JSON without fail.
        let bytes = serde_json::to_vec(record).unwrap();
        self.tree.insert(key.to_string().as_bytes(), bytes)?;
        Ok(())
    }
}

impl ContactBook for SledContacts {
    fn cached(&self, key: &ConversationKey) -> Option<CustomerProfile> {
        match self.get(key) {
            Ok(record) => record.and_then(|r| r.profile),
            Err(e) => {
                tracing::warn!(error.message = %e, "could not read a contact");
                None
            }
        }
    }
}
