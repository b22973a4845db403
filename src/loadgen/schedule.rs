//! The open-loop schedule: request `n` is due at `n / rate` seconds after the start, whatever
//! happened to the requests before it. Latency is measured from that intended time, not from
//! the moment the request actually left: when the server (or the load generator itself)
//! stalls, the requests that should have gone out during the stall are sent late and their
//! wait is counted, instead of silently not being sent (coordinated omission).

use std::ops::Range;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenLoop {
    rate: f64,
}

impl OpenLoop {
    /// `rate` requests per second; must be above 0.
    pub fn new(rate: f64) -> Self {
        debug_assert!(rate > 0.0);
        Self { rate }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When request `n` should leave, counted from the start.
    pub fn intended(&self, n: u64) -> Duration {
        Duration::from_secs_f64(n as f64 / self.rate)
    }

    /// How many requests a run of `duration` sends: those due strictly before its end.
    pub fn count_within(&self, duration: Duration) -> u64 {
        (duration.as_secs_f64() * self.rate - 1e-9).ceil().max(0.0) as u64
    }

    /// The requests to send now, `elapsed` after the start, when `sent` have gone already:
    /// every request due by now, at most up to `limit`. After a stall this is a burst whose
    /// intended times lie in the past.
    pub fn due(&self, sent: u64, elapsed: Duration, limit: u64) -> Range<u64> {
        let due_by_now = (elapsed.as_secs_f64() * self.rate + 1e-9).floor() as u64 + 1;
        sent..due_by_now.min(limit).max(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::report::LatencyHistogram;

    #[test]
    fn requests_are_due_evenly_at_the_rate() {
        let schedule = OpenLoop::new(2000.0);
        assert_eq!(schedule.intended(0), Duration::ZERO);
        assert_eq!(schedule.intended(1), Duration::from_micros(500));
        assert_eq!(schedule.intended(2000), Duration::from_secs(1));
        assert_eq!(schedule.count_within(Duration::from_secs(10)), 20_000);
        assert_eq!(
            OpenLoop::new(50.0).count_within(Duration::from_millis(200)),
            10
        );
        assert_eq!(OpenLoop::new(3.0).count_within(Duration::from_secs(1)), 3);
        // On time: one request at a time.
        assert_eq!(schedule.due(0, Duration::ZERO, 100), 0..1);
        assert_eq!(schedule.due(1, Duration::from_micros(500), 100), 1..2);
        // Nothing is sent twice, and the limit holds.
        assert_eq!(schedule.due(5, Duration::from_micros(500), 100), 5..5);
        assert_eq!(schedule.due(0, Duration::from_secs(1), 100), 0..100);
    }

    #[test]
    fn a_stall_is_charged_to_the_requests_that_should_have_left_during_it() {
        // 1000 requests/s; the sender is frozen for 150 ms after request 0 (a GC pause, a full
        // socket buffer, a stalled server holding every connection).
        let schedule = OpenLoop::new(1000.0);
        assert_eq!(schedule.due(0, Duration::ZERO, u64::MAX), 0..1);
        let stall_end = Duration::from_millis(150);
        let burst = schedule.due(1, stall_end, u64::MAX);
        assert_eq!(burst, 1..151);

        // Each request of the burst is answered 1 ms after it finally leaves.
        let mut from_intended = LatencyHistogram::default();
        let mut from_actual_send = LatencyHistogram::default();
        for n in burst {
            let answered = stall_end + Duration::from_millis(1);
            from_intended.record(answered - schedule.intended(n));
            from_actual_send.record(answered - stall_end);
        }
        let honest = from_intended.summary();
        let omitted = from_actual_send.summary();
        // Measured from the intended times, the stall shows: half the requests waited 75 ms
        // or more, the first one 150 ms.
        assert!(honest.p50 >= 74.0 && honest.p50 <= 77.0, "{honest:?}");
        assert!(honest.max >= 149.0, "{honest:?}");
        // Measured from the actual send, the same run looks perfect.
        assert!(omitted.max < 1.1, "{omitted:?}");
    }
}
