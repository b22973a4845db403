//! A token bucket that keeps outbound calls under a LINE rate limit (per channel and endpoint,
//! section 3.3 of the reference: 2,000 req/s for reply and push, far less for others).
//!
//! Pure: the caller passes the current instant, so tests drive it with synthetic instants and the
//! dispatcher decides how to wait (a timer, not a sleep in a loop).

use std::time::{Duration, Instant};

/// Rounding slack: after waiting exactly the returned duration, floating-point refill may land a
/// hair below one token; this much is treated as a whole token.
const EPSILON: f64 = 1e-6;

/// Allows `burst` calls at once, refilled at `rate_per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_second: f64,
    burst: f64,
    tokens: f64,
    /// When `tokens` was last brought up to date; `None` until the first call, so a new bucket
    /// starts full whatever instant the caller starts from.
    updated: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    ///
    /// # Panics
    /// If `rate_per_second` is not a positive finite number or `burst` is 0: such a bucket would
    /// never let a call through, which is a configuration mistake to catch at start-up.
    pub fn new(rate_per_second: f64, burst: u32) -> Self {
        assert!(
            rate_per_second.is_finite() && rate_per_second > 0.0,
            "a token bucket needs a positive finite rate, got {rate_per_second}"
        );
        assert!(burst >= 1, "a token bucket needs a burst of at least 1");
        Self {
            rate_per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            updated: None,
        }
    }

    /// Takes one token at `now`, or says how long to wait until one is available (nothing is
    /// taken then). Instants earlier than the last call count as no time passing.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 - EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            // Rounded up to the nanosecond, so waiting exactly this long is always enough.
            let nanos = (missing / self.rate_per_second * 1e9).ceil();
            Err(Duration::from_nanos(nanos as u64))
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(updated) = self.updated {
            let elapsed = now.saturating_duration_since(updated).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate_per_second).min(self.burst);
        }
        if self.updated.is_none_or(|updated| now > updated) {
            self.updated = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_bucket_allows_a_full_burst_then_asks_to_wait() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3);
        for _ in 0..3 {
            assert_eq!(bucket.try_acquire(start), Ok(()));
        }
        let wait = bucket.try_acquire(start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
    }

    #[test]
    fn waiting_the_returned_duration_is_enough() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3.0, 1);
        assert_eq!(bucket.try_acquire(start), Ok(()));
        let wait = bucket.try_acquire(start).unwrap_err();
        assert_eq!(bucket.try_acquire(start + wait), Ok(()));
        // And a partial wait is answered with the remainder.
        let later = start + wait + wait / 2;
        let rest = bucket.try_acquire(later).unwrap_err();
        let expected = wait / 2;
        let off = rest.max(expected) - rest.min(expected);
        assert!(off < Duration::from_micros(1), "{rest:?} vs {expected:?}");
        assert_eq!(bucket.try_acquire(later + rest), Ok(()));
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100.0, 2);
        assert_eq!(bucket.try_acquire(start), Ok(()));
        let much_later = start + Duration::from_secs(3600);
        assert_eq!(bucket.try_acquire(much_later), Ok(()));
        assert_eq!(bucket.try_acquire(much_later), Ok(()));
        assert!(bucket.try_acquire(much_later).is_err());
    }

    #[test]
    fn the_long_run_rate_is_the_configured_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(50.0, 5);
        let mut now = start;
        let mut granted = 0;
        while now < start + Duration::from_secs(10) {
            match bucket.try_acquire(now) {
                Ok(()) => granted += 1,
                Err(wait) => now += wait,
            }
        }
        // 5 at once, then 50 a second for 10 seconds.
        assert!((500..=506).contains(&granted), "{granted}");
    }

    #[test]
    fn an_instant_from_the_past_counts_as_no_time_passing() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(1.0, 1);
        assert_eq!(bucket.try_acquire(start), Ok(()));
        let earlier = start - Duration::from_secs(5);
        assert_eq!(
            bucket.try_acquire(earlier),
            Err(Duration::from_secs(1)),
            "going back in time must not mint tokens"
        );
        assert_eq!(bucket.try_acquire(start + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    #[should_panic(expected = "positive finite rate")]
    fn a_zero_rate_is_refused() {
        TokenBucket::new(0.0, 1);
    }
}
