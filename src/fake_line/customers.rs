//! Simulated customers: a bounded stream of customer messages sent to linedesk as webhooks, for
//! `linedesk demo` and `linedesk fake-line --customers N`.
//!
//! `customers` customers, each with a stable user id, each write one message every `interval`
//! (their turns spread evenly over the interval), picked from a short list of realistic
//! customer-service lines in Japanese and English. The run ends after `max_messages` messages
//! in total or after `duration`, whichever comes first.

use std::time::Duration;

use super::{ids, FakeLine};

/// What customers write.
pub const CUSTOMER_LINES: &[&str] = &[
    "注文した商品がまだ届きません。注文番号は 20241125-0042 です。",
    "Hi, I'd like to change the delivery address for my order.",
    "返品の手続きを教えてください。",
    "I was charged twice for the same order. Can I get a refund?",
    "ポイントの有効期限はいつまでですか？",
    "The app keeps logging me out. What should I do?",
    "請求書を再発行してもらえますか？",
    "Do you have this jacket in a size M?",
    "営業時間を教えてください。",
    "Can I speak to someone about my subscription?",
    "配送日時を変更したいです。",
    "Thank you, that solved it!",
];

/// How the simulated customers behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedCustomers {
    /// The account they write to; the first configured channel when `None`.
    pub account: Option<String>,
    pub customers: usize,
    /// Each customer writes once per interval.
    pub interval: Duration,
    /// Messages in total, over all customers.
    pub max_messages: usize,
    /// The run ends after this long even if messages remain.
    pub duration: Duration,
}

/// How a run went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomersReport {
    /// Webhooks sent (one message each).
    pub sent: usize,
    /// Answered 2xx.
    pub accepted: usize,
    /// Answered, but not 2xx.
    pub refused: usize,
    /// Not answered (no connection, timeout).
    pub failed: usize,
}

impl SimulatedCustomers {
    /// The customers' user ids: the same for the same account and number, run after run.
    pub fn user_ids(&self, account: &str) -> Vec<String> {
        (0..self.customers)
            .map(|i| ids::stable_user_id(&format!("{account}/customer-{i}")))
            .collect()
    }

    /// The text of message `n` (counted over all customers).
    fn line(&self, n: usize) -> &'static str {
        let customer = n % self.customers;
        let round = n / self.customers;
        CUSTOMER_LINES[(customer * 5 + round) % CUSTOMER_LINES.len()]
    }

    /// When each message is due, from the start of the run: customer `n % customers` writes
    /// message `n`, and the turns are spread evenly over each interval.
    pub fn schedule(&self) -> impl Iterator<Item = Duration> + '_ {
        let customers = u32::try_from(self.customers.max(1)).unwrap_or(u32::MAX);
        let gap = self.interval / customers;
        (0..self.max_messages)
            .map(move |n| gap * u32::try_from(n).unwrap_or(u32::MAX))
            .take_while(move |due| *due < self.duration)
    }

    /// Sends the messages through `fake`, waiting for each webhook's answer before the next.
    pub async fn run(&self, fake: &FakeLine) -> CustomersReport {
        let mut report = CustomersReport::default();
        let account = self
            .account
            .clone()
            .or_else(|| fake.shared.default_account().map(str::to_owned));
        let Some(account) = account.filter(|_| self.customers > 0) else {
            return report;
        };
        let users = self.user_ids(&account);
        let client = super::webhooks::client();
        let start = tokio::time::Instant::now();
        for (n, due) in self.schedule().enumerate() {
            tokio::time::sleep_until(start + due).await;
            let sent = fake
                .shared
                .send_text_as(&client, &account, &users[n % self.customers], self.line(n))
                .await;
            report.sent += 1;
            match sent {
                Ok(sent) if sent.status.is_success() => report.accepted += 1,
                Ok(_) => report.refused += 1,
                Err(e) => {
                    report.failed += 1;
                    tracing::debug!(error.message = %e, "a simulated customer's webhook failed");
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customers(n: usize) -> SimulatedCustomers {
        SimulatedCustomers {
            account: None,
            customers: n,
            interval: Duration::from_secs(1),
            max_messages: 10,
            duration: Duration::from_secs(10),
        }
    }

    #[test]
    fn customers_have_stable_distinct_user_ids() {
        let ids = customers(3).user_ids("demo");
        assert_eq!(ids, customers(3).user_ids("demo"));
        assert_eq!(ids.len(), 3);
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids, customers(3).user_ids("shop-2"));
    }

    #[test]
    fn the_schedule_ends_at_max_messages_or_duration() {
        let mut c = customers(2);
        let ms = |d: Duration| d.as_millis();
        assert_eq!(
            c.schedule().map(ms).collect::<Vec<_>>(),
            [0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500]
        );
        c.duration = Duration::from_millis(2200);
        assert_eq!(
            c.schedule().map(ms).collect::<Vec<_>>(),
            [0, 500, 1000, 1500, 2000]
        );
        c.duration = Duration::ZERO;
        assert_eq!(c.schedule().count(), 0);
    }

    #[test]
    fn customers_take_turns_and_vary_their_lines() {
        let c = customers(2);
        assert_ne!(c.line(0), c.line(1), "two customers start differently");
        assert_ne!(c.line(0), c.line(2), "a customer's second message differs");
    }
}
