//! How long to wait before retrying a LINE call that failed with a retryable error
//! ([`super::client::LineError::is_retryable`]): exponential growth, capped, with full jitter so
//! many conversations failing together don't retry in lockstep.
//!
//! Pure: the jitter is a parameter, so tests are deterministic; [`jitter`] supplies it in
//! production. Remember that LINE's `X-Line-Retry-Key` lasts 24 hours: retries of a push must end
//! within that window.

use std::time::Duration;

/// Exponential backoff with full jitter: attempt `n` waits a uniformly random time in
/// `[0, min(max, base * factor^n)]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The upper bound of the first retry's delay (attempt 0).
    pub base: Duration,
    /// No delay exceeds this.
    pub max: Duration,
    /// Growth per attempt; 2.0 doubles the bound each time. Values below 1 are treated as 1.
    pub factor: f64,
}

impl Default for Backoff {
    /// Half a second, doubling, at most a minute.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0 for the first retry), given `rand01` drawn
    /// uniformly from `[0, 1]` (clamped into that range; NaN counts as 1).
    pub fn delay(&self, attempt: u32, rand01: f64) -> Duration {
        let rand01 = if rand01.is_nan() {
            1.0
        } else {
            rand01.clamp(0.0, 1.0)
        };
        self.ceiling(attempt).mul_f64(rand01)
    }

    /// The delay before retry `attempt` with fresh jitter from [`jitter`].
    pub fn delay_with_jitter(&self, attempt: u32) -> Duration {
        self.delay(attempt, jitter())
    }

    /// `min(max, base * factor^attempt)`, without overflowing for large attempts.
    fn ceiling(&self, attempt: u32) -> Duration {
        let factor = if self.factor.is_nan() {
            1.0
        } else {
            self.factor.max(1.0)
        };
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        let seconds = self.base.as_secs_f64() * factor.powi(exponent);
        if seconds.is_finite() && seconds < self.max.as_secs_f64() {
            Duration::from_secs_f64(seconds)
        } else {
            self.max
        }
    }
}

/// A uniformly random number in `[0, 1)`, for [`Backoff::delay`]. Not cryptographic, and needn't be.
pub fn jitter() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
            factor: 2.0,
        }
    }

    #[test]
    fn the_bound_grows_exponentially_from_the_base() {
        let b = backoff();
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
    }

    #[test]
    fn jitter_scales_the_delay_between_zero_and_the_bound() {
        let b = backoff();
        assert_eq!(b.delay(2, 0.0), Duration::ZERO);
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(2, 0.25), Duration::from_millis(100));
    }

    #[test]
    fn the_delay_never_exceeds_the_cap_even_for_huge_attempts() {
        let b = backoff();
        assert_eq!(b.delay(7, 1.0), Duration::from_secs(10));
        assert_eq!(b.delay(1_000, 1.0), Duration::from_secs(10));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(10));
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_secs(5));
    }

    #[test]
    fn out_of_range_jitter_and_factors_are_tamed() {
        let b = backoff();
        assert_eq!(b.delay(0, 7.0), Duration::from_millis(100));
        assert_eq!(b.delay(0, -1.0), Duration::ZERO);
        assert_eq!(b.delay(0, f64::NAN), Duration::from_millis(100));
        let shrinking = Backoff {
            factor: 0.5,
            ..backoff()
        };
        assert_eq!(shrinking.delay(5, 1.0), Duration::from_millis(100));
    }

    #[test]
    fn the_jitter_source_stays_in_the_unit_interval() {
        for _ in 0..1_000 {
            let r = jitter();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
        let b = backoff();
        assert!(b.delay_with_jitter(3) <= Duration::from_millis(800));
    }
}
