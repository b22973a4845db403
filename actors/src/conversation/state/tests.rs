use std::time::Duration;

use super::*;
use crate::domain::LineSource;

const T0: i64 = 1_700_000_000_000;

fn settings() -> ConversationSettings {
    ConversationSettings {
        queued_timeout: Duration::from_millis(1_000),
        active_timeout: Duration::from_millis(2_000),
        waiting_timeout: Duration::from_millis(3_000),
        wrap_up_hold: Duration::from_millis(100),
        wrap_up_timeout: Duration::from_millis(500),
        keep_same_agent: true,
        bot_first: false,
    }
}

fn key() -> ConversationKey {
    ConversationKey::new(
        crate::domain::AccountId::parse("demo").unwrap(),
        LineSource::user("Ucustomer").unwrap(),
    )
}

fn alice() -> AgentId {
    AgentId::parse("alice").unwrap()
}

fn inbound(seq: u64, at: i64, kind: InboundKind) -> Inbound {
    Inbound {
        seq,
        webhook_event_id: format!("E{seq}"),
        at_ms: at,
        received_at_ms: at,
        sender: Some("Ucustomer".into()),
        reply_token: None,
        redelivery: false,
        kind,
    }
}

fn text(seq: u64, at: i64, text: &str) -> Inbound {
    inbound(
        seq,
        at,
        InboundKind::Message {
            message_id: format!("m{seq}"),
            content: Content::Text { text: text.into() },
            quote_token: None,
        },
    )
}

/// The effects that concern storage and routing (automated messages have their own tests).
fn routing_only(effects: Vec<Effect>) -> Vec<Effect> {
    effects
        .into_iter()
        .filter(|e| !matches!(e, Effect::Automated { .. }))
        .collect()
}

fn status(state: &ConversationState) -> Option<Status> {
    state.current.as_ref().map(|c| c.status)
}

fn causes(state: &ConversationState) -> Vec<(Option<Status>, Status)> {
    state
        .current
        .as_ref()
        .unwrap()
        .transitions
        .iter()
        .map(|t| (t.from, t.to))
        .collect()
}

fn active_state() -> ConversationState {
    let s = settings();
    let mut state = ConversationState::new(key());
    state.apply(&text(1, T0, "hello"), &s);
    state.assign(&alice(), T0 + 10, &s).unwrap();
    state
}

#[test]
fn a_first_message_opens_a_conversation_and_queues_it_when_no_bot_answers() {
    let mut state = ConversationState::new(key());
    let effects = state.apply(&text(1, T0, "hello"), &settings());
    let conversation = state.current.as_ref().unwrap();
    assert_eq!(conversation.id.to_string(), "demo.user.Ucustomer.1");
    assert_eq!(conversation.status, Status::Queued);
    assert_eq!(
        causes(&state),
        [(None, Status::Open), (Some(Status::Open), Status::Queued)]
    );
    assert_eq!(conversation.transitions[1].cause, Cause::NoBot);
    assert_eq!(conversation.deadline_ms, Some(T0 + 1_000));
    assert_eq!(
        effects,
        [Effect::Enqueue {
            conversation: conversation.id.clone()
        }]
    );
    assert_eq!(conversation.transcript[0].preview(), "hello");
}

#[test]
fn with_a_bot_first_a_conversation_goes_to_the_bot_then_the_queue() {
    let s = ConversationSettings {
        bot_first: true,
        ..settings()
    };
    let mut state = ConversationState::new(key());
    assert!(state.apply(&text(1, T0, "hello"), &s).is_empty());
    assert_eq!(status(&state), Some(Status::Bot));
    let effects = state.requeue("bot escalated", T0 + 5, &s).unwrap();
    assert_eq!(status(&state), Some(Status::Queued));
    assert!(matches!(effects[..], [Effect::Enqueue { .. }]));
}

#[test]
fn an_event_is_applied_once_however_often_it_is_replayed() {
    let s = settings();
    let mut state = ConversationState::new(key());
    state.apply(&text(1, T0, "one"), &s);
    state.apply(&text(2, T0 + 1, "two"), &s);
    let before = state.clone();
    assert!(state.apply(&text(2, T0 + 1, "two"), &s).is_empty());
    assert!(state.apply(&text(1, T0, "one"), &s).is_empty());
    assert_eq!(state, before);
    assert_eq!(state.applied_seq, 2);
    assert_eq!(state.current.unwrap().transcript.len(), 2);
}

#[test]
fn every_message_type_reaches_the_transcript_with_a_readable_preview() {
    let s = settings();
    let mut state = ConversationState::new(key());
    let contents = [
        Content::Image {
            url: None,
            preview_url: None,
        },
        Content::Sticker {
            package_id: "446".into(),
            sticker_id: "1988".into(),
            keywords: vec!["OK".into()],
            text: None,
        },
        Content::Unsupported {
            type_name: "future".into(),
        },
    ];
    for (i, content) in contents.into_iter().enumerate() {
        let kind = InboundKind::Message {
            message_id: format!("m{i}"),
            content,
            quote_token: None,
        };
        state.apply(&inbound(i as u64 + 1, T0, kind), &s);
    }
    let previews: Vec<String> = state
        .current
        .unwrap()
        .transcript
        .iter()
        .map(|e| e.preview())
        .collect();
    assert_eq!(
        previews,
        [
            "[image]",
            "[sticker: OK]",
            "[future message: not shown here, open LINE to see it]"
        ]
    );
}

#[test]
fn unsend_hides_the_message_and_marks_it_unsent() {
    let s = settings();
    let mut state = ConversationState::new(key());
    state.apply(&text(1, T0, "my password is hunter2"), &s);
    state.apply(
        &inbound(
            2,
            T0 + 1,
            InboundKind::Unsend {
                message_id: "m1".into(),
            },
        ),
        &s,
    );
    let entry = &state.current.as_ref().unwrap().transcript[0];
    assert!(entry.unsent);
    assert_eq!(entry.content, None);
    assert_eq!(entry.preview(), "[message unsent by the customer]");
    assert!(!format!("{state:?}").contains("hunter2"));
}

#[test]
fn unsend_of_a_message_in_a_closed_conversation_reaches_its_archive() {
    let s = settings();
    let mut state = active_state();
    state.end(&alice(), T0 + 20, &s).unwrap();
    state.wrap_up_done(&alice(), T0 + 30, &s).unwrap();
    let effects = state.apply(
        &inbound(
            2,
            T0 + 40,
            InboundKind::Unsend {
                message_id: "m1".into(),
            },
        ),
        &s,
    );
    assert_eq!(
        effects,
        [Effect::HideArchivedMessage {
            conversation: ConversationId::parse("demo.user.Ucustomer.1").unwrap(),
            message_id: "m1".into()
        }]
    );
}

#[test]
fn unfollow_blocks_the_contact_and_follow_unblocks_it() {
    let s = settings();
    let mut state = ConversationState::new(key());
    state.apply(
        &inbound(1, T0, InboundKind::Follow { unblocked: false }),
        &s,
    );
    assert!(state.contact.following && !state.contact.blocked);
    assert_eq!(state.current, None, "a follow alone opens no conversation");
    state.apply(&inbound(2, T0 + 1, InboundKind::Unfollow), &s);
    assert!(state.contact.blocked && !state.contact.following);
    state.apply(
        &inbound(3, T0 + 2, InboundKind::Follow { unblocked: true }),
        &s,
    );
    assert!(!state.contact.blocked);
}

#[test]
fn postbacks_and_group_events_are_recorded() {
    let s = settings();
    let mut state = ConversationState::new(key());
    state.apply(
        &inbound(
            1,
            T0,
            InboundKind::Postback {
                data: "action=buy&item=1".into(),
                params: Default::default(),
            },
        ),
        &s,
    );
    state.apply(
        &inbound(
            2,
            T0 + 1,
            InboundKind::MembersJoined {
                user_ids: vec!["U2".into()],
            },
        ),
        &s,
    );
    state.apply(
        &inbound(
            3,
            T0 + 2,
            InboundKind::Other {
                type_name: "beacon".into(),
            },
        ),
        &s,
    );
    let transcript = &state.current.as_ref().unwrap().transcript;
    assert_eq!(transcript[0].preview(), "[postback: action=buy&item=1]");
    assert_eq!(transcript[1].preview(), "joined: U2");
    assert_eq!(transcript[1].author, Author::System);
    assert_eq!(state.other_events, 1);
}

#[test]
fn leaving_the_chat_closes_and_archives_the_conversation() {
    let s = settings();
    let mut state = active_state();
    let effects = state.apply(&inbound(2, T0 + 50, InboundKind::Left), &s);
    assert_eq!(state.current, None);
    assert_eq!(state.history.len(), 1);
    assert!(matches!(&effects[..], [Effect::Archive(c)] if c.status == Status::Closed));
}

#[test]
fn the_agent_path_active_waiting_active_wrap_up_closed() {
    let s = settings();
    let mut state = active_state();
    assert_eq!(state.current.as_ref().unwrap().agent, Some(alice()));

    let effects = state.set_waiting(&alice(), T0 + 20, &s).unwrap();
    assert_eq!(status(&state), Some(Status::Waiting));
    assert!(matches!(effects[..], [Effect::ReleaseCapacity { .. }]));

    // Affinity: the customer's next message brings it back to the same agent.
    let effects = state.apply(&text(2, T0 + 30, "I'm back"), &s);
    assert_eq!(status(&state), Some(Status::Active));
    assert!(matches!(&effects[0], Effect::ReclaimCapacity { agent, .. } if *agent == alice()));
    assert!(
        matches!(&effects[1], Effect::TellAgent { agent, entry, .. } if *agent == alice() && entry.preview() == "I'm back")
    );

    let effects = state.end(&alice(), T0 + 40, &s).unwrap();
    assert!(matches!(
        &effects[..],
        [Effect::Automated {
            trigger: Trigger::Ended,
            ..
        }]
    ));
    let conversation = state.current.as_ref().unwrap();
    assert_eq!(conversation.status, Status::WrapUp);
    assert!(conversation.capacity_held);

    let effects = routing_only(state.wrap_up_done(&alice(), T0 + 50, &s).unwrap());
    assert!(matches!(effects[0], Effect::ReleaseCapacity { .. }));
    assert!(matches!(&effects[1], Effect::Archive(c) if c.transitions.len() == 7));
    assert_eq!(state.current, None);
}

#[test]
fn without_affinity_a_returning_customer_is_queued_again() {
    let s = ConversationSettings {
        keep_same_agent: false,
        ..settings()
    };
    let mut state = active_state();
    state.set_waiting(&alice(), T0 + 20, &s).unwrap();
    let effects = state.apply(&text(2, T0 + 30, "hello?"), &s);
    assert_eq!(status(&state), Some(Status::Queued));
    assert_eq!(state.current.as_ref().unwrap().agent, None);
    assert!(matches!(effects[..], [Effect::Enqueue { .. }]));
}

#[test]
fn actions_on_someone_elses_or_a_wrong_state_conversation_are_refused() {
    let s = settings();
    let mut state = ConversationState::new(key());
    assert_eq!(
        state.end(&alice(), T0, &s),
        Err(TransitionError::NoConversation)
    );
    state.apply(&text(1, T0, "hi"), &s);
    assert!(matches!(
        state.set_waiting(&alice(), T0, &s),
        Err(TransitionError::InvalidState {
            status: "queued",
            ..
        })
    ));
    state.assign(&alice(), T0, &s).unwrap();
    let bob = AgentId::parse("bob").unwrap();
    assert!(matches!(
        state.end(&bob, T0, &s),
        Err(TransitionError::NotYours { .. })
    ));
    assert!(matches!(
        state.assign(&bob, T0, &s),
        Err(TransitionError::InvalidState {
            status: "active",
            ..
        })
    ));
}

#[test]
fn a_customer_writing_after_close_starts_a_new_linked_conversation() {
    let s = settings();
    let mut state = active_state();
    state.end(&alice(), T0 + 20, &s).unwrap();
    state.wrap_up_done(&alice(), T0 + 30, &s).unwrap();
    state.apply(&text(2, T0 + 40, "one more thing"), &s);
    let conversation = state.current.as_ref().unwrap();
    assert_eq!(conversation.id.number, 2);
    assert_eq!(
        conversation.previous,
        [ConversationId::parse("demo.user.Ucustomer.1").unwrap()]
    );
    assert_eq!(conversation.status, Status::Queued);
}

#[test]
fn a_customer_writing_during_wrap_up_supersedes_it() {
    let s = settings();
    let mut state = active_state();
    state.end(&alice(), T0 + 20, &s).unwrap();
    let effects = state.apply(&text(2, T0 + 30, "wait"), &s);
    assert!(matches!(effects[0], Effect::ReleaseCapacity { .. }));
    assert!(
        matches!(&effects[1], Effect::Archive(c) if c.transitions.last().unwrap().cause == Cause::Superseded)
    );
    assert!(matches!(effects[2], Effect::Enqueue { .. }));
    assert_eq!(state.current.as_ref().unwrap().id.number, 2);
}

#[test]
fn the_queued_timer_closes_the_conversation() {
    let s = settings();
    let mut state = ConversationState::new(key());
    state.apply(&text(1, T0, "hi"), &s);
    assert!(state.tick(T0 + 999, &s).is_empty(), "not yet due");
    assert_eq!(status(&state), Some(Status::Queued));
    let effects = routing_only(state.tick(T0 + 1_000, &s));
    let [Effect::Archive(closed)] = &effects[..] else {
        panic!("archived: {effects:?}");
    };
    assert_eq!(closed.status, Status::Closed);
    assert_eq!(
        closed.transitions.last().unwrap().cause,
        Cause::Timeout { after_ms: 1_000 }
    );
    assert_eq!(state.current, None);
}

#[test]
fn the_active_timer_closes_and_frees_the_agent() {
    let s = settings();
    let mut state = active_state();
    assert!(state.tick(T0 + 10 + 1_999, &s).is_empty());
    let effects = routing_only(state.tick(T0 + 10 + 2_000, &s));
    assert!(matches!(effects[0], Effect::ReleaseCapacity { .. }));
    assert!(matches!(&effects[1], Effect::Archive(c) if c.status == Status::Closed));
}

#[test]
fn the_waiting_timer_closes_the_conversation() {
    let s = settings();
    let mut state = active_state();
    state.set_waiting(&alice(), T0 + 20, &s).unwrap();
    assert!(state.tick(T0 + 20 + 2_999, &s).is_empty());
    let effects = routing_only(state.tick(T0 + 20 + 3_000, &s));
    assert!(matches!(&effects[..], [Effect::Archive(c)] if c.status == Status::Closed));
}

#[test]
fn wrap_up_releases_capacity_after_the_hold_then_closes_at_its_timeout() {
    let s = settings();
    let mut state = active_state();
    state.end(&alice(), T0 + 20, &s).unwrap();
    assert_eq!(state.deadline_ms(), Some(T0 + 20 + 100));

    let effects = routing_only(state.tick(T0 + 20 + 100, &s));
    assert!(matches!(effects[..], [Effect::ReleaseCapacity { .. }]));
    let conversation = state.current.as_ref().unwrap();
    assert_eq!(conversation.status, Status::WrapUp);
    assert!(!conversation.capacity_held);
    assert_eq!(state.deadline_ms(), Some(T0 + 20 + 500));

    let effects = routing_only(state.tick(T0 + 20 + 500, &s));
    assert!(matches!(&effects[..], [Effect::Archive(c)] if c.status == Status::Closed));
}

#[test]
fn a_late_tick_after_a_long_outage_closes_wrap_up_at_once() {
    let s = settings();
    let mut state = active_state();
    state.end(&alice(), T0 + 20, &s).unwrap();
    let effects = routing_only(state.tick(T0 + 10_000, &s));
    assert!(matches!(effects[0], Effect::ReleaseCapacity { .. }));
    assert!(matches!(&effects[1], Effect::Archive(_)));
}

#[test]
fn requeue_releases_the_agent_and_keeps_the_conversation() {
    let s = settings();
    let mut state = active_state();
    let effects = state.requeue("agent disconnected", T0 + 20, &s).unwrap();
    assert!(matches!(effects[0], Effect::ReleaseCapacity { .. }));
    assert!(matches!(effects[1], Effect::Enqueue { .. }));
    let conversation = state.current.as_ref().unwrap();
    assert_eq!(conversation.status, Status::Queued);
    assert_eq!(conversation.agent, None);
    assert_eq!(conversation.opened_at_ms, T0, "keeps its age");
}

#[test]
fn a_snapshot_round_trips_through_json() {
    let s = settings();
    let mut state = active_state();
    state.apply(&text(2, T0 + 1, "こんにちは 👋"), &s);
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.starts_with(r#"{"v":5,"#), "{json}");
    let back: ConversationState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
}

#[test]
fn agent_messages_and_notes_join_the_transcript_once_per_client_id() {
    let s = settings();
    let mut state = active_state();
    let hello = Content::Text {
        text: "How can I help?".into(),
    };
    assert_eq!(
        state.agent_wrote(&alice(), hello.clone(), Some("c1".into()), false, T0 + 1),
        Ok(true)
    );
    assert_eq!(
        state.agent_wrote(&alice(), hello, Some("c1".into()), false, T0 + 2),
        Ok(false)
    );
    let note = Content::Text {
        text: "VIP customer".into(),
    };
    assert_eq!(
        state.agent_wrote(&alice(), note, None, true, T0 + 3),
        Ok(true)
    );
    let transcript = &state.current.as_ref().unwrap().transcript;
    assert_eq!(transcript.len(), 3);
    assert_eq!(transcript[1].author, Author::Agent { agent: alice() });
    assert!(transcript[2].internal);

    let bob = AgentId::parse("bob").unwrap();
    let refused = state.agent_wrote(&bob, Content::Text { text: "hi".into() }, None, false, T0);
    assert!(matches!(refused, Err(TransitionError::NotYours { .. })));
    state.end(&alice(), T0 + 4, &s).unwrap();
    let after_end = state.agent_wrote(
        &alice(),
        Content::Text { text: "bye".into() },
        None,
        false,
        T0 + 5,
    );
    assert!(matches!(
        after_end,
        Err(TransitionError::InvalidState { .. })
    ));
    assert_eq!(
        state.agent_wrote(
            &alice(),
            Content::Text {
                text: "resolved".into()
            },
            None,
            true,
            T0 + 6
        ),
        Ok(true)
    );
}

#[test]
fn an_older_snapshot_without_newer_fields_still_loads() {
    let mut state = active_state();
    state.apply(&text(2, T0 + 1, "hi"), &settings());
    let mut json: serde_json::Value = serde_json::to_value(&state).unwrap();
    for entry in json["current"]["transcript"].as_array_mut().unwrap() {
        entry.as_object_mut().unwrap().remove("client_msg_id");
        entry.as_object_mut().unwrap().remove("internal");
    }
    let back: ConversationState = serde_json::from_value(json).unwrap();
    assert_eq!(back, state);
}

#[test]
fn transfer_to_a_queue_or_an_agent_requeues_keeping_the_age() {
    let s = settings();
    let mut state = active_state();
    state.set_routing(RoutingInfo {
        workstream: "support".into(),
        queue: "general".into(),
        skills: [("japanese".to_string(), 5)].into(),
        priority: 0,
        units: 1,
        rule: None,
        direct_to: None,
    });
    let bob = AgentId::parse("bob").unwrap();
    let effects = state
        .transfer(&alice(), TransferTarget::Agent(bob.clone()), T0 + 20, &s)
        .unwrap();
    assert!(matches!(effects[0], Effect::ReleaseCapacity { .. }));
    assert!(matches!(effects[1], Effect::Enqueue { .. }));
    let conversation = state.current.as_ref().unwrap();
    assert_eq!(conversation.status, Status::Queued);
    assert_eq!(
        conversation.routing.as_ref().unwrap().direct_to,
        Some(bob.clone())
    );
    assert_eq!(conversation.opened_at_ms, T0);

    state.assign(&bob, T0 + 30, &s).unwrap();
    assert_eq!(
        state
            .current
            .as_ref()
            .unwrap()
            .routing
            .as_ref()
            .unwrap()
            .direct_to,
        None
    );
    state
        .transfer(&bob, TransferTarget::Queue("billing".into()), T0 + 40, &s)
        .unwrap();
    let routing = state.current.as_ref().unwrap().routing.clone().unwrap();
    assert_eq!(routing.queue, "billing");
    assert!(routing.skills.is_empty());
    assert!(matches!(
        state.transfer(&alice(), TransferTarget::Queue("x".into()), T0, &s),
        Err(TransitionError::InvalidState { .. })
    ));
}

#[test]
fn automated_messages_are_due_on_assign_end_and_close_but_not_when_superseded() {
    let s = settings();
    let mut state = ConversationState::new(key());
    state.apply(&text(1, T0, "hello"), &s);
    let effects = state.assign(&alice(), T0 + 10, &s).unwrap();
    assert!(matches!(
        &effects[..],
        [Effect::Automated {
            trigger: Trigger::Assigned,
            ..
        }]
    ));
    let effects = state.end(&alice(), T0 + 20, &s).unwrap();
    assert!(matches!(
        &effects[..],
        [Effect::Automated {
            trigger: Trigger::Ended,
            ..
        }]
    ));
    // The customer writes during wrap-up: the old conversation closes without a message.
    let effects = state.apply(&text(2, T0 + 30, "one more thing"), &s);
    assert!(!effects.iter().any(|e| matches!(
        e,
        Effect::Automated {
            trigger: Trigger::Closed,
            ..
        }
    )));
    let effects = state.tick(T0 + 30 + 1_000, &s);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Automated {
            trigger: Trigger::Closed,
            ..
        }
    )));
}

#[test]
fn a_reply_token_is_taken_once_while_fresh_and_never_from_a_redelivery() {
    let s = settings();
    let mut state = ConversationState::new(key());
    let mut first = text(1, T0, "hello");
    first.reply_token = Some("token-1".into());
    state.apply(&first, &s);
    assert_eq!(
        state.take_reply_token(T0 + 100, 50_000).unwrap().token,
        "token-1"
    );
    assert_eq!(state.take_reply_token(T0 + 200, 50_000), None, "used once");
    let mut late = text(2, T0 + 1_000, "again");
    late.reply_token = Some("token-2".into());
    state.apply(&late, &s);
    assert_eq!(
        state.take_reply_token(T0 + 1_000 + 50_000, 50_000),
        None,
        "expired"
    );
    let mut redelivered = text(3, T0 + 2_000, "late copy");
    redelivered.reply_token = Some("token-3".into());
    redelivered.redelivery = true;
    state.apply(&redelivered, &s);
    assert_eq!(state.take_reply_token(T0 + 2_001, 50_000), None);
}

#[test]
fn consent_is_due_once_per_conversation_and_recorded_before_the_agent_message() {
    let s = settings();
    let mut state = ConversationState::new(key());
    state.apply(&text(1, T0, "hello"), &s);
    state.assign(&alice(), T0 + 1, &s).unwrap();
    state
        .agent_wrote(
            &alice(),
            Content::Text { text: "Hi!".into() },
            Some("c1".into()),
            false,
            T0 + 2,
        )
        .unwrap();
    assert!(state.consent_due());
    assert!(!state.consent_due());
    let notice = Content::Text {
        text: "This conversation may be recorded.".into(),
    };
    let id = "demo.user.Ucustomer.1/agent/c1".to_string();
    assert!(state.record_automated(std::slice::from_ref(&notice), &id, T0 + 2, true));
    assert!(
        !state.record_automated(&[notice], &id, T0 + 2, true),
        "recorded once"
    );
    let transcript = &state.current.as_ref().unwrap().transcript;
    let n = transcript.len();
    assert_eq!(transcript[n - 2].author, Author::System);
    assert_eq!(transcript[n - 1].outgoing.as_deref(), Some(id.as_str()));
}

#[test]
fn the_latest_visible_entries_count_past_agents_notes() {
    let s = settings();
    let mut state = active_state();
    for seq in 2..=5 {
        state.apply(&text(seq, T0 + seq as i64, &format!("m{seq}")), &s);
    }
    let alice = AgentId::parse("alice").unwrap();
    let note = Content::Text {
        text: "note".into(),
    };
    state
        .agent_wrote(&alice, note, None, true, T0 + 10)
        .unwrap();
    let transcript = &state.current.as_ref().unwrap().transcript;
    let previews = |t: &Transcript| t.iter().map(|e| e.preview()).collect::<Vec<_>>();

    let (from, latest) = transcript.latest_visible(2);
    assert_eq!(
        (from, previews(&latest)),
        (3, vec!["m4".into(), "m5".into(), "note".into()])
    );
    let (from, latest) = transcript.latest_visible(0);
    assert_eq!((from, latest.len()), (transcript.len(), 0));
    let (from, latest) = transcript.latest_visible(100);
    assert_eq!((from, latest.len()), (0, transcript.len()));
}
