//! Group commit: many writers, one fsync. A writer takes a ticket after its write is in sled's
//! memory, then waits until a flush that started after its ticket has finished. Whoever finds no
//! flush covering its ticket becomes the leader and flushes for everyone written so far; the
//! others wake to find their ticket covered and return without flushing again.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

#[derive(Debug, Default)]
pub struct GroupCommit {
    /// Tickets handed out: one per completed write.
    written: AtomicU64,
    /// Every ticket up to this one is on disk.
    durable: AtomicU64,
    /// Held by the leader while it flushes; followers queue on it.
    leader: Mutex<()>,
    /// Flushes actually issued (fewer than commits under concurrency: that is the point).
    flushes: AtomicU64,
}

impl GroupCommit {
    /// Call after a write is in sled's memory; returns once that write is on disk.
    pub async fn commit(&self, db: &sled::Db) -> Result<(), sled::Error> {
        let ticket = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _leader = self.leader.lock().await;
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Everything ticketed so far was written before this flush starts, so it is covered.
        let covered = self.written.load(Ordering::SeqCst);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        db.flush_async().await?;
        self.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }

    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    pub fn commits(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[actix_web::test]
    async fn concurrent_commits_share_flushes_and_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let gc = Arc::new(GroupCommit::default());
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let (db, gc) = (db.clone(), gc.clone());
            tasks.push(actix_web::rt::spawn(async move {
                db.insert(i.to_be_bytes(), &[1u8; 64][..]).unwrap();
                gc.commit(&db).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(gc.commits(), 64);
        // The 63 that arrive while the first flush runs are covered by one more flush, not 63.
        assert!(gc.flushes() < 16, "{} flushes for 64 commits", gc.flushes());
        // A commit after everything is durable still flushes its own write.
        db.insert(b"late", b"x").unwrap();
        let before = gc.flushes();
        gc.commit(&db).await.unwrap();
        assert_eq!(gc.flushes(), before + 1);
    }
}
