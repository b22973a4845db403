//! What is still on its way: customer messages no agent has seen yet, replies waiting for
//! their think time, replies without an `ack`, replies not yet delivered to LINE, and webhooks
//! without an answer. The run is settled when all of these are empty.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::{Duration, Instant};

/// How an agent came to see a customer message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    /// The first sighting: the message took this long to reach an agent. This agent replies.
    First(Duration),
    /// Seen before by an agent whose offer was revoked: this agent replies, nothing to measure.
    Handed,
    /// Seen and claimed already, or not a message of this phase: nothing to do.
    Known,
}

#[derive(Debug, Default)]
pub struct Tracker {
    /// Customer message number → intended send time of its webhook.
    awaiting_agent: HashMap<u64, Instant>,
    /// Seen in an offer that was then revoked: the next agent offered it takes it over.
    handed_back: HashSet<u64>,
    /// Seen in an offer and taken by its agent, who answers once `assigned` arrives.
    awaiting_assignment: u64,
    /// Replies waiting out the think time.
    replies_waiting: u64,
    /// Reply (to customer message n) → when the agent sent it.
    awaiting_ack: HashMap<u64, Instant>,
    awaiting_line: HashMap<u64, Instant>,
    /// Whether agents are connected (so customer messages are awaited) and whether
    /// deliveries at the fake LINE are observed (and so awaited).
    observe_agents: bool,
    observe_line: bool,
    webhooks_in_flight: u64,
}

impl Tracker {
    pub fn new(observe_agents: bool, observe_line: bool) -> Self {
        Self {
            observe_agents,
            observe_line,
            ..Self::default()
        }
    }

    /// A webhook carrying customer messages `events` is about to leave.
    pub fn sending(&mut self, events: Range<u64>, intended: Instant) {
        self.webhooks_in_flight += 1;
        if self.observe_agents {
            self.awaiting_agent.extend(events.map(|n| (n, intended)));
        }
    }

    /// Its answer came (or it failed): refused messages will never reach an agent.
    pub fn answered(&mut self, events: Range<u64>, accepted: bool) {
        self.webhooks_in_flight = self.webhooks_in_flight.saturating_sub(1);
        if !accepted {
            for n in events {
                self.awaiting_agent.remove(&n);
            }
        }
    }

    pub fn webhooks_in_flight(&self) -> u64 {
        self.webhooks_in_flight
    }

    /// An agent saw customer message `n` at `at`.
    pub fn seen(&mut self, n: u64, at: Instant) -> Sighting {
        if let Some(intended) = self.awaiting_agent.remove(&n) {
            Sighting::First(at.saturating_duration_since(intended))
        } else if self.handed_back.remove(&n) {
            Sighting::Handed
        } else {
            Sighting::Known
        }
    }

    /// An agent took `count` messages of an offer and answers them once assigned.
    pub fn offered(&mut self, count: u64) {
        self.awaiting_assignment += count;
    }

    /// The offer's conversation was assigned: its `count` messages get replies now.
    pub fn assigned(&mut self, count: u64) {
        self.awaiting_assignment = self.awaiting_assignment.saturating_sub(count);
        self.replies_waiting += count;
    }

    /// An offer was revoked before its messages were answered.
    pub fn hand_back(&mut self, messages: Vec<u64>) {
        self.awaiting_assignment = self
            .awaiting_assignment
            .saturating_sub(messages.len() as u64);
        self.handed_back.extend(messages);
    }

    /// A `message` frame's customer message gets a reply after the think time.
    pub fn reply_scheduled(&mut self) {
        self.replies_waiting += 1;
    }

    /// The reply to customer message `n` was written to the websocket at `at`.
    pub fn reply_sent(&mut self, n: u64, at: Instant) {
        self.replies_waiting = self.replies_waiting.saturating_sub(1);
        self.awaiting_ack.insert(n, at);
        if self.observe_line {
            self.awaiting_line.insert(n, at);
        }
    }

    /// A reply that never went out (its connection closed).
    pub fn reply_dropped(&mut self) {
        self.replies_waiting = self.replies_waiting.saturating_sub(1);
    }

    /// The `ack` of the reply to `n`: how long after its send.
    pub fn acked(&mut self, n: u64, at: Instant) -> Option<Duration> {
        let sent = self.awaiting_ack.remove(&n)?;
        Some(at.saturating_duration_since(sent))
    }

    /// The reply to `n` reached the fake LINE at `at`.
    pub fn delivered(&mut self, n: u64, at: Instant) -> Option<Duration> {
        let sent = self.awaiting_line.remove(&n)?;
        Some(at.saturating_duration_since(sent))
    }

    /// Nothing is on its way any more.
    pub fn settled(&self) -> bool {
        self.webhooks_in_flight == 0
            && self.awaiting_agent.is_empty()
            && self.handed_back.is_empty()
            && self.awaiting_assignment == 0
            && self.replies_waiting == 0
            && self.awaiting_ack.is_empty()
            && self.awaiting_line.is_empty()
    }

    pub fn unseen(&self) -> u64 {
        (self.awaiting_agent.len() + self.handed_back.len()) as u64
    }

    /// Replies owed but not acknowledged (waiting for assignment, think time or the ack).
    pub fn unacked(&self) -> u64 {
        self.awaiting_ack.len() as u64 + self.replies_waiting + self.awaiting_assignment
    }

    pub fn undelivered(&self) -> Option<u64> {
        self.observe_line.then_some(self.awaiting_line.len() as u64)
    }

    /// Forgets what a finished phase left behind, so the next phase counts only its own.
    pub fn start_phase(&mut self) {
        self.awaiting_agent.clear();
        self.handed_back.clear();
        self.awaiting_assignment = 0;
        self.awaiting_ack.clear();
        self.awaiting_line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_measured_once_and_answered_by_whoever_holds_it() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(true, false);
        tracker.sending(0..2, t0);
        assert!(!tracker.settled());
        tracker.answered(0..2, true);
        let later = t0 + Duration::from_millis(5);
        assert_eq!(
            tracker.seen(0, later),
            Sighting::First(Duration::from_millis(5))
        );
        assert_eq!(tracker.seen(0, later), Sighting::Known);
        // An offer of message 1 is revoked; the next agent takes it over, unmeasured.
        assert!(matches!(tracker.seen(1, later), Sighting::First(_)));
        tracker.offered(1);
        tracker.hand_back(vec![1]);
        assert_eq!(tracker.unseen(), 1);
        assert_eq!(tracker.seen(1, later), Sighting::Handed);
        assert_eq!(tracker.seen(7, later), Sighting::Known);

        // Messages taken in offers are owed replies until assigned, then until acked.
        tracker.offered(2);
        assert!(!tracker.settled());
        assert_eq!(tracker.unacked(), 2);
        tracker.assigned(2);
        assert_eq!(tracker.unacked(), 2);
        tracker.reply_sent(0, later);
        tracker.reply_sent(1, later);
        assert_eq!(
            tracker.acked(0, later + Duration::from_millis(2)),
            Some(Duration::from_millis(2))
        );
        assert_eq!(tracker.acked(0, later), None);
        assert!(!tracker.settled());
        tracker.acked(1, later);
        assert!(tracker.settled());
        assert_eq!(tracker.undelivered(), None);
    }

    #[test]
    fn without_agents_only_the_webhooks_are_awaited() {
        let mut tracker = Tracker::new(false, false);
        tracker.sending(0..5, Instant::now());
        assert!(!tracker.settled());
        tracker.answered(0..5, true);
        assert!(tracker.settled());
        assert_eq!(tracker.unseen(), 0);
    }

    #[test]
    fn refused_webhooks_are_not_waited_for_and_deliveries_are_when_observed() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(true, true);
        tracker.sending(0..3, t0);
        tracker.answered(0..3, false);
        assert!(tracker.settled());
        tracker.reply_scheduled();
        tracker.reply_sent(9, t0);
        tracker.acked(9, t0);
        assert_eq!(tracker.undelivered(), Some(1));
        assert!(!tracker.settled());
        assert_eq!(
            tracker.delivered(9, t0 + Duration::from_millis(3)),
            Some(Duration::from_millis(3))
        );
        assert!(tracker.settled());
    }
}
