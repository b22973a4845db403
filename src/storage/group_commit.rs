//! Group commit: many writers, one fsync. A writer takes a ticket after its write is in sled's
//! memory, then waits until a flush that started after its ticket has finished. Whoever finds no
//! flush covering its ticket becomes the leader and flushes for everyone written so far; the
//! others wake to find their ticket covered and return without flushing again.
//!
//! The flush runs on a task of its own, which holds the leadership until the flush is done.
//! A caller may stop being polled while it waits: an actor inside `ctx.wait` polls nothing
//! else, so an `AgentSession` whose spawned `send` had become the leader and which then waited
//! on a commit for `assigned` held the leadership forever, and every commit of the server
//! (webhooks included) stopped. `linedesk loadgen` found this.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;

#[derive(Debug, Default)]
pub struct GroupCommit {
    /// Tickets handed out: one per completed write.
    written: AtomicU64,
    /// Every ticket up to this one is on disk; shared with the flush task.
    durable: Arc<AtomicU64>,
    /// Held by the flush task while it flushes; followers queue on it.
    leader: Arc<Mutex<()>>,
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
        let leader = self.leader.clone().lock_owned().await;
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Everything ticketed so far was written before this flush starts, so it is covered.
        let covered = self.written.load(Ordering::SeqCst);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let (db, durable) = (db.clone(), self.durable.clone());
        let flush = tokio::spawn(async move {
            let _leader = leader;
            db.flush_async().await?;
            durable.fetch_max(covered, Ordering::SeqCst);
            Ok(())
        });
        flush.await.unwrap_or_else(|e| {
            Err(sled::Error::ReportableBug(format!("the flush task failed: {e}")))
        })
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
    use std::future::Future;

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

    #[actix_web::test]
    async fn a_leader_that_is_no_longer_polled_does_not_block_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let gc = GroupCommit::default();
        db.insert(b"a", b"1").unwrap();
        // The first commit becomes the leader; its caller then stops polling it (as an actor
        // in `ctx.wait` stops polling its spawned futures).
        let mut stalled = Box::pin(gc.commit(&db));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(stalled.as_mut().poll(&mut cx).is_pending());
        db.insert(b"b", b"2").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(60), gc.commit(&db))
            .await
            .expect("a later commit completes while the leader's caller sleeps")
            .unwrap();
        drop(stalled);
    }
}
