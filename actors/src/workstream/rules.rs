//! Classification rules: ordered, first match wins.

use std::collections::BTreeMap;

use regex_lite::Regex;

use super::Workstream;
use crate::domain::AccountId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule `{rule}`: text_regex does not compile: {reason}")]
    BadRegex { rule: String, reason: String },
}

/// When a rule applies. Every condition given must hold; an empty rule matches everything.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub account: Option<AccountId>,
    /// The first message contains any of these (case-insensitive).
    pub text_contains: Vec<String>,
    pub text_regex: Option<Regex>,
    /// The customer's LINE language (BCP 47 prefix, `ja` matches `ja-JP`).
    pub language: Option<String>,
    /// Contact attributes that must be equal.
    pub contact: BTreeMap<String, String>,
}

/// Where a matching conversation waits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Classification {
    pub queue: String,
    /// Skill name → minimum proficiency (1-10).
    pub skills: BTreeMap<String, u8>,
    /// Lower is more urgent.
    pub priority: i32,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub workstream: String,
    pub when: Conditions,
    pub then: Classification,
}

impl Rule {
    /// Compiles a regex condition, naming the rule when it fails.
    pub fn compile_regex(rule: &str, pattern: &str) -> Result<Regex, RuleError> {
        Regex::new(pattern).map_err(|e| RuleError::BadRegex {
            rule: rule.into(),
            reason: e.to_string(),
        })
    }
}

/// What the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct ClassifyInput<'a> {
    pub account: &'a AccountId,
    /// Text of the conversation's first message, if it was text.
    pub first_text: Option<&'a str>,
    pub language: Option<&'a str>,
    pub contact: &'a BTreeMap<String, String>,
}

/// The outcome, with why, for the transcript and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub classification: Classification,
    /// The rule that matched; `None` for the default or the fallback queue.
    pub rule: Option<String>,
    /// Set when a rule could not be evaluated (input missing) and the fallback queue was used.
    pub unevaluable: Option<String>,
}

enum Verdict {
    Match,
    NoMatch,
    /// The rule needs input this conversation does not have.
    Unknown(&'static str),
}

fn evaluate(when: &Conditions, input: &ClassifyInput<'_>) -> Verdict {
    if when.account.as_ref().is_some_and(|a| a != input.account) {
        return Verdict::NoMatch;
    }
    if !when.text_contains.is_empty() || when.text_regex.is_some() {
        let Some(text) = input.first_text else {
            return Verdict::Unknown("the first message is not text");
        };
        let lower = text.to_lowercase();
        if !when.text_contains.is_empty()
            && !when
                .text_contains
                .iter()
                .any(|w| lower.contains(&w.to_lowercase()))
        {
            return Verdict::NoMatch;
        }
        if when.text_regex.as_ref().is_some_and(|r| !r.is_match(text)) {
            return Verdict::NoMatch;
        }
    }
    if let Some(wanted) = &when.language {
        let Some(language) = input.language else {
            return Verdict::Unknown("the customer's language is not known");
        };
        let matches = language == wanted
            || language
                .strip_prefix(wanted.as_str())
                .is_some_and(|rest| rest.starts_with('-'));
        if !matches {
            return Verdict::NoMatch;
        }
    }
    for (name, value) in &when.contact {
        match input.contact.get(name) {
            None => return Verdict::Unknown("a contact attribute the rule needs is not set"),
            Some(v) if v != value => return Verdict::NoMatch,
            Some(_) => {}
        }
    }
    Verdict::Match
}

/// Runs the workstream's rules in order; the first match decides. No match → the default
/// queue; a rule that can't be evaluated → the fallback queue.
pub fn classify(workstream: &Workstream, rules: &[Rule], input: &ClassifyInput<'_>) -> Classified {
    for rule in rules.iter().filter(|r| r.workstream == workstream.id) {
        match evaluate(&rule.when, input) {
            Verdict::Match => {
                return Classified {
                    classification: rule.then.clone(),
                    rule: Some(rule.name.clone()),
                    unevaluable: None,
                }
            }
            Verdict::NoMatch => continue,
            Verdict::Unknown(why) => {
                return Classified {
                    classification: Classification {
                        queue: workstream.fallback_queue.clone(),
                        ..Classification::default()
                    },
                    rule: None,
                    unevaluable: Some(format!("rule `{}`: {why}", rule.name)),
                }
            }
        }
    }
    Classified {
        classification: Classification {
            queue: workstream.default_queue.clone(),
            ..Classification::default()
        },
        rule: None,
        unevaluable: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workstream() -> Workstream {
        Workstream {
            id: "support".into(),
            account: AccountId::parse("demo").unwrap(),
            language: "ja".into(),
            default_queue: "general".into(),
            fallback_queue: "triage".into(),
            keep_same_agent: true,
            capacity_units: 1,
            show_sender: true,
            customer_attachments: true,
            agent_attachments: true,
            hours: None,
        }
    }

    fn rule(name: &str, when: Conditions, queue: &str) -> Rule {
        Rule {
            name: name.into(),
            workstream: "support".into(),
            when,
            then: Classification {
                queue: queue.into(),
                skills: BTreeMap::from([("billing".into(), 5)]),
                priority: -1,
            },
        }
    }

    fn input<'a>(
        account: &'a AccountId,
        text: Option<&'a str>,
        language: Option<&'a str>,
        contact: &'a BTreeMap<String, String>,
    ) -> ClassifyInput<'a> {
        ClassifyInput {
            account,
            first_text: text,
            language,
            contact,
        }
    }

    #[test]
    fn the_first_matching_rule_wins_and_no_match_goes_to_the_default_queue() {
        let rules = [
            rule(
                "refunds",
                Conditions {
                    text_contains: vec!["REFUND".into(), "返金".into()],
                    ..Conditions::default()
                },
                "billing",
            ),
            rule(
                "orders",
                Conditions {
                    text_regex: Some(Rule::compile_regex("orders", r"#\d{4,}").unwrap()),
                    ..Conditions::default()
                },
                "orders",
            ),
        ];
        let account = AccountId::parse("demo").unwrap();
        let none = BTreeMap::new();
        let refund = classify(
            &workstream(),
            &rules,
            &input(&account, Some("返金してください #12345"), None, &none),
        );
        assert_eq!(refund.classification.queue, "billing");
        assert_eq!(refund.rule.as_deref(), Some("refunds"));
        assert_eq!(refund.classification.skills["billing"], 5);
        let order = classify(
            &workstream(),
            &rules,
            &input(&account, Some("where is #12345"), None, &none),
        );
        assert_eq!(order.classification.queue, "orders");
        let other = classify(
            &workstream(),
            &rules,
            &input(&account, Some("hello"), None, &none),
        );
        assert_eq!(other.classification.queue, "general");
        assert_eq!(other.rule, None);
    }

    #[test]
    fn a_rule_that_cannot_be_evaluated_sends_to_the_fallback_queue() {
        let rules = [rule(
            "japanese speakers",
            Conditions {
                language: Some("ja".into()),
                ..Conditions::default()
            },
            "japanese",
        )];
        let account = AccountId::parse("demo").unwrap();
        let none = BTreeMap::new();
        let unknown = classify(
            &workstream(),
            &rules,
            &input(&account, Some("hi"), None, &none),
        );
        assert_eq!(unknown.classification.queue, "triage");
        assert!(unknown.unevaluable.unwrap().contains("language"));
        let ja = classify(
            &workstream(),
            &rules,
            &input(&account, Some("hi"), Some("ja-JP"), &none),
        );
        assert_eq!(ja.classification.queue, "japanese");
        let en = classify(
            &workstream(),
            &rules,
            &input(&account, Some("hi"), Some("en"), &none),
        );
        assert_eq!(en.classification.queue, "general");
        let jav = classify(
            &workstream(),
            &rules,
            &input(&account, Some("hi"), Some("jav"), &none),
        );
        assert_eq!(
            jav.classification.queue, "general",
            "a prefix is a language, not letters"
        );
    }

    #[test]
    fn account_and_contact_conditions_must_all_hold() {
        let rules = [rule(
            "vip",
            Conditions {
                account: Some(AccountId::parse("demo").unwrap()),
                contact: BTreeMap::from([("tier".into(), "gold".into())]),
                ..Conditions::default()
            },
            "vip",
        )];
        let demo = AccountId::parse("demo").unwrap();
        let other = AccountId::parse("other").unwrap();
        let gold = BTreeMap::from([("tier".to_string(), "gold".to_string())]);
        let silver = BTreeMap::from([("tier".to_string(), "silver".to_string())]);
        assert_eq!(
            classify(&workstream(), &rules, &input(&demo, None, None, &gold))
                .classification
                .queue,
            "vip"
        );
        assert_eq!(
            classify(&workstream(), &rules, &input(&demo, None, None, &silver))
                .classification
                .queue,
            "general"
        );
        assert_eq!(
            classify(&workstream(), &rules, &input(&other, None, None, &gold))
                .classification
                .queue,
            "general"
        );
    }

    #[test]
    fn a_bad_regex_is_refused_with_the_rule_named() {
        let e = Rule::compile_regex("broken", "(unclosed").unwrap_err();
        assert!(e.to_string().contains("broken"));
    }
}
