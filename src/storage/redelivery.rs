//! The redelivery check: which events of an account LINE already delivered, by `webhookEventId`,
//! so that a redelivered event is acknowledged and not stored twice.
//!
//! A check is filed under the day of the event's `timestamp`, which a redelivery keeps (it is the
//! original event time): finding it is one lookup, and the days older than
//! `storage.redelivery_window_days` are removed in key order. Without that, the checks grew with
//! every event ever received, on disk and in sled's per-page memory.
//!
//! Keys, in the journal's tree:
//! - `w` day(be u32) account `\0` webhookEventId → seq(be u64)
//! - `d` account `\0` webhookEventId → seq(be u64): as releases before the day were added filed
//!   them. Still consulted, and removed once a window has passed since the upgrade.
//! - `mupg` → when this release first opened a journal holding `d` checks (ms, be u64)

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use linedesk_actors::domain::AccountId;

use super::{decode_seq, StorageError};

const CHECK: u8 = b'w';
const LEGACY: u8 = b'd';
const UPGRADED_AT: &[u8] = b"mupg";
const DAY_MS: i64 = 86_400_000;
const NO_LEGACY: i64 = i64::MIN;

/// Most checks one expiry pass removes: a pass runs on the journal writer, between batches,
/// and holds appends back while it runs (a few milliseconds).
pub(super) const EXPIRE_PER_PASS: usize = 2_000;

#[derive(Debug)]
pub(super) struct RedeliveryChecks {
    /// `storage.redelivery_window_days`; 0 keeps every check.
    window_days: AtomicU32,
    /// When `d` checks were first found, while some remain; else [`NO_LEGACY`].
    legacy_since_ms: AtomicI64,
}

impl RedeliveryChecks {
    /// Keeps every check until [`RedeliveryChecks::set_window_days`] says otherwise.
    pub fn open(tree: &sled::Tree, now_ms: i64) -> Result<Self, StorageError> {
        let legacy_since_ms = match tree.scan_prefix([LEGACY]).next().transpose()? {
            None => NO_LEGACY,
            Some(_) => match tree.get(UPGRADED_AT)? {
                Some(v) => decode_seq(UPGRADED_AT, &v)? as i64,
                None => {
                    tree.insert(UPGRADED_AT, &(now_ms.max(0) as u64).to_be_bytes())?;
                    now_ms
                }
            },
        };
        Ok(Self {
            window_days: AtomicU32::new(0),
            legacy_since_ms: AtomicI64::new(legacy_since_ms),
        })
    }

    pub fn set_window_days(&self, days: u32) {
        self.window_days.store(days, Ordering::Relaxed);
    }

    /// The key of an event's check.
    pub fn key(account: &AccountId, webhook_event_id: &str, timestamp_ms: i64) -> Vec<u8> {
        let [a, b, c, d] = day_of(timestamp_ms).to_be_bytes();
        event_key(&[CHECK, a, b, c, d], account, webhook_event_id)
    }

    /// Whether the event whose check is `key` was stored before.
    pub fn seen(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        account: &AccountId,
        webhook_event_id: &str,
    ) -> Result<bool, StorageError> {
        if tree.contains_key(key)? {
            return Ok(true);
        }
        if self.legacy_since_ms.load(Ordering::Relaxed) == NO_LEGACY {
            return Ok(false);
        }
        Ok(tree.contains_key(legacy_key(account, webhook_event_id))?)
    }

    /// Removes up to [`EXPIRE_PER_PASS`] checks of days older than the window (and, a window
    /// after the upgrade, the checks of earlier releases). Returns how many it removed: a full
    /// pass means more may be left.
    pub fn expire(&self, tree: &sled::Tree, now_ms: i64) -> Result<usize, StorageError> {
        let window = self.window_days.load(Ordering::Relaxed);
        if window == 0 {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        let oldest_kept = day_of(now_ms).saturating_sub(window);
        let end = [&[CHECK][..], &oldest_kept.to_be_bytes()].concat();
        let mut removed = 0;
        for key in tree.range(vec![CHECK]..end).keys().take(EXPIRE_PER_PASS) {
            batch.remove(key?);
            removed += 1;
        }
        let legacy_since = self.legacy_since_ms.load(Ordering::Relaxed);
        let legacy_expired = legacy_since != NO_LEGACY
            && now_ms >= legacy_since.saturating_add(i64::from(window) * DAY_MS);
        let mut legacy_gone = false;
        if legacy_expired && removed < EXPIRE_PER_PASS {
            let mut legacy = 0;
            for key in tree
                .scan_prefix([LEGACY])
                .keys()
                .take(EXPIRE_PER_PASS - removed)
            {
                batch.remove(key?);
                legacy += 1;
            }
            if legacy < EXPIRE_PER_PASS - removed {
                batch.remove(UPGRADED_AT);
                legacy_gone = true;
            }
            removed += legacy;
        }
        if removed > 0 || legacy_gone {
            tree.apply_batch(batch)?;
        }
        if legacy_gone {
            self.legacy_since_ms.store(NO_LEGACY, Ordering::Relaxed);
        }
        Ok(removed)
    }
}

fn day_of(timestamp_ms: i64) -> u32 {
    timestamp_ms
        .div_euclid(DAY_MS)
        .clamp(0, i64::from(u32::MAX)) as u32
}

fn legacy_key(account: &AccountId, webhook_event_id: &str) -> Vec<u8> {
    event_key(&[LEGACY], account, webhook_event_id)
}

/// `prefix` account `\0` webhookEventId.
fn event_key(prefix: &[u8], account: &AccountId, webhook_event_id: &str) -> Vec<u8> {
    let mut key =
        Vec::with_capacity(prefix.len() + account.as_str().len() + 1 + webhook_event_id.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(account.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(webhook_event_id.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path())
            .unwrap()
            .open_tree("journal")
            .unwrap();
        (dir, tree)
    }

    fn demo() -> AccountId {
        AccountId::parse("demo").unwrap()
    }

    fn file(tree: &sled::Tree, id: &str, timestamp_ms: i64) {
        tree.insert(
            RedeliveryChecks::key(&demo(), id, timestamp_ms),
            &1u64.to_be_bytes(),
        )
        .unwrap();
    }

    fn seen(checks: &RedeliveryChecks, tree: &sled::Tree, id: &str, timestamp_ms: i64) -> bool {
        let key = RedeliveryChecks::key(&demo(), id, timestamp_ms);
        checks.seen(tree, &key, &demo(), id).unwrap()
    }

    #[test]
    fn days_past_the_window_go_and_the_others_stay() {
        let (_dir, tree) = tree();
        let checks = RedeliveryChecks::open(&tree, NOW).unwrap();
        for (id, days_ago) in [("old", 8), ("edge", 7), ("recent", 6), ("today", 0)] {
            file(&tree, id, NOW - days_ago * DAY_MS);
        }
        assert_eq!(
            checks.expire(&tree, NOW).unwrap(),
            0,
            "no window: kept forever"
        );
        checks.set_window_days(7);
        assert_eq!(checks.expire(&tree, NOW).unwrap(), 1);
        assert!(!seen(&checks, &tree, "old", NOW - 8 * DAY_MS));
        for (id, days_ago) in [("edge", 7), ("recent", 6), ("today", 0)] {
            assert!(seen(&checks, &tree, id, NOW - days_ago * DAY_MS), "{id}");
        }
        assert!(
            !seen(&checks, &tree, "today", NOW - DAY_MS),
            "filed under the original time, which a redelivery keeps"
        );
        assert_eq!(checks.expire(&tree, NOW).unwrap(), 0);
    }

    #[test]
    fn a_pass_removes_a_bounded_number_and_the_next_goes_on() {
        let (_dir, tree) = tree();
        let checks = RedeliveryChecks::open(&tree, NOW).unwrap();
        checks.set_window_days(1);
        for n in 0..EXPIRE_PER_PASS + 5 {
            file(&tree, &format!("E{n}"), NOW - 3 * DAY_MS);
        }
        assert_eq!(checks.expire(&tree, NOW).unwrap(), EXPIRE_PER_PASS);
        assert_eq!(checks.expire(&tree, NOW).unwrap(), 5);
        assert_eq!(tree.len(), 0);
    }

    #[test]
    fn checks_of_an_earlier_release_count_until_a_window_after_the_upgrade() {
        let (_dir, tree) = tree();
        tree.insert(legacy_key(&demo(), "E1"), &1u64.to_be_bytes())
            .unwrap();
        let checks = RedeliveryChecks::open(&tree, NOW).unwrap();
        checks.set_window_days(2);
        assert!(seen(&checks, &tree, "E1", NOW - 30 * DAY_MS));
        assert!(!seen(&checks, &tree, "E2", NOW));

        // Reopened later, the upgrade time is the first one.
        let checks = RedeliveryChecks::open(&tree, NOW + DAY_MS).unwrap();
        checks.set_window_days(2);
        assert_eq!(checks.expire(&tree, NOW + DAY_MS).unwrap(), 0);
        assert!(seen(&checks, &tree, "E1", NOW));
        assert_eq!(checks.expire(&tree, NOW + 2 * DAY_MS).unwrap(), 1);
        assert!(!seen(&checks, &tree, "E1", NOW));
        assert_eq!(tree.len(), 0, "the upgrade mark went with the last of them");
    }
}
