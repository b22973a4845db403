//! Group commit: many writers, one fsync. A writer takes a ticket after its write is in sled's
//! memory, then waits until a flush that started after its ticket has finished. One flush task
//! at a time flushes for every ticket handed out so far, and goes on while new tickets came in
//! during its flush; writers only watch the durable mark.
//!
//! Writers never hold anything while they wait, so a writer that stops being polled blocks no
//! one. An actor inside `ctx.wait` polls nothing else: an `AgentSession` whose spawned `send`
//! held (or was next in line for) a leader lock, and which then waited on a commit for an
//! `assigned` frame, used to stop every commit of the server, webhooks included.
//! `linedesk loadgen` found it.
//!
//! A flush starts at least `min_interval` after the previous one started: an fsync costs
//! ~100–250 µs of CPU on a virtual disk, and under load waiting a moment lets many more
//! writers share one (docs/benchmarks.md, thirteenth round).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

#[derive(Debug)]
pub struct GroupCommit {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Tickets handed out: one per completed write.
    written: AtomicU64,
    /// Whether a flush task is running.
    flushing: AtomicBool,
    /// What the last flush achieved; writers wait on it.
    durable: watch::Sender<Durable>,
    /// Flushes actually issued (fewer than commits under concurrency: that is the point).
    flushes: AtomicU64,
    /// Least time from one flush's start to the next (µs); 0: none.
    min_interval_us: AtomicU64,
    last_flush: Mutex<Option<Instant>>,
}

#[derive(Debug, Clone, Default)]
struct Durable {
    /// Every ticket up to this one is on disk.
    up_to: u64,
    /// The last failed flush: the tickets up to `.0` it should have covered, and why.
    failed: Option<(u64, String)>,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                written: AtomicU64::new(0),
                flushing: AtomicBool::new(false),
                durable: watch::Sender::new(Durable::default()),
                flushes: AtomicU64::new(0),
                min_interval_us: AtomicU64::new(0),
                last_flush: Mutex::new(None),
            }),
        }
    }
}

impl GroupCommit {
    /// Call after a write is in sled's memory; returns once that write is on disk.
    pub async fn commit(&self, db: &sled::Db) -> Result<(), sled::Error> {
        let ticket = self.shared.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut durable = self.shared.durable.subscribe();
        loop {
            {
                let state = durable.borrow_and_update();
                if state.up_to >= ticket {
                    return Ok(());
                }
                if let Some((covered, why)) = &state.failed {
                    if *covered >= ticket {
                        return Err(sled::Error::Io(std::io::Error::other(why.clone())));
                    }
                }
            }
            if !self.shared.flushing.swap(true, Ordering::SeqCst) {
                // A task of its own: it finishes even if this caller is no longer polled.
                tokio::spawn(Shared::flush(self.shared.clone(), db.clone()));
            }
            // unwrap: `self.shared` holds the sender, so the channel cannot close.
            durable.changed().await.unwrap();
        }
    }

    /// From now on a flush starts at least `interval` after the previous one started
    /// (`storage.group_commit_min_interval_ms`).
    pub fn set_min_interval(&self, interval: Duration) {
        let us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
        self.shared.min_interval_us.store(us, Ordering::Relaxed);
    }

    pub fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }

    pub fn commits(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// Flushes until no ticket is left uncovered, then steps down.
    async fn flush(self: Arc<Self>, db: sled::Db) {
        loop {
            self.wait_for_interval().await;
            // Everything ticketed so far was written before this flush starts, so it is covered.
            let covered = self.written.load(Ordering::SeqCst);
            self.flushes.fetch_add(1, Ordering::Relaxed);
            let result = db.flush_async().await;
            self.durable.send_modify(|d| match result {
                Ok(_) => d.up_to = d.up_to.max(covered),
                Err(e) => d.failed = Some((covered, e.to_string())),
            });
            self.flushing.store(false, Ordering::SeqCst);
            // A ticket taken after `covered` was read may have found this task running and
            // left the flush to it: take it on, unless another task just did.
            let pending = self.written.load(Ordering::SeqCst) > covered;
            if !pending || self.flushing.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Waits until `min_interval` has passed since the last flush started, then marks this
    /// one started. Only the one flush task runs it.
    async fn wait_for_interval(&self) {
        let interval = Duration::from_micros(self.min_interval_us.load(Ordering::Relaxed));
        let last = *self.last_flush.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(due) = last.map(|at| at + interval) {
            if !interval.is_zero() && due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        *self.last_flush.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
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
    async fn a_flush_waits_out_the_least_interval_and_the_writers_meanwhile_share_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let gc = Arc::new(GroupCommit::default());
        let interval = Duration::from_millis(200);
        gc.set_min_interval(interval);
        db.insert(b"first", b"1").unwrap();
        let started = Instant::now();
        gc.commit(&db).await.unwrap();
        assert_eq!(gc.flushes(), 1, "the first flush does not wait");
        let mut tasks = Vec::new();
        for i in 0..16u32 {
            let (db, gc) = (db.clone(), gc.clone());
            tasks.push(actix_web::rt::spawn(async move {
                db.insert(i.to_be_bytes(), b"x").unwrap();
                gc.commit(&db).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(
            started.elapsed() >= interval,
            "returned {:?} after the first flush began",
            started.elapsed()
        );
        // One flush for the 16 (a third only if this process stalled for the whole interval).
        assert!(gc.flushes() <= 3, "{} flushes for 17 commits", gc.flushes());
    }

    #[actix_web::test]
    async fn writers_that_are_no_longer_polled_do_not_block_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let gc = GroupCommit::default();
        // Two commits start (the first starts the flush, the second waits in line) and their
        // callers then stop polling them, as an actor in `ctx.wait` stops polling its spawned
        // futures.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        db.insert(b"a", b"1").unwrap();
        let mut first = Box::pin(gc.commit(&db));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        db.insert(b"b", b"2").unwrap();
        let mut second = Box::pin(gc.commit(&db));
        assert!(second.as_mut().poll(&mut cx).is_pending());
        db.insert(b"c", b"3").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(60), gc.commit(&db))
            .await
            .expect("a later commit completes while the others' callers sleep")
            .unwrap();
        drop((first, second));
    }
}
