//! Routing that depends on more than the first message: the customer's LINE language, and queue
//! overflow (too many waiting, or waiting too long).

use linedesk::settings::{OverflowSettings, QueueSettings, RuleSettings, Settings};
use serde_json::Value;

use crate::helpers::{eventually, routing_once_classified};
use crate::outbound::{customer, desk_with, desk_with_messages, texts, Desk};

fn conversation_of(user: &str) -> String {
    format!("demo.user.{user}.1")
}

async fn routing_of(desk: &Desk, user: &str) -> Value {
    routing_once_classified(&desk.app.address, &conversation_of(user)).await
}

fn triage_queue(settings: &mut Settings) {
    let mut triage: QueueSettings = settings.queues[0].clone();
    triage.id = "triage".into();
    triage.name = Some("Triage".into());
    triage.priority = 3;
    settings.queues.push(triage);
    settings.workstreams[0].fallback_queue = Some("triage".into());
}

#[actix_web::test]
async fn a_rule_on_the_customers_line_language_routes_by_their_profile() {
    let desk = desk_with(|s| {
        triage_queue(s);
        s.rules.insert(
            0,
            RuleSettings {
                name: "english speakers".into(),
                workstream: "support".into(),
                account: None,
                text_contains: Vec::new(),
                text_regex: None,
                language: Some("en".into()),
                contact: Default::default(),
                queue: "billing".into(),
                skills: Default::default(),
                priority: 0,
            },
        );
    })
    .await;
    let (english, japanese, unknown) = (customer(101), customer(102), customer(103));
    for (user, language) in [(&english, "en-US"), (&japanese, "ja")] {
        desk.line.register_profile(linedesk::fake_line::Profile {
            display_name: "Someone".into(),
            user_id: user.clone(),
            picture_url: None,
            status_message: None,
            language: Some(language.into()),
        });
    }
    // LINE has no profile for this one: the rule can't be evaluated.
    desk.line.block_user(&unknown);
    for user in [&english, &japanese, &unknown] {
        desk.write(user, "hello").await;
    }
    let english = routing_of(&desk, &english).await;
    assert_eq!(english["queue"], "billing");
    assert_eq!(english["rule"], "english speakers");
    let japanese = routing_of(&desk, &japanese).await;
    assert_eq!(
        japanese["queue"], "general",
        "no rule matched: the default queue"
    );
    assert_eq!(japanese["rule"], Value::Null);
    let unknown = routing_of(&desk, &unknown).await;
    assert_eq!(
        unknown["queue"], "triage",
        "unevaluable: the fallback queue"
    );
}

#[actix_web::test]
async fn a_full_queue_overflows_to_its_overflow_queue_and_the_customer_is_told() {
    let desk = desk_with_messages(|s| {
        s.queues[0].overflow = Some(OverflowSettings {
            max_waiting: Some(1),
            max_wait_ms: None,
            to_queue: Some("billing".into()),
        });
    })
    .await;
    let (first, second) = (customer(111), customer(112));
    desk.write(&first, "hello").await;
    assert_eq!(routing_of(&desk, &first).await["queue"], "general");
    desk.write(&second, "hello too").await;
    let path = format!("/api/conversations/{}", conversation_of(&second));
    eventually("the second conversation moves to billing", || async {
        desk.app.admin_get(&path).await.body["routing"]["queue"] == "billing"
    })
    .await;
    let told: Vec<String> = desk
        .deliveries_to(&second, 2)
        .await
        .iter()
        .flat_map(texts)
        .collect();
    assert!(
        told.iter()
            .any(|t| t.starts_with("ただいま大変混み合っております")),
        "{told:?}"
    );
    // Still waiting, in its new queue: an agent of that queue gets it.
    let mut alice = crate::agents::AgentClient::connect(&desk.app, "dev-alice-token").await;
    alice.expect("hello").await;
    let offer = alice
        .expect_matching(|f| {
            f["type"] == "offer" && f["conversation_id"] == conversation_of(&second)
        })
        .await;
    assert_eq!(offer["queue"], "billing");
}

#[actix_web::test]
async fn a_long_wait_overflows_after_max_wait_ms_and_without_a_target_the_customer_is_told() {
    let desk = desk_with_messages(|s| {
        s.queues[0].overflow = Some(OverflowSettings {
            max_waiting: None,
            max_wait_ms: Some(300),
            to_queue: None,
        });
    })
    .await;
    let user = customer(121);
    desk.write(&user, "is anyone there?").await;
    let told: Vec<String> = desk
        .deliveries_to(&user, 2)
        .await
        .iter()
        .flat_map(texts)
        .collect();
    assert!(
        told.last()
            .unwrap()
            .starts_with("ただいま大変混み合っております"),
        "{told:?}"
    );
    let detail = desk
        .app
        .admin_get(&format!("/api/conversations/{}", conversation_of(&user)))
        .await
        .body;
    assert_eq!(detail["status"], "queued");
    assert_eq!(detail["routing"]["queue"], "general");
    let noted =
        detail["transcript"].as_array().unwrap().iter().any(|e| {
            e["internal"] == true && e["preview"].as_str().unwrap().contains("overflowed")
        });
    assert!(noted, "{detail}");
}

#[test]
fn an_overflow_to_an_unknown_queue_or_without_limits_is_refused_with_the_key_named() {
    let queue = "[[queues]]\nid = \"general\"\npriority = 1\nassignment = \"round_robin\"\nskill_match = \"exact\"\noffer_timeout_ms = 1000\nauto_accept = false\n";
    for (overflow, expected) in [
        (
            "overflow = { to_queue = \"billing\" }",
            "needs max_waiting or max_wait_ms",
        ),
        (
            "overflow = { max_waiting = 5, to_queue = \"nowhere\" }",
            "`nowhere` is not another configured queue",
        ),
        (
            "overflow = { max_waiting = 5, to_queue = \"general\" }",
            "`general` is not another configured queue",
        ),
    ] {
        let err = crate::helpers::refused_overlay(&format!("{queue}{overflow}\n"));
        assert!(err.contains("queues[0].overflow"), "{err}");
        assert!(err.contains(expected), "{err}");
    }
}
