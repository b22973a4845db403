//! A watchdog for a database that stopped taking writes.
//!
//! sled 0.34.7 can deadlock under heavy write load: a writer holds its segment accountant
//! while waiting for a file truncation that only its I/O threads can run, and they wait for
//! that same lock (docs/benchmarks.md, thirteenth round; upstream spacejam/sled#1412). Nothing
//! then moves: webhooks wait for the journal, agents for their acks. A server that exits
//! instead is restarted by its supervisor and recovers exactly (what was acknowledged is in
//! the journal's event log), so a write that has not finished in `storage.hang_exit_secs` ends
//! the process.

use std::sync::mpsc;
use std::time::Duration;

/// Exit status of a process the watchdog ends (`EX_SOFTWARE`).
pub const HUNG_EXIT_STATUS: i32 = 70;

/// How often the database is probed at most.
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// Runs until dropped: probes the database, and reports a probe that did not return in time.
#[derive(Debug)]
pub struct Watchdog {
    /// Dropping it stops the watchdog, which then lets go of the probe (and its database).
    _stop: mpsc::Sender<()>,
}

/// Probes with `probe` every `limit / 4` (at most [`PROBE_EVERY`]); calls `on_hang` with the
/// limit once a probe has not returned within it, then stops. The probe runs on a thread of
/// its own, so a probe that never returns holds up nothing else.
pub fn spawn<P, H>(probe: P, limit: Duration, on_hang: H) -> std::io::Result<Watchdog>
where
    P: Fn() + Send + 'static,
    H: FnOnce(Duration) + Send + 'static,
{
    let every = (limit / 4).min(PROBE_EVERY);
    let (stop, stopped) = mpsc::channel::<()>();
    let (ask, asked) = mpsc::channel::<()>();
    let (tell, told) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("db-probe".into())
        .spawn(move || {
            while asked.recv().is_ok() {
                probe();
                if tell.send(()).is_err() {
                    return;
                }
            }
        })?;
    std::thread::Builder::new()
        .name("db-watchdog".into())
        .spawn(move || loop {
            match stopped.recv_timeout(every) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            if ask.send(()).is_err() {
                return;
            }
            match told.recv_timeout(limit) {
                Ok(()) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    on_hang(limit);
                    return;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        })?;
    Ok(Watchdog { _stop: stop })
}

/// The probe of a real database: one small write, as every writer makes them.
pub fn write_probe(db: &sled::Db) -> impl Fn() + Send + 'static {
    let tree = db.open_tree("watchdog");
    move || {
        if let Ok(tree) = &tree {
            // An error is not a hang: the writers that hit it report it themselves.
            let now = linedesk_actors::conversation::now_ms();
            let _ = tree.insert(b"probe", &now.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_probe_that_does_not_return_in_time_is_reported_once() {
        let (hung, reported) = mpsc::channel();
        let limit = Duration::from_millis(100);
        let (release, stuck) = mpsc::channel::<()>();
        let stuck = std::sync::Mutex::new(stuck);
        let _watchdog = spawn(
            move || {
                // Never returns until the test ends: as a deadlocked sled write.
                let _ = stuck.lock().unwrap().recv();
            },
            limit,
            move |after| hung.send(after).unwrap(),
        )
        .unwrap();
        let after = reported
            .recv_timeout(Duration::from_secs(60))
            .expect("the hang is reported");
        assert_eq!(after, limit);
        // The watchdog stopped: its end of the channel is gone, so nothing more can come.
        assert!(matches!(
            reported.recv_timeout(Duration::from_secs(60)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        ));
        drop(release);
    }

    #[test]
    fn probes_that_return_are_repeated_and_never_reported() {
        let probes = Arc::new(AtomicUsize::new(0));
        let counted = probes.clone();
        let (hung, reported) = mpsc::channel();
        // Probed every 0.5 s, with 2 s for each probe: far more than a counter needs.
        let watchdog = spawn(
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
            Duration::from_secs(2),
            move |after| hung.send(after).unwrap(),
        )
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while probes.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(probes.load(Ordering::SeqCst) >= 2);
        assert!(reported.try_recv().is_err());
        drop(watchdog);
        // Stopped, the watchdog drops `on_hang` (and the probe): the channel closes.
        assert!(matches!(
            reported.recv_timeout(Duration::from_secs(60)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        ));
    }

    #[test]
    fn the_write_probe_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        write_probe(&db)();
        assert!(db
            .open_tree("watchdog")
            .unwrap()
            .get(b"probe")
            .unwrap()
            .is_some());
    }
}
