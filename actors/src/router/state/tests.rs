use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::domain::IdError;

const T0: i64 = 1_700_000_000_000;

fn agent(name: &str) -> AgentId {
    AgentId::parse(name).unwrap()
}

fn queue(name: &str) -> QueueId {
    QueueId::parse(name).unwrap()
}

fn conv(n: u32) -> ConversationId {
    ConversationId::parse(&format!("demo.user.U{n}.1")).unwrap()
}

fn skills(pairs: &[(&str, u8)]) -> Skills {
    pairs.iter().map(|&(s, l)| (s.to_owned(), l)).collect()
}

fn queue_spec(name: &str, priority: u32, assignment: Assignment, mode: SkillMatch) -> QueueSpec {
    QueueSpec {
        id: queue(name),
        priority,
        assignment,
        skill_match: mode,
    }
}

/// A router with one queue "chat" of the given modes.
fn router(assignment: Assignment, mode: SkillMatch) -> RouterState {
    let mut state = RouterState::default();
    state.upsert_queue(queue_spec("chat", 0, assignment, mode));
    state
}

/// Adds an available agent serving "chat".
fn add_agent(state: &mut RouterState, name: &str, capacity: u32, skill: &[(&str, u8)]) {
    add_agent_in(state, name, capacity, skill, &["chat"]);
}

fn add_agent_in(
    state: &mut RouterState,
    name: &str,
    capacity: u32,
    skill: &[(&str, u8)],
    queues: &[&str],
) {
    state
        .upsert_agent(AgentSpec {
            id: agent(name),
            capacity,
            skills: skills(skill),
            queues: queues.iter().map(|q| queue(q)).collect(),
        })
        .unwrap();
    state
        .set_presence(&agent(name), Presence::Available)
        .unwrap();
}

fn waiting(n: u32, since_ms: i64) -> WaitingConversation {
    WaitingConversation {
        conversation: conv(n),
        queue: queue("chat"),
        required_skills: Skills::new(),
        priority: 0,
        since_ms,
        units: 1,
    }
}

fn needing(n: u32, since_ms: i64, skill: &[(&str, u8)]) -> WaitingConversation {
    WaitingConversation {
        required_skills: skills(skill),
        ..waiting(n, since_ms)
    }
}

/// Offers the next conversation and has the agent accept it; returns (conversation, agent).
fn offer_and_accept(state: &mut RouterState, now: i64) -> (ConversationId, AgentId) {
    let offer = state.next_offer(now).expect("an offer");
    state
        .accept(&offer.conversation, &offer.agent, now)
        .unwrap();
    (offer.conversation, offer.agent)
}

#[test]
fn queue_ids_are_url_and_key_safe() {
    assert!(QueueId::parse("billing").is_ok());
    assert!(QueueId::parse("vip-2_jp").is_ok());
    assert!(matches!(QueueId::parse(""), Err(IdError::Empty { .. })));
    assert!(QueueId::parse("Billing").is_err());
    assert!(QueueId::parse("a b").is_err());
    assert!(QueueId::parse("q".repeat(64)).is_ok());
    assert!(QueueId::parse("q".repeat(65)).is_err());
    assert_eq!(queue("vip").to_string(), "vip");
    let parsed: QueueId = serde_json::from_str("\"vip\"").unwrap();
    assert_eq!(parsed, queue("vip"));
    assert!(serde_json::from_str::<QueueId>("\"V I P\"").is_err());
    // Separately parsed (no shared allocation), ids still compare and order by their text.
    assert_eq!(queue("vip"), QueueId::parse(String::from("vip")).unwrap());
    assert!(queue("a") < queue("b") && queue("ab") > queue("a"));
}

#[test]
fn presence_and_modes_are_written_in_snake_case() {
    assert_eq!(json(&Presence::DoNotDisturb), "\"do_not_disturb\"");
    assert_eq!(json(&Presence::Available), "\"available\"");
    assert_eq!(json(&Assignment::HighestCapacity), "\"highest_capacity\"");
    assert_eq!(json(&Assignment::RoundRobin), "\"round_robin\"");
    assert_eq!(json(&Assignment::MostIdle), "\"most_idle\"");
    assert_eq!(json(&SkillMatch::Exact), "\"exact\"");
    assert_eq!(json(&SkillMatch::Closest), "\"closest\"");
    let spec: QueueSpec = serde_json::from_str(
        r#"{"id":"vip","priority":1,"assignment":"most_idle","skill_match":"closest"}"#,
    )
    .unwrap();
    assert_eq!(spec.assignment, Assignment::MostIdle);
    let waiting: WaitingConversation =
        serde_json::from_str(r#"{"conversation":"demo.user.U1.1","queue":"chat","since_ms":5}"#)
            .unwrap();
    assert_eq!((waiting.priority, waiting.units), (0, 1));
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

#[test]
fn an_outstanding_offer_counts_against_capacity() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 2, &[]);
    for n in 1..=3 {
        state.enqueue(waiting(n, T0 + i64::from(n))).unwrap();
    }
    let first = state.next_offer(T0).unwrap();
    let second = state.next_offer(T0).unwrap();
    assert_eq!(
        (first.conversation, second.conversation),
        (conv(1), conv(2))
    );
    assert_eq!(state.load(&agent("alice")), Some((0, 2, 2)));
    assert_eq!(state.next_offer(T0), None, "two offers fill alice");
    assert_eq!(state.waiting_len(), 1);
    assert_eq!(
        state.effective_presence(&agent("alice")),
        Some(Presence::Busy)
    );
}

#[test]
fn a_conversation_costing_more_units_than_an_agent_has_free_goes_to_another() {
    for assignment in [
        Assignment::HighestCapacity,
        Assignment::MostIdle,
        Assignment::RoundRobin,
    ] {
        let mut state = router(assignment, SkillMatch::Exact);
        add_agent(&mut state, "alice", 3, &[]);
        add_agent(&mut state, "bob", 3, &[]);
        state.reserve_direct(&conv(90), &agent("alice"), 2).unwrap();
        state
            .enqueue(WaitingConversation {
                units: 2,
                ..waiting(1, T0)
            })
            .unwrap();
        let offer = state.next_offer(T0).unwrap();
        assert_eq!(offer.agent, agent("bob"), "{assignment:?}");
        assert_eq!(offer.units, 2);
        assert_eq!(state.load(&agent("bob")), Some((0, 2, 3)));
    }
}

#[test]
fn highest_capacity_offers_to_the_agent_with_the_most_free_units() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 2, &[]);
    add_agent(&mut state, "bob", 5, &[]);
    add_agent(&mut state, "carol", 3, &[]);
    for n in 1..=4 {
        state.enqueue(waiting(n, T0 + i64::from(n))).unwrap();
    }
    let chosen: Vec<AgentId> = (0..4)
        .map(|_| state.next_offer(T0).unwrap().agent)
        .collect();
    // bob 5 → 4 free; bob 4 vs carol 3 → bob; bob 3 vs carol 3 tie: neither assigned, so id.
    assert_eq!(
        chosen,
        vec![agent("bob"), agent("bob"), agent("bob"), agent("carol")]
    );
}

#[test]
fn highest_capacity_breaks_ties_by_the_least_recent_assignment() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    for name in ["alice", "bob", "carol", "dave"] {
        add_agent(&mut state, name, 3, &[]);
        state.set_presence(&agent(name), Presence::Away).unwrap();
    }
    // One at a time, bob, then carol, then alice take a conversation and finish it.
    for (n, name) in [(1, "bob"), (2, "carol"), (3, "alice")] {
        let at = T0 + 10 * i64::from(n);
        state
            .set_presence(&agent(name), Presence::Available)
            .unwrap();
        state.enqueue(waiting(n, at)).unwrap();
        let (conversation, who) = offer_and_accept(&mut state, at);
        assert_eq!(who, agent(name));
        state.release(&conversation, &who).unwrap();
        state.set_presence(&agent(name), Presence::Away).unwrap();
    }
    for name in ["alice", "bob", "carol", "dave"] {
        state
            .set_presence(&agent(name), Presence::Available)
            .unwrap();
    }
    for n in 4..=7 {
        state.enqueue(waiting(n, T0 + i64::from(n))).unwrap();
    }
    // All have 3 free: dave was never assigned (oldest), then bob, carol, alice.
    let chosen: Vec<AgentId> = (0..4)
        .map(|_| state.next_offer(T0 + 100).unwrap().agent)
        .collect();
    assert_eq!(
        chosen,
        vec![agent("dave"), agent("bob"), agent("carol"), agent("alice")]
    );
}

#[test]
fn most_idle_offers_to_the_agent_whose_last_assignment_is_oldest() {
    let mut state = router(Assignment::MostIdle, SkillMatch::Exact);
    add_agent(&mut state, "alice", 10, &[]);
    add_agent(&mut state, "bob", 10, &[]);
    add_agent(&mut state, "carol", 10, &[]);
    state.enqueue(waiting(1, T0)).unwrap();
    state.enqueue(waiting(2, T0 + 1)).unwrap();
    state.enqueue(waiting(3, T0 + 2)).unwrap();
    // Nobody assigned yet: by id. Each accepts at a later time.
    assert_eq!(offer_and_accept(&mut state, T0 + 10).1, agent("alice"));
    assert_eq!(offer_and_accept(&mut state, T0 + 20).1, agent("bob"));
    assert_eq!(offer_and_accept(&mut state, T0 + 30).1, agent("carol"));
    // Load does not matter, only idleness: alice holds one but was assigned longest ago.
    state.release(&conv(2), &agent("bob")).unwrap();
    state.enqueue(waiting(4, T0 + 40)).unwrap();
    assert_eq!(offer_and_accept(&mut state, T0 + 50).1, agent("alice"));
    state.enqueue(waiting(5, T0 + 60)).unwrap();
    assert_eq!(offer_and_accept(&mut state, T0 + 70).1, agent("bob"));
}

#[test]
fn round_robin_shares_100_conversations_equally_among_4_agents() {
    let mut state = router(Assignment::RoundRobin, SkillMatch::Exact);
    for name in ["dave", "alice", "carol", "bob"] {
        add_agent(&mut state, name, 2, &[]);
    }
    for n in 0..100 {
        state.enqueue(waiting(n, T0 + i64::from(n))).unwrap();
    }
    let mut counts: BTreeMap<AgentId, u32> = BTreeMap::new();
    let mut sequence = Vec::new();
    for step in 0..100 {
        let now = T0 + 1_000 + step;
        let (conversation, who) = offer_and_accept(&mut state, now);
        state.release(&conversation, &who).unwrap();
        *counts.entry(who.clone()).or_default() += 1;
        sequence.push(who);
    }
    assert!(counts.values().all(|&n| n == 25), "{counts:?}");
    // Turns follow the order the agents joined the queue.
    let first: Vec<&str> = sequence[..4].iter().map(|a| a.as_str()).collect();
    assert_eq!(first, ["dave", "alice", "carol", "bob"]);
    assert_eq!(state.waiting_len(), 0);
}

#[test]
fn round_robin_skips_a_busy_agent_without_losing_its_turn_order() {
    let mut state = router(Assignment::RoundRobin, SkillMatch::Exact);
    add_agent(&mut state, "alice", 1, &[]);
    add_agent(&mut state, "bob", 1, &[]);
    add_agent(&mut state, "carol", 1, &[]);
    state.reserve_direct(&conv(99), &agent("alice"), 1).unwrap();
    for n in 1..=2 {
        state.enqueue(waiting(n, T0 + i64::from(n))).unwrap();
    }
    assert_eq!(offer_and_accept(&mut state, T0).1, agent("bob"));
    state.release(&conv(99), &agent("alice")).unwrap();
    // alice is free again and still ahead of carol in the rotation.
    assert_eq!(offer_and_accept(&mut state, T0).1, agent("alice"));
}

#[test]
fn exact_match_offers_only_to_agents_with_every_skill_at_the_level() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 5, &[("thai", 4)]);
    add_agent(&mut state, "bob", 5, &[("thai", 9), ("billing", 2)]);
    state
        .enqueue(needing(1, T0, &[("thai", 5), ("billing", 2)]))
        .unwrap();
    state.enqueue(needing(2, T0 + 1, &[("thai", 5)])).unwrap();
    state.enqueue(needing(3, T0 + 2, &[("thai", 10)])).unwrap();
    let first = state.next_offer(T0).unwrap();
    assert_eq!((first.conversation, first.agent), (conv(1), agent("bob")));
    let second = state.next_offer(T0).unwrap();
    assert_eq!(
        (second.conversation, second.agent),
        (conv(2), agent("bob")),
        "alice's thai 4 is short of 5"
    );
    assert_eq!(state.next_offer(T0), None, "nobody has thai 10");
    assert_eq!(state.position(&conv(3)), Some(1));
}

#[test]
fn exact_match_ranks_exact_and_over_qualified_agents_together() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 2, &[("thai", 5)]);
    add_agent(&mut state, "bob", 5, &[("thai", 8)]);
    state.enqueue(needing(1, T0, &[("thai", 5)])).unwrap();
    assert_eq!(state.next_offer(T0).unwrap().agent, agent("bob"));
}

#[test]
fn closest_match_prefers_the_exact_level_then_over_qualified() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Closest);
    add_agent(&mut state, "alice", 2, &[("thai", 5)]);
    add_agent(&mut state, "bob", 5, &[("thai", 8)]);
    add_agent(&mut state, "carol", 9, &[("thai", 4)]);
    state.enqueue(needing(1, T0, &[("thai", 5)])).unwrap();
    state.enqueue(needing(2, T0 + 1, &[("thai", 5)])).unwrap();
    state.enqueue(needing(3, T0 + 2, &[("thai", 5)])).unwrap();
    let chosen: Vec<AgentId> = (0..3)
        .map(|_| state.next_offer(T0).unwrap().agent)
        .collect();
    // alice (exact) until full, then bob (over-qualified) even though carol has more free.
    assert_eq!(chosen, vec![agent("alice"), agent("alice"), agent("bob")]);
}

#[test]
fn closest_match_falls_back_to_the_least_short_agent_only_when_nobody_qualifies() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Closest);
    add_agent(&mut state, "alice", 1, &[("thai", 6), ("billing", 6)]);
    add_agent(&mut state, "bob", 9, &[("thai", 2)]);
    add_agent(&mut state, "carol", 1, &[("thai", 5), ("billing", 3)]);
    add_agent(&mut state, "dave", 9, &[("billing", 9)]);
    let need = [("thai", 6), ("billing", 5)];
    for n in 1..=4 {
        state.enqueue(needing(n, T0 + i64::from(n), &need)).unwrap();
    }
    let chosen: Vec<AgentId> = (0..4)
        .map(|_| state.next_offer(T0).unwrap().agent)
        .collect();
    // alice qualifies; then shortfalls: carol 1+2=3, dave 6, bob 4+5=9.
    assert_eq!(
        chosen,
        vec![agent("alice"), agent("carol"), agent("dave"), agent("dave")]
    );
}

#[test]
fn closest_match_takes_the_smallest_shortfall_whatever_the_rank_order() {
    let mut state = router(Assignment::MostIdle, SkillMatch::Closest);
    add_agent(&mut state, "alice", 5, &[("thai", 1)]);
    add_agent(&mut state, "bob", 5, &[("thai", 2)]);
    add_agent(&mut state, "carol", 5, &[("thai", 3)]);
    state.enqueue(needing(1, T0, &[("thai", 4)])).unwrap();
    // All are short; alice is first by rank (never assigned, then id) but carol misses least.
    assert_eq!(state.next_offer(T0).unwrap().agent, agent("carol"));
}

#[test]
fn with_no_required_skills_every_agent_of_the_queue_qualifies() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 1, &[]);
    add_agent(&mut state, "bob", 3, &[("thai", 3)]);
    state.enqueue(waiting(1, T0)).unwrap();
    assert_eq!(state.next_offer(T0).unwrap().agent, agent("bob"));
}

#[test]
fn a_declined_conversation_goes_to_the_next_agent_before_newer_ones() {
    let mut state = router(Assignment::MostIdle, SkillMatch::Exact);
    add_agent(&mut state, "alice", 5, &[]);
    add_agent(&mut state, "bob", 5, &[]);
    state.enqueue(waiting(1, T0)).unwrap();
    let offer = state.next_offer(T0 + 10).unwrap();
    assert_eq!(
        (offer.conversation.clone(), offer.agent.clone()),
        (conv(1), agent("alice"))
    );
    state.enqueue(waiting(2, T0 + 5)).unwrap();
    assert_eq!(state.decline(&conv(1), &agent("alice")), Ok(false));
    assert_eq!(state.load(&agent("alice")), Some((0, 0, 5)));
    assert_eq!(
        state.position(&conv(1)),
        Some(1),
        "it keeps its original age"
    );
    assert_eq!(state.position(&conv(2)), Some(2));
    let again = state.next_offer(T0 + 20).unwrap();
    assert_eq!((again.conversation, again.agent), (conv(1), agent("bob")));
}

#[test]
fn an_agent_who_declined_is_never_offered_that_conversation_again() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 5, &[]);
    state.enqueue(waiting(1, T0)).unwrap();
    state.enqueue(waiting(2, T0 + 1)).unwrap();
    let offer = state.next_offer(T0).unwrap();
    assert_eq!(offer.conversation, conv(1));
    state.decline(&conv(1), &agent("alice")).unwrap();
    // alice is the only agent: conversation 1 waits, conversation 2 is not blocked by it.
    let next = state.next_offer(T0).unwrap();
    assert_eq!(next.conversation, conv(2));
    assert_eq!(state.next_offer(T0), None);
    assert_eq!(state.status(&conv(1)), Some(RoutingStatus::Waiting));
    add_agent(&mut state, "bob", 1, &[]);
    let last = state.next_offer(T0).unwrap();
    assert_eq!((last.conversation, last.agent), (conv(1), agent("bob")));
}

#[test]
fn missed_offers_are_counted_in_a_row_and_reset_on_accept() {
    let mut state = RouterState::new(RouterSettings {
        missed_offers_limit: 2,
    });
    state.upsert_queue(queue_spec(
        "chat",
        0,
        Assignment::HighestCapacity,
        SkillMatch::Exact,
    ));
    add_agent(&mut state, "alice", 5, &[]);
    for n in 1..=4 {
        state.enqueue(waiting(n, T0 + i64::from(n))).unwrap();
    }
    let alice = agent("alice");
    let first = state.next_offer(T0).unwrap();
    assert_eq!(state.decline(&first.conversation, &alice), Ok(false));
    assert_eq!(state.missed_in_a_row(&alice), 1);
    let second = state.next_offer(T0).unwrap();
    assert_eq!(state.decline(&second.conversation, &alice), Ok(true));
    assert_eq!(state.missed_in_a_row(&alice), 2);
    let third = state.next_offer(T0).unwrap();
    state.accept(&third.conversation, &alice, T0).unwrap();
    assert_eq!(state.missed_in_a_row(&alice), 0);
    let fourth = state.next_offer(T0).unwrap();
    assert_eq!(state.decline(&fourth.conversation, &alice), Ok(false));
    assert_eq!(state.missed_in_a_row(&alice), 1);
    assert_eq!(state.missed_in_a_row(&agent("nobody")), 0);
}

#[test]
fn answers_about_offers_that_were_not_made_are_refused() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 5, &[]);
    add_agent(&mut state, "bob", 1, &[]);
    state.enqueue(waiting(1, T0)).unwrap();
    let offer = state.next_offer(T0).unwrap();
    assert_eq!(offer.agent, agent("alice"));
    let not_offered = RouterError::NotOffered {
        conversation: conv(1),
        agent: agent("bob"),
    };
    assert_eq!(
        state.accept(&conv(1), &agent("bob"), T0),
        Err(not_offered.clone())
    );
    assert_eq!(state.decline(&conv(1), &agent("bob")), Err(not_offered));
    assert_eq!(
        state.accept(&conv(1), &agent("zed"), T0),
        Err(RouterError::UnknownAgent(agent("zed")))
    );
    state.accept(&conv(1), &agent("alice"), T0).unwrap();
    assert!(matches!(
        state.accept(&conv(1), &agent("alice"), T0),
        Err(RouterError::NotOffered { .. })
    ));
    assert!(matches!(
        state.release(&conv(1), &agent("bob")),
        Err(RouterError::NotHeld { .. })
    ));
    assert_eq!(
        state.enqueue(waiting(1, T0)),
        Err(RouterError::AlreadyHeld {
            conversation: conv(1),
            agent: agent("alice")
        })
    );
}

#[test]
fn only_available_agents_receive_offers() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    for (name, presence) in [
        ("alice", Presence::Away),
        ("bob", Presence::DoNotDisturb),
        ("carol", Presence::Offline),
        ("dave", Presence::Busy),
        ("erin", Presence::Available),
    ] {
        add_agent(&mut state, name, 9, &[]);
        state.set_presence(&agent(name), presence).unwrap();
    }
    for n in 1..=3 {
        state.enqueue(waiting(n, T0 + i64::from(n))).unwrap();
    }
    for _ in 0..3 {
        assert_eq!(state.next_offer(T0).unwrap().agent, agent("erin"));
    }
    state.set_presence(&agent("erin"), Presence::Away).unwrap();
    state.enqueue(waiting(4, T0 + 4)).unwrap();
    assert_eq!(state.next_offer(T0), None);
    state
        .set_presence(&agent("bob"), Presence::Available)
        .unwrap();
    assert_eq!(state.next_offer(T0).unwrap().agent, agent("bob"));
}

#[test]
fn a_new_agent_is_offline_until_it_says_otherwise() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    state
        .upsert_agent(AgentSpec {
            id: agent("alice"),
            capacity: 3,
            skills: Skills::new(),
            queues: vec![queue("chat")],
        })
        .unwrap();
    assert_eq!(state.presence(&agent("alice")), Some(Presence::Offline));
    state.enqueue(waiting(1, T0)).unwrap();
    assert_eq!(state.next_offer(T0), None);
    assert_eq!(
        state.set_presence(&agent("nobody"), Presence::Available),
        Err(RouterError::UnknownAgent(agent("nobody")))
    );
}

#[test]
fn an_agent_at_full_capacity_is_busy_until_capacity_frees() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 2, &[]);
    let alice = agent("alice");
    state.enqueue(waiting(1, T0)).unwrap();
    state.enqueue(waiting(2, T0 + 1)).unwrap();
    offer_and_accept(&mut state, T0);
    assert_eq!(state.effective_presence(&alice), Some(Presence::Available));
    offer_and_accept(&mut state, T0);
    assert_eq!(state.effective_presence(&alice), Some(Presence::Busy));
    assert_eq!(state.presence(&alice), Some(Presence::Available));
    state.release(&conv(1), &alice).unwrap();
    assert_eq!(state.effective_presence(&alice), Some(Presence::Available));
    state.enqueue(waiting(3, T0 + 2)).unwrap();
    assert_eq!(state.next_offer(T0).unwrap().agent, alice);
}

#[test]
fn do_not_disturb_stays_do_not_disturb_when_capacity_frees() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 1, &[]);
    let alice = agent("alice");
    state.enqueue(waiting(1, T0)).unwrap();
    offer_and_accept(&mut state, T0);
    assert_eq!(state.effective_presence(&alice), Some(Presence::Busy));
    assert_eq!(
        state.set_presence(&alice, Presence::DoNotDisturb),
        Ok(Presence::DoNotDisturb)
    );
    state.release(&conv(1), &alice).unwrap();
    assert_eq!(
        state.effective_presence(&alice),
        Some(Presence::DoNotDisturb)
    );
    state.enqueue(waiting(2, T0 + 1)).unwrap();
    assert_eq!(state.next_offer(T0), None);
    assert_eq!(
        state.set_presence(&alice, Presence::Available),
        Ok(Presence::Available)
    );
}

#[test]
fn queues_are_served_in_priority_order() {
    let mut state = RouterState::default();
    state.upsert_queue(queue_spec(
        "low",
        5,
        Assignment::HighestCapacity,
        SkillMatch::Exact,
    ));
    state.upsert_queue(queue_spec(
        "vip",
        1,
        Assignment::HighestCapacity,
        SkillMatch::Exact,
    ));
    state.upsert_queue(queue_spec(
        "mid",
        3,
        Assignment::HighestCapacity,
        SkillMatch::Exact,
    ));
    add_agent_in(&mut state, "alice", 9, &[], &["low", "vip", "mid"]);
    for (n, q) in [(1, "low"), (2, "mid"), (3, "vip"), (4, "low"), (5, "vip")] {
        state
            .enqueue(WaitingConversation {
                queue: queue(q),
                ..waiting(n, T0 + i64::from(n))
            })
            .unwrap();
    }
    let served: Vec<(ConversationId, QueueId)> = (0..5)
        .map(|_| {
            let offer = state.next_offer(T0).unwrap();
            (offer.conversation, offer.queue)
        })
        .collect();
    assert_eq!(
        served,
        vec![
            (conv(3), queue("vip")),
            (conv(5), queue("vip")),
            (conv(2), queue("mid")),
            (conv(1), queue("low")),
            (conv(4), queue("low")),
        ]
    );
    // Changing a queue's priority changes the order at once.
    state.upsert_queue(queue_spec(
        "low",
        0,
        Assignment::HighestCapacity,
        SkillMatch::Exact,
    ));
    state
        .enqueue(WaitingConversation {
            queue: queue("vip"),
            ..waiting(6, T0)
        })
        .unwrap();
    state
        .enqueue(WaitingConversation {
            queue: queue("low"),
            ..waiting(7, T0 + 9)
        })
        .unwrap();
    assert_eq!(state.next_offer(T0).unwrap().conversation, conv(7));
}

#[test]
fn within_a_queue_urgent_then_oldest_conversations_go_first() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 9, &[("thai", 5)]);
    let entries = [
        (1, 0, T0 + 30, &[][..]),
        (2, 0, T0 + 10, &[("thai", 3)][..]),
        (3, -1, T0 + 50, &[][..]),
        (4, 0, T0 + 10, &[][..]),
        (5, 2, T0, &[("thai", 5)][..]),
    ];
    for (n, priority, since, need) in entries {
        state
            .enqueue(WaitingConversation {
                priority,
                ..needing(n, since, need)
            })
            .unwrap();
    }
    assert_eq!(state.position(&conv(3)), Some(1));
    assert_eq!(state.position(&conv(5)), Some(5));
    let served: Vec<ConversationId> = (0..5)
        .map(|_| state.next_offer(T0).unwrap().conversation)
        .collect();
    // Equal priority and age: conversation id decides (U2 before U4).
    assert_eq!(served, vec![conv(3), conv(2), conv(4), conv(1), conv(5)]);
}

#[test]
fn a_conversation_nobody_can_take_does_not_block_the_next_one() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 9, &[("thai", 5)]);
    state.enqueue(needing(1, T0, &[("korean", 3)])).unwrap();
    state
        .enqueue(WaitingConversation {
            units: 20,
            ..waiting(2, T0 + 1)
        })
        .unwrap();
    state.enqueue(needing(3, T0 + 2, &[("thai", 4)])).unwrap();
    let offer = state.next_offer(T0).unwrap();
    assert_eq!(offer.conversation, conv(3));
    assert_eq!(state.next_offer(T0), None);
    assert_eq!(state.waiting_len(), 2);
    assert_eq!(state.position(&conv(1)), Some(1));
    assert_eq!(state.position(&conv(2)), Some(2));
}

#[test]
fn remove_agent_returns_its_offered_and_assigned_conversations() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 5, &[]);
    state.enqueue(waiting(1, T0)).unwrap();
    state.enqueue(needing(2, T0 + 1, &[])).unwrap();
    offer_and_accept(&mut state, T0 + 5);
    let offered = state.next_offer(T0 + 6).unwrap();
    assert_eq!(offered.conversation, conv(2));
    state.reserve_direct(&conv(3), &agent("alice"), 1).unwrap();
    let held = state.remove_agent(&agent("alice"));
    assert_eq!(
        held,
        vec![
            HeldConversation {
                conversation: conv(1),
                units: 1,
                kind: HoldKind::Assigned,
                queued_as: Some(waiting(1, T0)),
            },
            HeldConversation {
                conversation: conv(2),
                units: 1,
                kind: HoldKind::Offered,
                queued_as: Some(waiting(2, T0 + 1)),
            },
            HeldConversation {
                conversation: conv(3),
                units: 1,
                kind: HoldKind::Assigned,
                queued_as: None,
            },
        ]
    );
    assert_eq!(state.status(&conv(1)), None);
    assert_eq!(state.load(&agent("alice")), None);
    assert_eq!(state.remove_agent(&agent("alice")), Vec::new());
    // Queued again, they keep their age and go to whoever is left.
    add_agent(&mut state, "bob", 5, &[]);
    for conversation in held.into_iter().filter_map(|held| held.queued_as) {
        state.enqueue(conversation).unwrap();
    }
    assert_eq!(state.position(&conv(1)), Some(1));
    assert_eq!(state.next_offer(T0).unwrap().agent, agent("bob"));
}

#[test]
fn reserve_direct_takes_capacity_back_but_never_overbooks() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 2, &[]);
    let alice = agent("alice");
    state.reserve_direct(&conv(1), &alice, 1).unwrap();
    assert_eq!(
        state.reserve_direct(&conv(2), &alice, 2),
        Err(RouterError::Overbooked {
            agent: alice.clone(),
            units: 2,
            free: 1
        })
    );
    assert_eq!(
        state.reserve_direct(&conv(1), &alice, 1),
        Err(RouterError::AlreadyHeld {
            conversation: conv(1),
            agent: alice.clone()
        })
    );
    state.enqueue(waiting(3, T0)).unwrap();
    assert_eq!(
        state.reserve_direct(&conv(3), &alice, 1),
        Err(RouterError::AlreadyWaiting(conv(3)))
    );
    state.reserve_direct(&conv(2), &alice, 1).unwrap();
    assert_eq!(state.load(&alice), Some((2, 0, 2)));
    assert_eq!(state.effective_presence(&alice), Some(Presence::Busy));
    assert_eq!(state.next_offer(T0), None);
    assert_eq!(state.status(&conv(2)), Some(RoutingStatus::Assigned(alice)));
}

#[test]
fn enqueue_refuses_unknown_queues_and_bad_levels_and_ignores_repeats() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    assert_eq!(
        state.enqueue(WaitingConversation {
            queue: queue("nope"),
            ..waiting(1, T0)
        }),
        Err(RouterError::UnknownQueue(queue("nope")))
    );
    assert_eq!(
        state.enqueue(needing(1, T0, &[("thai", 11)])),
        Err(RouterError::InvalidProficiency {
            skill: "thai".into(),
            level: 11
        })
    );
    assert!(state
        .upsert_agent(AgentSpec {
            id: agent("alice"),
            capacity: 1,
            skills: skills(&[("thai", 0)]),
            queues: vec![],
        })
        .is_err());
    state.enqueue(waiting(1, T0)).unwrap();
    state.enqueue(waiting(1, T0 + 99)).unwrap();
    assert_eq!(state.waiting_len(), 1);
    assert_eq!(state.dequeue(&conv(1)), Some(waiting(1, T0)));
    assert_eq!(state.dequeue(&conv(1)), None);
    assert_eq!(state.waiting_len(), 0);
    assert_eq!(state.position(&conv(1)), None);
}

#[test]
fn upsert_agent_keeps_load_and_presence_and_applies_new_skills() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 3, &[("thai", 2)]);
    state.enqueue(waiting(1, T0)).unwrap();
    offer_and_accept(&mut state, T0);
    state.enqueue(needing(2, T0 + 1, &[("thai", 6)])).unwrap();
    assert_eq!(state.next_offer(T0), None);
    state
        .upsert_agent(AgentSpec {
            id: agent("alice"),
            capacity: 3,
            skills: skills(&[("thai", 7)]),
            queues: vec![queue("chat")],
        })
        .unwrap();
    assert_eq!(state.load(&agent("alice")), Some((1, 0, 3)));
    assert_eq!(state.presence(&agent("alice")), Some(Presence::Available));
    assert_eq!(state.next_offer(T0).unwrap().conversation, conv(2));
    // Leaving the queue: no more offers from it, holdings stay.
    state
        .upsert_agent(AgentSpec {
            id: agent("alice"),
            capacity: 3,
            skills: skills(&[("thai", 7)]),
            queues: vec![],
        })
        .unwrap();
    state.enqueue(waiting(3, T0 + 2)).unwrap();
    assert_eq!(state.next_offer(T0), None);
    assert_eq!(state.load(&agent("alice")), Some((1, 1, 3)));
}

#[test]
fn agents_naming_a_queue_before_it_exists_join_it_when_it_is_added() {
    let mut state = RouterState::default();
    add_agent_in(&mut state, "alice", 3, &[], &["later"]);
    state.upsert_queue(queue_spec(
        "later",
        0,
        Assignment::RoundRobin,
        SkillMatch::Exact,
    ));
    state
        .enqueue(WaitingConversation {
            queue: queue("later"),
            ..waiting(1, T0)
        })
        .unwrap();
    assert_eq!(state.next_offer(T0).unwrap().agent, agent("alice"));
}

#[test]
fn changing_a_queues_assignment_method_reranks_its_agents() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    add_agent(&mut state, "alice", 2, &[]);
    add_agent(&mut state, "bob", 9, &[("thai", 3)]);
    state.enqueue(waiting(1, T0)).unwrap();
    state.enqueue(needing(2, T0 + 1, &[("thai", 3)])).unwrap();
    assert_eq!(offer_and_accept(&mut state, T0 + 100).1, agent("bob"));
    state.upsert_queue(queue_spec(
        "chat",
        0,
        Assignment::MostIdle,
        SkillMatch::Exact,
    ));
    state.enqueue(waiting(3, T0 + 2)).unwrap();
    // Only bob has thai; then, under most idle, alice (never assigned) goes before bob.
    let offer = state.next_offer(T0 + 200).unwrap();
    assert_eq!((offer.conversation, offer.agent), (conv(2), agent("bob")));
    assert_eq!(state.next_offer(T0 + 200).unwrap().agent, agent("alice"));
}

#[test]
fn position_counts_from_one_across_requirement_groups() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    let needs: [&[(&str, u8)]; 3] = [&[], &[("thai", 2)], &[("billing", 4)]];
    for n in 0..30u32 {
        state
            .enqueue(needing(n, T0 + i64::from(n), needs[n as usize % 3]))
            .unwrap();
    }
    for n in 0..30u32 {
        assert_eq!(state.position(&conv(n)), Some(n as usize + 1));
    }
    state.dequeue(&conv(0)).unwrap();
    assert_eq!(state.position(&conv(29)), Some(29));
    assert_eq!(state.position(&conv(404)), None);
}

#[test]
fn the_waiting_count_of_a_queue_follows_enqueue_offer_decline_and_dequeue() {
    let mut state = router(Assignment::HighestCapacity, SkillMatch::Exact);
    for n in 0..3u32 {
        state.enqueue(waiting(n, T0 + i64::from(n))).unwrap();
    }
    assert_eq!(state.waiting_in(&queue("chat")), 3);
    add_agent(&mut state, "alice", 1, &[]);
    let offer = state.next_offer(T0 + 10).unwrap();
    assert_eq!(
        state.waiting_in(&queue("chat")),
        2,
        "offered is not waiting"
    );
    state.decline(&offer.conversation, &offer.agent).unwrap();
    assert_eq!(state.waiting_in(&queue("chat")), 3, "declined waits again");
    state.dequeue(&conv(2)).unwrap();
    assert_eq!(state.waiting_in(&queue("chat")), 2);
    assert_eq!(state.waiting_in(&queue("nowhere")), 0);
}

#[test]
fn many_requirement_sets_coming_and_going_keep_offers_right() {
    // More requirement sets than the idle index cache holds, so indexes are dropped and rebuilt.
    let mut state = router(Assignment::MostIdle, SkillMatch::Exact);
    add_agent(&mut state, "alice", 100, &[("thai", 10), ("billing", 5)]);
    add_agent(&mut state, "bob", 100, &[("thai", 5), ("billing", 10)]);
    for round in 0..3u32 {
        for level in 1..=10u8 {
            for (skill, who) in [("thai", "alice"), ("billing", "bob")] {
                let n = round * 1000 + u32::from(level) * 10 + u32::from(skill == "thai");
                let need = [(skill, level), ("other", 1)];
                state.enqueue(needing(n, T0, &need[..1])).unwrap();
                let offer = state.next_offer(T0).unwrap();
                if level > 5 {
                    assert_eq!(offer.agent, agent(who));
                }
                state.release(&offer.conversation, &offer.agent).unwrap();
                state.enqueue(needing(n + 500, T0, &need)).unwrap();
                assert_eq!(state.next_offer(T0), None, "nobody has 'other'");
                state.dequeue(&conv(n + 500)).unwrap();
            }
        }
    }
    assert!(state.idle_indexes.len() <= MAX_IDLE_SKILL_INDEXES);
    let cached: usize = state.queues.iter().map(|q| q.skills.len()).sum();
    assert!(cached <= MAX_IDLE_SKILL_INDEXES, "{cached} indexes kept");
    assert_consistent(&state);
}

#[test]
fn a_short_list_spills_to_the_heap_and_back_without_losing_items() {
    let mut list: ShortList<u32, 2> = ShortList::default();
    for n in 1..=5 {
        list.push(n);
    }
    assert_eq!(list.iter().count(), 5);
    assert_eq!(list.iter().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    list.swap_remove(0);
    assert_eq!(list.iter().copied().collect::<Vec<_>>(), [5, 2, 3, 4]);
    list.retain(|&n| n % 2 == 1);
    assert_eq!(list.iter().copied().collect::<Vec<_>>(), [5, 3]);
    for n in list.iter_mut() {
        *n *= 10;
    }
    list.push(7);
    assert_eq!(list.iter().copied().collect::<Vec<_>>(), [50, 30, 7]);
    list.clear();
    assert_eq!(list.iter().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Randomized operations checked against a brute-force model of the same rules.

/// splitmix64: small, seeded, good enough to shuffle operations deterministically.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

#[test]
fn a_serving_set_behaves_as_an_ascending_set() {
    let mut rng = Rng(11);
    let mut set = ServingSet::default();
    let mut model = BTreeSet::new();
    for _ in 0..2_000 {
        let key = rng.below(300);
        if rng.chance(55) {
            assert_eq!(set.insert(key), model.insert(key));
        } else {
            // Half of the removals take the first key, the path `remove` shortcuts.
            let key = match model.first() {
                Some(&first) if rng.chance(50) => first,
                _ => key,
            };
            assert_eq!(set.remove(&key), model.remove(&key));
        }
        assert_eq!(set.first(), model.first());
        assert_eq!(set.count_below(&key), model.range(..key).count());
    }
    assert_eq!(
        set.iter().copied().collect::<Vec<_>>(),
        Vec::from_iter(model)
    );
}

const SKILL_NAMES: [&str; 4] = ["thai", "english", "billing", "tech"];
const QUEUE_NAMES: [&str; 3] = ["q0", "q1", "q2"];

fn random_skills(rng: &mut Rng, most: u64) -> Skills {
    let count = rng.below(most + 1);
    (0..count)
        .map(|_| {
            let name = SKILL_NAMES[rng.below(4) as usize].to_owned();
            (name, 1 + rng.below(10) as u8)
        })
        .collect()
}

fn random_queues(rng: &mut Rng) -> Vec<QueueId> {
    let mut queues: Vec<QueueId> = QUEUE_NAMES
        .iter()
        .filter(|_| rng.chance(50))
        .map(|q| queue(q))
        .collect();
    if queues.is_empty() {
        queues.push(queue(QUEUE_NAMES[rng.below(3) as usize]));
    }
    queues
}

fn random_queue_spec(rng: &mut Rng, name: &str) -> QueueSpec {
    let assignment = [
        Assignment::HighestCapacity,
        Assignment::RoundRobin,
        Assignment::MostIdle,
    ][rng.below(3) as usize];
    let mode = [SkillMatch::Exact, SkillMatch::Closest][rng.below(2) as usize];
    queue_spec(name, rng.below(3) as u32, assignment, mode)
}

/// What the test expects of each conversation it created.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Waiting,
    Offered(AgentId),
    Assigned(AgentId),
}

/// What the test knows independently of the router's indexes: the round-robin order of each
/// queue (front is next) and each agent's last accepted offer.
#[derive(Debug, Default)]
struct Model {
    rotation: BTreeMap<QueueId, Vec<AgentId>>,
    last_assigned: BTreeMap<AgentId, i64>,
}

impl Model {
    /// The agent now serves `queues`: leaves the others, joins new ones at the back.
    fn serve(&mut self, agent: &AgentId, queues: &[QueueId]) {
        for (queue, order) in &mut self.rotation {
            if !queues.contains(queue) {
                order.retain(|a| a != agent);
            }
        }
        for queue in queues {
            if let Some(order) = self.rotation.get_mut(queue) {
                if !order.contains(agent) {
                    order.push(agent.clone());
                }
            }
        }
    }

    fn offered(&mut self, queue: &QueueId, agent: &AgentId) {
        let order = self.rotation.get_mut(queue).unwrap();
        order.retain(|a| a != agent);
        order.push(agent.clone());
    }

    fn removed(&mut self, agent: &AgentId) {
        self.serve(agent, &[]);
        self.last_assigned.remove(agent);
    }

    /// The assignment method's order, from the model: smaller first.
    fn rank(
        &self,
        assignment: Assignment,
        queue: &QueueId,
        agent: &AgentId,
        free: u32,
    ) -> (i64, i64) {
        let last = self.last_assigned.get(agent).copied().unwrap_or(i64::MIN);
        match assignment {
            Assignment::HighestCapacity => (-i64::from(free), last),
            Assignment::MostIdle => (last, 0),
            Assignment::RoundRobin => {
                let turn = self.rotation[queue].iter().position(|a| a == agent);
                (turn.unwrap() as i64, 0)
            }
        }
    }
}

/// The rules of the module docs, by brute force over every waiting conversation and agent.
fn reference_choice(state: &RouterState, model: &Model) -> Option<(ConversationId, AgentId)> {
    let mut order: Vec<usize> = (0..state.queues.len()).collect();
    order.sort_by_key(|&qs| {
        let spec = &state.queues[qs].spec;
        (spec.priority, spec.id.clone())
    });
    for qs in order {
        let queue = &state.queues[qs];
        let mut waiting: Vec<(&ConversationId, &Record, WaitingConversation)> = state
            .records
            .iter()
            .flatten()
            .filter(|record| matches!(record.place, Place::Waiting(_)))
            .filter_map(|record| {
                let waiting = state.waiting_conversation(record)?;
                (waiting.queue == queue.spec.id).then_some((&*record.id, record, waiting))
            })
            .collect();
        waiting.sort_by_key(|(id, _, w)| (w.priority, w.since_ms, (*id).clone()));
        for (id, record, w) in waiting {
            let best = state
                .agents
                .iter()
                .flatten()
                .filter(|a| a.spec.queues.contains(&queue.spec.id))
                .filter(|a| a.effective() == Presence::Available)
                .filter(|a| a.free() >= w.units)
                .filter(|a| !record.excluded.contains(&a.spec.id))
                .filter_map(|a| {
                    let (class, short) = match classify(&a.spec.skills, &w.required_skills) {
                        Class::Exact => (0, 0),
                        Class::Over => (1, 0),
                        Class::Under(short) => (2, short),
                    };
                    let class = match queue.spec.skill_match {
                        SkillMatch::Exact if class == 2 => return None,
                        SkillMatch::Exact => 0,
                        SkillMatch::Closest => class,
                    };
                    let rank =
                        model.rank(queue.spec.assignment, &queue.spec.id, &a.spec.id, a.free());
                    Some((class, short, rank, a.spec.id.clone()))
                })
                .min();
            if let Some((.., agent)) = best {
                return Some((id.clone(), agent));
            }
        }
    }
    None
}

/// Checks every internal index against the facts it is derived from.
fn assert_consistent(state: &RouterState) {
    assert_bookkeeping(state);
    assert_agent_indexes(state);
}

/// Capacity, each conversation in exactly one place, groups, heads and holdings: cheap enough
/// to check after every operation.
fn assert_bookkeeping(state: &RouterState) {
    let mut waiting = 0;
    assert_eq!(
        state.conversations.len(),
        state.records.iter().flatten().count()
    );
    for &rid in &state.free_records {
        assert!(state.records[rid].is_none());
    }
    for (id, &rid) in &state.conversations {
        let record = state.record(rid);
        assert_eq!(record.id, *id);
        match record.place {
            Place::Waiting(group_id) => {
                waiting += 1;
                let group = state.groups[group_id].as_ref().expect("a live group");
                let queued = record.queued.expect("waiting records were queued");
                assert_eq!(group.queue, queued.queue);
                assert_eq!(group.req, queued.req);
                assert_eq!(group.units, record.units);
                assert_eq!(group.shared, record.excluded.is_empty());
                assert!(group.members.contains(&record.key(rid).unwrap()));
            }
            Place::Offered(slot) | Place::Assigned(slot) => {
                let agent = state.agents[slot].as_ref().expect("a live holder");
                assert!(agent.holdings.iter().any(|&held| held == rid));
            }
        }
    }
    assert_eq!(waiting, state.waiting);
    for &id in &state.free_groups {
        assert!(state.groups[id].is_none());
    }
    let live_groups = || {
        state
            .groups
            .iter()
            .enumerate()
            .filter_map(|(id, g)| Some((id, g.as_ref()?)))
    };
    let grouped: usize = live_groups().map(|(_, g)| g.members.len()).sum();
    assert_eq!(grouped, state.waiting);
    for (slot, agent) in state.agents.iter().enumerate() {
        let Some(agent) = agent else { continue };
        assert_eq!(state.agent_slots[&agent.spec.id], slot);
        assert_eq!(agent.agent.slot, slot);
        let (mut assigned, mut offered) = (0, 0);
        for &rid in agent.holdings.iter() {
            let record = state.record(rid);
            match record.place {
                Place::Offered(s) if s == slot => offered += record.units,
                Place::Assigned(s) if s == slot => assigned += record.units,
                other => panic!("{} held by {} but {other:?}", record.id, agent.spec.id),
            }
        }
        let distinct: BTreeSet<RecordId> = agent.holdings.iter().copied().collect();
        assert_eq!(distinct.len(), agent.holdings.iter().count());
        assert_eq!(agent.capacity, agent.spec.capacity);
        for link in agent.links.iter() {
            assert!(agent.memberships.iter().any(|m| m.queue == link.queue));
        }
        assert_eq!((assigned, offered), (agent.assigned, agent.offered));
        assert!(
            assigned + offered <= agent.capacity,
            "{} over capacity",
            agent.spec.id
        );
    }
    assert_eq!(
        state.agent_slots.len(),
        state.agents.iter().flatten().count()
    );
    let mut users: BTreeMap<(usize, ReqId), usize> = BTreeMap::new();
    let mut heads: Vec<BTreeSet<(ConvKey, GroupId)>> = vec![BTreeSet::new(); state.queues.len()];
    let mut shared = vec![0; state.queues.len()];
    let free_groups: BTreeSet<GroupId> = state.free_groups.iter().copied().collect();
    for (id, group) in live_groups() {
        assert!(!free_groups.contains(&id));
        assert!(state.queues[group.queue].skills.contains_key(&group.req));
        *users.entry((group.queue, group.req)).or_default() += 1;
        heads[group.queue].insert((group.members.first().unwrap().clone(), id));
        shared[group.queue] += usize::from(group.shared);
    }
    for (qs, queue) in state.queues.iter().enumerate() {
        assert_eq!(queue.heads, heads[qs]);
        for (&(req, units), id) in &queue.shared_groups {
            let group = state.groups[*id].as_ref().unwrap();
            assert!(group.shared && group.req == req && group.units == units);
        }
        assert_eq!(queue.shared_groups.len(), shared[qs]);
        for (&r, index) in &queue.skills {
            let users = users.get(&(qs, r)).copied().unwrap_or(0);
            assert_eq!(index.groups, users);
            assert_eq!(index.idle_stamp.is_some(), users == 0);
        }
    }
}

/// Rebuilds every agent index from the agents' skills, load and presence and compares.
fn assert_agent_indexes(state: &RouterState) {
    for (qs, queue) in state.queues.iter().enumerate() {
        let members: BTreeSet<Slot> = state
            .agents
            .iter()
            .flatten()
            .filter(|a| a.spec.queues.contains(&queue.spec.id))
            .map(|a| a.agent.slot)
            .collect();
        assert_eq!(queue.members, members, "members of {}", queue.spec.id);
        let mut by_req: BTreeMap<ReqId, (BTreeSet<RankKey>, BTreeSet<RankKey>)> = queue
            .skills
            .keys()
            .map(|&r| (r, Default::default()))
            .collect();
        for &slot in &members {
            let agent = state.agents[slot].as_ref().unwrap();
            let m = agent.memberships.iter().find(|m| m.queue == qs).unwrap();
            let expected_links: Vec<SkillLink> =
                qualifying(&agent.spec.skills, qs, queue, &state.requirements).collect();
            let mut links: Vec<SkillLink> = agent
                .links
                .iter()
                .copied()
                .filter(|link| link.queue == qs)
                .collect();
            links.sort();
            assert_eq!(links, expected_links);
            let rank = (agent.effective() == Presence::Available).then(|| {
                rank_of(
                    queue.spec.assignment,
                    agent.free(),
                    agent.last_assigned_ms,
                    m.rotation,
                )
            });
            // A touched agent's entries move at the next flush; until then the sets hold the
            // rank it was indexed under.
            if agent.dirty {
                assert!(state.dirty.contains(&slot));
            } else {
                assert_eq!(m.rank, rank, "{} in {}", agent.spec.id, queue.spec.id);
            }
            if let Some(rank) = m.rank {
                let key = RankKey {
                    rank,
                    agent: agent.agent.clone(),
                };
                for link in &links {
                    let sets = by_req.get_mut(&link.req).unwrap();
                    if link.over { &mut sets.1 } else { &mut sets.0 }.insert(key.clone());
                }
            }
        }
        for (r, (exact, over)) in by_req {
            let index = &queue.skills[&r];
            assert_eq!(index.exact.to_set(), exact);
            assert_eq!(index.over.to_set(), over);
        }
    }
}

#[test]
fn ten_thousand_random_operations_keep_every_invariant() {
    let mut rng = Rng(0x11AE_DE5C);
    let mut state = RouterState::new(RouterSettings {
        missed_offers_limit: 3,
    });
    let mut model = Model::default();
    for name in QUEUE_NAMES {
        state.upsert_queue(random_queue_spec(&mut rng, name));
        model.rotation.insert(queue(name), Vec::new());
    }
    let agents: Vec<AgentId> = (0..50).map(|i| agent(&format!("agent-{i:02}"))).collect();
    let mut capacity: BTreeMap<AgentId, u32> = BTreeMap::new();
    for id in &agents {
        let cap = 1 + rng.below(4) as u32;
        capacity.insert(id.clone(), cap);
        let spec = AgentSpec {
            id: id.clone(),
            capacity: cap,
            skills: random_skills(&mut rng, 3),
            queues: random_queues(&mut rng),
        };
        model.serve(id, &spec.queues);
        state.upsert_agent(spec).unwrap();
        if rng.chance(70) {
            state.set_presence(id, Presence::Available).unwrap();
        }
    }
    let mut expected: BTreeMap<ConversationId, Expected> = BTreeMap::new();
    let mut next_conversation = 0u32;
    let mut now = T0;
    let mut offers = 0;
    for step in 0..10_000 {
        now += rng.below(1_000) as i64;
        let roll = rng.below(100);
        let of = |want: fn(&Expected) -> bool, expected: &BTreeMap<ConversationId, Expected>| {
            expected
                .iter()
                .filter(|(_, e)| want(e))
                .map(|(c, e)| (c.clone(), e.clone()))
                .collect::<Vec<_>>()
        };
        match roll {
            0..=21 => {
                if state.waiting_len() > 150 {
                    continue;
                }
                next_conversation += 1;
                let w = WaitingConversation {
                    conversation: conv(next_conversation),
                    queue: queue(QUEUE_NAMES[rng.below(3) as usize]),
                    required_skills: random_skills(&mut rng, 2),
                    priority: rng.below(3) as i32 - 1,
                    since_ms: now - rng.below(5_000) as i64,
                    units: rng.below(3) as u32 + u32::from(rng.chance(90)),
                };
                if rng.chance(3) {
                    let unknown = WaitingConversation {
                        queue: queue("nope"),
                        ..w.clone()
                    };
                    assert!(state.enqueue(unknown).is_err());
                }
                state.enqueue(w).unwrap();
                expected.insert(conv(next_conversation), Expected::Waiting);
            }
            22..=49 => {
                let want = reference_choice(&state, &model);
                let offer = state.next_offer(now);
                let got = offer
                    .as_ref()
                    .map(|o| (o.conversation.clone(), o.agent.clone()));
                assert_eq!(got, want, "step {step}");
                if let Some(offer) = offer {
                    offers += 1;
                    model.offered(&offer.queue, &offer.agent);
                    expected.insert(offer.conversation, Expected::Offered(offer.agent));
                }
            }
            50..=61 => {
                let offered = of(|e| matches!(e, Expected::Offered(_)), &expected);
                if let Some((c, Expected::Offered(a))) = rng.pick(&offered).cloned() {
                    if rng.chance(10) {
                        let other = rng.pick(&agents).unwrap();
                        if *other != a {
                            assert!(state.accept(&c, other, now).is_err());
                        }
                    }
                    state.accept(&c, &a, now).unwrap();
                    model.last_assigned.insert(a.clone(), now);
                    assert_eq!(state.missed_in_a_row(&a), 0);
                    expected.insert(c, Expected::Assigned(a));
                }
            }
            62..=69 => {
                let offered = of(|e| matches!(e, Expected::Offered(_)), &expected);
                if let Some((c, Expected::Offered(a))) = rng.pick(&offered).cloned() {
                    let before = state.missed_in_a_row(&a);
                    let limit = state.decline(&c, &a).unwrap();
                    assert_eq!(state.missed_in_a_row(&a), before + 1);
                    assert_eq!(limit, before + 1 >= 3);
                    expected.insert(c, Expected::Waiting);
                }
            }
            70..=77 => {
                let held = of(|e| !matches!(e, Expected::Waiting), &expected);
                if let Some((c, Expected::Offered(a) | Expected::Assigned(a))) =
                    rng.pick(&held).cloned()
                {
                    state.release(&c, &a).unwrap();
                    assert!(state.release(&c, &a).is_err());
                    expected.remove(&c);
                }
            }
            78..=84 => {
                let id = rng.pick(&agents).unwrap().clone();
                let presence = [
                    Presence::Available,
                    Presence::Available,
                    Presence::Busy,
                    Presence::DoNotDisturb,
                    Presence::Away,
                    Presence::Offline,
                ][rng.below(6) as usize];
                match state.set_presence(&id, presence) {
                    Ok(effective) => {
                        let (assigned, offered, cap) = state.load(&id).unwrap();
                        let full = assigned + offered >= cap;
                        let want = if presence == Presence::Available && full {
                            Presence::Busy
                        } else {
                            presence
                        };
                        assert_eq!(effective, want);
                    }
                    Err(RouterError::UnknownAgent(_)) => assert!(state.load(&id).is_none()),
                    Err(e) => panic!("{e}"),
                }
            }
            85..=88 => {
                let id = rng.pick(&agents).unwrap().clone();
                let cap = capacity[&id] + rng.below(2) as u32;
                capacity.insert(id.clone(), cap);
                let known = state.load(&id).is_some();
                let spec = AgentSpec {
                    id: id.clone(),
                    capacity: cap,
                    skills: random_skills(&mut rng, 3),
                    queues: random_queues(&mut rng),
                };
                model.serve(&id, &spec.queues);
                state.upsert_agent(spec).unwrap();
                if !known {
                    state.set_presence(&id, Presence::Available).unwrap();
                }
            }
            89 => {
                let id = rng.pick(&agents).unwrap().clone();
                let held = state.remove_agent(&id);
                model.removed(&id);
                for h in held {
                    let was = expected.remove(&h.conversation);
                    match h.kind {
                        HoldKind::Offered => assert_eq!(was, Some(Expected::Offered(id.clone()))),
                        HoldKind::Assigned => {
                            assert_eq!(was, Some(Expected::Assigned(id.clone())))
                        }
                    }
                    if let Some(w) = h.queued_as.filter(|_| rng.chance(70)) {
                        let c = w.conversation.clone();
                        state.enqueue(w).unwrap();
                        expected.insert(c, Expected::Waiting);
                    }
                }
            }
            90..=93 => {
                let waiting = of(|e| matches!(e, Expected::Waiting), &expected);
                if let Some((c, _)) = rng.pick(&waiting).cloned() {
                    assert_eq!(state.dequeue(&c).map(|w| w.conversation), Some(c.clone()));
                    expected.remove(&c);
                }
            }
            94..=95 => {
                let id = rng.pick(&agents).unwrap().clone();
                next_conversation += 1;
                let c = conv(next_conversation);
                let units = rng.below(3) as u32;
                match (state.load(&id), state.reserve_direct(&c, &id, units)) {
                    (Some((a, o, cap)), Ok(())) => {
                        assert!(a + o + units <= cap);
                        expected.insert(c, Expected::Assigned(id));
                    }
                    (Some((a, o, cap)), Err(RouterError::Overbooked { .. })) => {
                        assert!(a + o + units > cap)
                    }
                    (None, Err(RouterError::UnknownAgent(_))) => {}
                    other => panic!("{other:?}"),
                }
            }
            96 => {
                let name = QUEUE_NAMES[rng.below(3) as usize];
                state.upsert_queue(random_queue_spec(&mut rng, name));
            }
            _ => {
                let waiting = of(|e| matches!(e, Expected::Waiting), &expected);
                if let Some((c, _)) = rng.pick(&waiting).cloned() {
                    let position = state.position(&c).unwrap();
                    assert!(position >= 1 && position <= state.waiting_len());
                }
            }
        }
        assert_bookkeeping(&state);
        // Rebuilding every agent index is the slow part; wrong indexes also show up at once as
        // a `next_offer` that differs from `reference_choice`.
        if step % 10 == 0 {
            assert_agent_indexes(&state);
        }
        assert_eq!(
            state.waiting_len(),
            expected
                .values()
                .filter(|e| **e == Expected::Waiting)
                .count()
        );
        for (c, e) in &expected {
            let status = state.status(c);
            let want = match e {
                Expected::Waiting => RoutingStatus::Waiting,
                Expected::Offered(a) => RoutingStatus::Offered(a.clone()),
                Expected::Assigned(a) => RoutingStatus::Assigned(a.clone()),
            };
            assert_eq!(status, Some(want), "step {step}: {c}");
        }
        assert_eq!(state.conversations.len(), expected.len());
    }
    assert!(
        offers > 1_000,
        "only {offers} offers: the mix does not exercise routing"
    );
}
