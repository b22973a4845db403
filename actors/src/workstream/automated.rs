//! Automated messages: per workstream and trigger, a text per language with slots
//! (`{customer_name}`, `{agent_name}`, `{queue_name}`, `{position}`), each switchable.

use std::collections::{BTreeMap, HashMap};

use crate::domain::Trigger;

/// One automated message of one workstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomatedMessage {
    pub enabled: bool,
    /// Language tag (`ja`, `en`, `zh-TW`) → text.
    pub texts: BTreeMap<String, String>,
}

/// Values for the slots; a missing one renders as a neutral word, never as `{slot}`.
#[derive(Debug, Clone, Default)]
pub struct Slots<'a> {
    pub customer_name: Option<&'a str>,
    pub agent_name: Option<&'a str>,
    pub queue_name: Option<&'a str>,
    pub position: Option<usize>,
}

impl AutomatedMessage {
    /// The text for the customer's language, else the workstream's, else any; `None` when
    /// switched off or empty.
    pub fn render(
        &self,
        customer_language: Option<&str>,
        fallback: &str,
        slots: &Slots,
    ) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let template = customer_language
            .and_then(|l| self.text_for(l))
            .or_else(|| self.text_for(fallback))
            .or_else(|| self.texts.values().next())?;
        if template.trim().is_empty() {
            return None;
        }
        let position = slots.position.map(|p| p.to_string());
        Some(
            template
                .replace("{customer_name}", slots.customer_name.unwrap_or("customer"))
                .replace("{agent_name}", slots.agent_name.unwrap_or("our agent"))
                .replace("{queue_name}", slots.queue_name.unwrap_or("support"))
                .replace("{position}", position.as_deref().unwrap_or("1")),
        )
    }

    /// Exact tag first, then the primary language (`ja-JP` → `ja`).
    fn text_for(&self, language: &str) -> Option<&String> {
        let lower = language.to_ascii_lowercase();
        self.texts
            .iter()
            .find(|(tag, _)| tag.to_ascii_lowercase() == lower)
            .or_else(|| {
                let primary = lower.split(['-', '_']).next().unwrap_or("");
                self.texts
                    .iter()
                    .find(|(tag, _)| tag.to_ascii_lowercase() == primary)
            })
            .map(|(_, text)| text)
    }
}

/// Every workstream's automated messages.
#[derive(Debug, Clone, Default)]
pub struct AutomatedMessages {
    by_workstream: HashMap<(String, Trigger), AutomatedMessage>,
}

impl AutomatedMessages {
    pub fn insert(&mut self, workstream: &str, trigger: Trigger, message: AutomatedMessage) {
        self.by_workstream
            .insert((workstream.to_owned(), trigger), message);
    }

    pub fn get(&self, workstream: &str, trigger: Trigger) -> Option<&AutomatedMessage> {
        self.by_workstream.get(&(workstream.to_owned(), trigger))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(texts: &[(&str, &str)]) -> AutomatedMessage {
        AutomatedMessage {
            enabled: true,
            texts: texts
                .iter()
                .map(|(l, t)| (l.to_string(), t.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_customers_language_wins_then_its_primary_tag_then_the_workstreams() {
        let m = message(&[("ja", "こんにちは"), ("en", "Hello"), ("zh-TW", "您好")]);
        let slots = Slots::default();
        assert_eq!(m.render(Some("zh-TW"), "ja", &slots).unwrap(), "您好");
        assert_eq!(m.render(Some("en-US"), "ja", &slots).unwrap(), "Hello");
        assert_eq!(m.render(Some("fr"), "ja", &slots).unwrap(), "こんにちは");
        assert_eq!(m.render(None, "en", &slots).unwrap(), "Hello");
    }

    #[test]
    fn slots_are_filled_and_missing_ones_read_naturally() {
        let m = message(&[(
            "en",
            "Hi {customer_name}, {agent_name} of {queue_name}; you are #{position}",
        )]);
        let full = Slots {
            customer_name: Some("Ken"),
            agent_name: Some("Alice"),
            queue_name: Some("Billing"),
            position: Some(4),
        };
        assert_eq!(
            m.render(None, "en", &full).unwrap(),
            "Hi Ken, Alice of Billing; you are #4"
        );
        let empty = m.render(None, "en", &Slots::default()).unwrap();
        assert!(!empty.contains('{'), "{empty}");
    }

    #[test]
    fn a_switched_off_or_empty_message_is_not_sent() {
        let mut m = message(&[("en", "Hello")]);
        m.enabled = false;
        assert_eq!(m.render(None, "en", &Slots::default()), None);
        assert_eq!(
            message(&[("en", "  ")]).render(None, "en", &Slots::default()),
            None
        );
    }
}
