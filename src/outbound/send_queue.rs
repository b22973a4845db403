//! What waits to go to LINE: messages in order per chat, and each idle chat's first message
//! indexed by account and by when it may go. Finding the next request is O(log n) however many
//! messages wait (a LINE outage can leave many thousands retrying), and a chat is never sent
//! two requests at once.

use std::collections::{BTreeSet, HashMap};

use linedesk_actors::domain::{AccountId, ConversationKey};

/// One message not delivered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub id: String,
    pub key: ConversationKey,
    /// Not sent before this time (ms since the epoch): a retry's backoff.
    pub not_before_ms: i64,
}

#[derive(Default)]
struct Chat {
    /// Outbox sequence numbers, oldest first.
    seqs: BTreeSet<u64>,
    /// A request of this chat is in flight.
    busy: bool,
}

/// What [`SendQueue::next`] found for an account.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// This message may go now.
    Ready(u64),
    /// Nothing may go before this time.
    Later(i64),
    Empty,
}

#[derive(Default)]
pub struct SendQueue {
    messages: HashMap<u64, Waiting>,
    chats: HashMap<ConversationKey, Chat>,
    /// Per account, `(not_before_ms, seq)` of the first message of every idle chat.
    heads: HashMap<AccountId, BTreeSet<(i64, u64)>>,
    in_flight: usize,
}

impl SendQueue {
    pub fn get(&self, seq: u64) -> Option<&Waiting> {
        self.messages.get(&seq)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Accounts with an idle chat waiting.
    pub fn accounts(&self) -> Vec<AccountId> {
        self.heads
            .iter()
            .filter(|(_, heads)| !heads.is_empty())
            .map(|(account, _)| account.clone())
            .collect()
    }

    pub fn insert(&mut self, seq: u64, waiting: Waiting) {
        if self.messages.contains_key(&seq) {
            return;
        }
        let key = waiting.key.clone();
        self.messages.insert(seq, waiting);
        self.unindex(&key);
        self.chats.entry(key.clone()).or_default().seqs.insert(seq);
        self.index(&key);
    }

    /// The account's first message that may go at `now_ms`, or when one may.
    pub fn next(&self, account: &AccountId, now_ms: i64) -> Next {
        match self.heads.get(account).and_then(|h| h.first()) {
            None => Next::Empty,
            Some(&(not_before, _)) if not_before > now_ms => Next::Later(not_before),
            Some(&(_, seq)) => Next::Ready(seq),
        }
    }

    /// Marks the message's chat busy until [`SendQueue::done`].
    pub fn take(&mut self, seq: u64) {
        let Some(key) = self.messages.get(&seq).map(|w| w.key.clone()) else {
            return;
        };
        self.unindex(&key);
        if let Some(chat) = self.chats.get_mut(&key) {
            chat.busy = true;
            self.in_flight += 1;
        }
    }

    /// A request ended: the message leaves the queue (`retry_at` is `None`) or waits for its
    /// retry; either way its chat may send again.
    pub fn done(&mut self, seq: u64, retry_at: Option<i64>) {
        let Some(key) = self.messages.get(&seq).map(|w| w.key.clone()) else {
            return;
        };
        if let Some(chat) = self.chats.get_mut(&key) {
            if std::mem::take(&mut chat.busy) {
                self.in_flight -= 1;
            }
        }
        match retry_at {
            Some(at) => {
                if let Some(waiting) = self.messages.get_mut(&seq) {
                    waiting.not_before_ms = at;
                }
                self.index(&key);
            }
            None => self.remove(seq),
        }
    }

    /// Forgets a message that is not busy (its record is gone or unreadable).
    pub fn remove(&mut self, seq: u64) {
        let Some(key) = self.messages.get(&seq).map(|w| w.key.clone()) else {
            return;
        };
        self.unindex(&key);
        self.messages.remove(&seq);
        if let Some(chat) = self.chats.get_mut(&key) {
            chat.seqs.remove(&seq);
            if chat.seqs.is_empty() && !chat.busy {
                self.chats.remove(&key);
            }
        }
        self.index(&key);
    }

    /// The chat's head as indexed, if it is idle and has messages.
    fn head(&self, key: &ConversationKey) -> Option<(i64, u64)> {
        let chat = self.chats.get(key).filter(|c| !c.busy)?;
        let seq = *chat.seqs.first()?;
        Some((self.messages.get(&seq)?.not_before_ms, seq))
    }

    fn unindex(&mut self, key: &ConversationKey) {
        if let Some(head) = self.head(key) {
            if let Some(heads) = self.heads.get_mut(&key.account) {
                heads.remove(&head);
            }
        }
    }

    fn index(&mut self, key: &ConversationKey) {
        if let Some(head) = self.head(key) {
            self.heads
                .entry(key.account.clone())
                .or_default()
                .insert(head);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linedesk_actors::domain::LineSource;

    fn key(account: &str, user: &str) -> ConversationKey {
        ConversationKey::new(
            AccountId::parse(account).unwrap(),
            LineSource::user(format!("U{user:0>32}")).unwrap(),
        )
    }

    fn waiting(key: &ConversationKey, not_before_ms: i64) -> Waiting {
        Waiting {
            id: format!("m{not_before_ms}"),
            key: key.clone(),
            not_before_ms,
        }
    }

    fn account(name: &str) -> AccountId {
        AccountId::parse(name).unwrap()
    }

    #[test]
    fn a_chat_sends_one_message_at_a_time_in_order() {
        let mut queue = SendQueue::default();
        let a = key("shop", "a");
        queue.insert(2, waiting(&a, 0));
        queue.insert(1, waiting(&a, 0));
        assert_eq!(queue.next(&account("shop"), 10), Next::Ready(1));
        queue.take(1);
        assert_eq!(queue.next(&account("shop"), 10), Next::Empty, "chat busy");
        queue.done(1, None);
        assert_eq!(queue.next(&account("shop"), 10), Next::Ready(2));
        assert_eq!(queue.messages.len(), 1);
    }

    #[test]
    fn a_retry_waits_for_its_backoff_and_holds_back_its_chat_only() {
        let mut queue = SendQueue::default();
        let (a, b) = (key("shop", "a"), key("shop", "b"));
        queue.insert(1, waiting(&a, 0));
        queue.insert(2, waiting(&a, 0));
        queue.insert(3, waiting(&b, 0));
        queue.take(1);
        queue.done(1, Some(500));
        assert_eq!(queue.next(&account("shop"), 10), Next::Ready(3));
        queue.take(3);
        queue.done(3, None);
        assert_eq!(queue.next(&account("shop"), 10), Next::Later(500));
        assert_eq!(queue.next(&account("shop"), 500), Next::Ready(1));
        assert_eq!(queue.in_flight(), 0);
    }

    #[test]
    fn accounts_are_indexed_apart() {
        let mut queue = SendQueue::default();
        queue.insert(1, waiting(&key("shop", "a"), 0));
        queue.insert(2, waiting(&key("clinic", "a"), 0));
        assert_eq!(queue.next(&account("clinic"), 0), Next::Ready(2));
        assert_eq!(queue.next(&account("shop"), 0), Next::Ready(1));
        let mut accounts = queue.accounts();
        accounts.sort();
        assert_eq!(accounts, vec![account("clinic"), account("shop")]);
    }

    #[test]
    fn removing_the_head_promotes_the_next_message() {
        let mut queue = SendQueue::default();
        let a = key("shop", "a");
        queue.insert(1, waiting(&a, 0));
        queue.insert(2, waiting(&a, 0));
        queue.remove(1);
        assert_eq!(queue.next(&account("shop"), 0), Next::Ready(2));
        queue.remove(2);
        assert_eq!(queue.next(&account("shop"), 0), Next::Empty);
        assert!(queue.chats.is_empty());
    }

    #[test]
    fn a_chat_busy_with_a_request_keeps_later_inserts_back() {
        let mut queue = SendQueue::default();
        let a = key("shop", "a");
        queue.insert(1, waiting(&a, 0));
        queue.take(1);
        queue.insert(2, waiting(&a, 0));
        assert_eq!(queue.next(&account("shop"), 0), Next::Empty);
        queue.done(1, None);
        assert_eq!(queue.next(&account("shop"), 0), Next::Ready(2));
    }
}
