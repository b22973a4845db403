//! The open-loop schedule: request `n` is due at `n / rate` seconds after the start, whatever
//! happened to the requests before it. Latency is measured from that intended time, not from
//! the moment the request actually left: when the server (or the load generator itself)
//! stalls, the requests that should have gone out during the stall are sent late and their
//! wait is counted, instead of silently not being sent (coordinated omission).

use std::ops::Range;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

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

    /// Hands out requests `0..count` of a run that started at `start` as they fall due, in
    /// batches ([`OpenLoop::due`]), from a thread of its own that sleeps until each next
    /// intended time. An async sleep would not do: tokio's timer ticks every millisecond and
    /// rounds a deadline up to a tick, which left each send 0.5–1.5 ms late at a few hundred
    /// requests/s, and that lag is part of every latency the run reports. A thread's sleep is
    /// late by tens of microseconds. The thread stops once all are handed out or the receiver
    /// is gone.
    pub fn pace(self, start: Instant, count: u64) -> mpsc::UnboundedReceiver<Range<u64>> {
        let (due_now, receiver) = mpsc::unbounded_channel();
        let pacer = move || {
            let mut sent = 0;
            while sent < count {
                let next = start + self.intended(sent);
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                let due = self.due(sent, start.elapsed(), count);
                if due.is_empty() {
                    // `intended` rounds to whole nanoseconds, so `due` may find the request a
                    // hair short of its time: it is due at once.
                    continue;
                }
                sent = due.end;
                if due_now.send(due).is_err() {
                    return;
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("loadgen-pacer".into())
            .spawn(pacer)
        {
            // Nothing is handed out: the run ends at once and reports no requests sent.
            tracing::error!(error.message = %e, "could not start the load generator's pacer");
        }
        receiver
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

    #[actix_web::test]
    async fn the_pacer_hands_out_every_request_once_in_order_and_none_early() {
        let schedule = OpenLoop::new(2000.0);
        let start = Instant::now();
        let mut due_now = schedule.pace(start, 50);
        let mut next = 0;
        // Bounded: 50 requests at 2,000/s are all due 25 ms after the start.
        let handed_out = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(due) = due_now.recv().await {
                assert_eq!(due.start, next, "a gap or a repeat");
                assert!(due.end > due.start, "an empty batch");
                let last = due.end - 1;
                assert!(
                    start.elapsed() >= schedule.intended(last),
                    "request {last} handed out before its time"
                );
                next = due.end;
            }
        })
        .await;
        assert!(handed_out.is_ok(), "the pacer stalled at request {next}");
        assert_eq!(next, 50);
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
