//! The content store: attachments on disk under `{storage.path}/content/`, their metadata in
//! sled. Customers' media are downloaded here on receipt (LINE keeps them only briefly) and
//! served to agents behind authentication; agents' uploads are served publicly (LINE fetches
//! them) under unguessable ids.
//!
//! Tree `content`: content-id → [`ContentMeta`] (JSON, versioned). A file is written to a
//! temporary name and renamed before its metadata is stored, so a crash never leaves metadata
//! pointing at half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use linedesk_actors::conversation::now_ms;
use serde::{Deserialize, Serialize};

use super::StorageError;

const TREE: &str = "content";
/// Customers' media still to download: survives a restart, which resumes them.
const PENDING_TREE: &str = "content_pending";

/// Metadata format written by this release.
pub const CONTENT_FORMAT_VERSION: u16 = 1;

/// Where a file came from; decides who may read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentOrigin {
    /// A customer's message: agents only.
    Customer { account: String, message_id: String },
    /// An agent's upload: public, for LINE to fetch.
    Upload { agent: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentMeta {
    pub v: u16,
    pub id: String,
    pub origin: ContentOrigin,
    pub content_type: Option<String>,
    pub name: Option<String>,
    pub size: u64,
    pub created_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("the file is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("content file error: {0}")]
    Io(#[from] std::io::Error),
}

/// A customer's media waiting to be downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDownload {
    pub account: String,
    pub message_id: String,
    /// `None`: LINE's content API; `Some(url)`: the customer's external provider.
    pub external_url: Option<String>,
    pub name: Option<String>,
}

impl PendingDownload {
    pub fn id(&self) -> String {
        ContentStore::customer_id(&self.account, &self.message_id)
    }
}

#[derive(Clone)]
pub struct ContentStore {
    tree: sled::Tree,
    pending: sled::Tree,
    dir: PathBuf,
    max_bytes: u64,
}

impl ContentStore {
    pub fn open(db: &sled::Db, data_dir: &Path, max_bytes: u64) -> Result<Self, ContentError> {
        let dir = data_dir.join("content");
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            tree: db.open_tree(TREE).map_err(StorageError::from)?,
            pending: db.open_tree(PENDING_TREE).map_err(StorageError::from)?,
            dir,
            max_bytes,
        })
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The id of a customer's media: one per LINE message, so a redelivery stores it once.
    pub fn customer_id(account: &str, message_id: &str) -> String {
        format!("line-{account}-{message_id}")
    }

    /// A fresh, unguessable id for an upload.
    pub fn upload_id() -> String {
        format!("up-{}", uuid::Uuid::new_v4().simple())
    }

    /// Stores a whole file; refuses (and stores nothing) above `content.max_bytes`.
    pub fn put(
        &self,
        id: &str,
        origin: ContentOrigin,
        content_type: Option<String>,
        name: Option<String>,
        bytes: &[u8],
    ) -> Result<ContentMeta, ContentError> {
        if bytes.len() as u64 > self.max_bytes {
            return Err(ContentError::TooLarge {
                limit: self.max_bytes,
            });
        }
        let path = self.path_of(id);
        let partial = path.with_extension("partial");
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&partial, &path)?;
        let meta = ContentMeta {
            v: CONTENT_FORMAT_VERSION,
            id: id.to_owned(),
            origin,
            content_type,
            name,
            size: bytes.len() as u64,
            created_at_ms: now_ms(),
        };
        // unwrap: plain data serialises to JSON without fail.
        let encoded = serde_json::to_vec(&meta).unwrap();
        self.tree
            .insert(id.as_bytes(), encoded)
            .map_err(StorageError::from)?;
        Ok(meta)
    }

    /// Remembers a download to do (written with the webhook's events, so it is as durable).
    pub fn add_pending(&self, download: &PendingDownload) -> Result<(), StorageError> {
        // unwrap: plain data serialises to JSON without fail.
        let bytes = serde_json::to_vec(download).unwrap();
        self.pending.insert(download.id().as_bytes(), bytes)?;
        Ok(())
    }

    /// The download is done, or given up.
    pub fn remove_pending(&self, id: &str) -> Result<(), StorageError> {
        self.pending.remove(id.as_bytes())?;
        Ok(())
    }

    /// Downloads not done yet (to resume at start-up); unreadable entries are skipped.
    pub fn pending(&self) -> Vec<PendingDownload> {
        self.pending
            .iter()
            .filter_map(|item| item.ok())
            .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
            .collect()
    }

    pub fn meta(&self, id: &str) -> Result<Option<ContentMeta>, StorageError> {
        match self.tree.get(id.as_bytes())? {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StorageError::Corrupt {
                        key: format!("content/{id}"),
                        reason: e.to_string(),
                    })
            }
            None => Ok(None),
        }
    }

    /// Metadata and bytes of a stored file.
    pub fn read(&self, id: &str) -> Result<Option<(ContentMeta, Vec<u8>)>, ContentError> {
        let Some(meta) = self.meta(id)? else {
            return Ok(None);
        };
        let bytes = std::fs::read(self.path_of(id))?;
        Ok(Some((meta, bytes)))
    }

    fn path_of(&self, id: &str) -> PathBuf {
        // Ids are made here (prefix + LINE's numeric id or a UUID); keep them to a safe alphabet
        // anyway, so that no id can name a path outside the folder.
        let safe: String = id
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
                _ => '_',
            })
            .collect();
        self.dir.join(safe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_round_trips_and_one_over_the_limit_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = ContentStore::open(&db, dir.path(), 10).unwrap();
        let origin = ContentOrigin::Upload { agent: None };
        let meta = store
            .put(
                "up-1",
                origin.clone(),
                Some("image/png".into()),
                None,
                b"0123456789",
            )
            .unwrap();
        assert_eq!(meta.size, 10);
        let (read, bytes) = store.read("up-1").unwrap().unwrap();
        assert_eq!((read, bytes.as_slice()), (meta, &b"0123456789"[..]));
        let refused = store.put("up-2", origin, None, None, b"0123456789A");
        assert!(matches!(refused, Err(ContentError::TooLarge { limit: 10 })));
        assert!(store.meta("up-2").unwrap().is_none());
        let files = std::fs::read_dir(dir.path().join("content"))
            .unwrap()
            .count();
        assert_eq!(files, 1, "only the first file is on disk");
    }

    #[test]
    fn pending_downloads_are_kept_until_removed_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = ContentStore::open(&db, dir.path(), 100).unwrap();
        let download = PendingDownload {
            account: "demo".into(),
            message_id: "42".into(),
            external_url: None,
            name: Some("a.pdf".into()),
        };
        store.add_pending(&download).unwrap();
        store.add_pending(&download).unwrap();
        let reopened = ContentStore::open(&db, dir.path(), 100).unwrap();
        assert_eq!(reopened.pending(), vec![download.clone()]);
        reopened.remove_pending(&download.id()).unwrap();
        assert!(reopened.pending().is_empty());
    }

    #[test]
    fn ids_cannot_escape_the_content_folder() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = ContentStore::open(&db, dir.path(), 100).unwrap();
        let path = store.path_of("../../etc/passwd");
        assert!(path.starts_with(dir.path().join("content")));
    }
}
