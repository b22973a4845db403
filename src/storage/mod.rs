//! Storage on sled: the durable journal of LINE webhook events (the conversations' journal).
//!
//! One sled database under `storage.path`; each concern is a tree of its own so that its keys
//! cannot collide with another's.

mod contacts;
mod content;
mod conversations;
mod event_log;
mod group_commit;
mod journal;
mod outbox;
mod redelivery;
mod uncovered;
pub mod watchdog;

pub use contacts::{ContactRecord, SledContacts, CONTACT_FORMAT_VERSION};
pub use content::{ContentError, ContentMeta, ContentOrigin, ContentStore, PendingDownload};
pub use conversations::{ConversationSummary, ListPage, ListQuery, SledConversationStore};
pub use group_commit::GroupCommit;
pub use journal::{
    AppendOutcome, IncomingEvent, Journal, JournalRetention, StoredEvent, JOURNAL_FORMAT_VERSION,
};
pub use outbox::{OutboxQueued, OutboxRecord, PlannedRequest, Planner, SentVia, SledOutbox};

use std::path::PathBuf;

use crate::settings::StorageSettings;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the database at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("the journal writer has stopped")]
    WriterGone,
    #[error("the journal batch could not be written: {0}")]
    BatchFailed(String),
    #[error("the journal's event log failed: {0}")]
    EventLog(String),
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

impl StorageSettings {
    /// Opens the database once more and closes it: sled 0.34 replays its log since its last
    /// snapshot and writes a new one only when it opens, so doing it at a clean stop saves the
    /// next start that replay. Call once every handle of the server's is gone. A handle still
    /// being dropped (an arbiter thread winding down, a sled I/O thread) is waited for, up to
    /// 10 s.
    pub fn snapshot_now(&self) -> Result<std::time::Duration, StorageError> {
        let started = std::time::Instant::now();
        drop(once_released(|| self.open())?);
        Ok(started.elapsed())
    }

    /// Opens (or creates) the database these settings describe.
    pub fn open(&self) -> Result<sled::Db, StorageError> {
        sled::Config::new()
            .path(&self.path)
            .cache_capacity(self.cache_capacity_bytes)
            .flush_every_ms(Some(self.flush_every_ms))
            .open()
            .map_err(|source| StorageError::Open {
                path: self.path.clone(),
                source,
            })
    }
}

/// Opens a database whose last handle in this process was just dropped. sled 0.34 lets go of
/// the folder's lock only when its last I/O thread is done, a moment after that: opening is
/// retried for up to 10 s.
fn once_released<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let mut attempt = 0;
    loop {
        match open() {
            Err(e) if attempt < 200 => {
                attempt += 1;
                tracing::debug!(error.message = %e, "the database is still held; retrying");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

/// For tests that open a folder again in the same process.
#[cfg(test)]
pub(crate) fn reopen(path: &std::path::Path) -> sled::Db {
    once_released(|| sled::open(path)).expect("the database opens again")
}

/// A stored sequence number: 8 bytes, big-endian.
fn decode_seq(key: &[u8], value: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| corrupt(key, "a sequence number is 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn corrupt(key: &[u8], reason: impl ToString) -> StorageError {
    StorageError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}
