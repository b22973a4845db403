//! Routing decisions per second in a busy contact centre: 10,000 agents (capacity 5, three
//! queues, a few skills) and 100,000 conversations waiting. Run:
//! `cargo bench --bench router -- --warm-up-time 1 --measurement-time 5`.
//!
//! One iteration is one full decision cycle in steady state: `next_offer`, `accept`, `release`
//! (the agent frees again) and `enqueue` of a replacement, so the sizes stay constant. The
//! replacement goes to the queues in turn, so after the first ~100,000 decisions every queue and
//! requirement set is served. One benchmark per assignment method (all queues use it), and one
//! with a different method per queue. Target: at least 500,000 decisions per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use linedesk_actors::domain::{AccountId, AgentId, ConversationId, ConversationKey, LineSource};
use linedesk_actors::router::{
    AgentSpec, Assignment, Presence, QueueId, QueueSpec, RouterState, SkillMatch, Skills,
    WaitingConversation,
};

const AGENTS: usize = 10_000;
const WAITING: u32 = 100_000;
const T0: i64 = 1_700_000_000_000;

fn skills(pairs: &[(&str, u8)]) -> Skills {
    pairs.iter().map(|&(s, l)| (s.to_owned(), l)).collect()
}

/// Queue i, its skill mode, and the requirement sets its conversations come with.
fn queues() -> Vec<(QueueId, SkillMatch, Vec<Skills>)> {
    vec![
        (
            QueueId::parse("chat").unwrap(),
            SkillMatch::Closest,
            vec![Skills::new(), skills(&[("thai", 5)])],
        ),
        (
            QueueId::parse("billing").unwrap(),
            SkillMatch::Exact,
            vec![
                skills(&[("billing", 3)]),
                skills(&[("billing", 6), ("english", 4)]),
            ],
        ),
        (
            QueueId::parse("tech").unwrap(),
            SkillMatch::Closest,
            vec![
                skills(&[("network", 5)]),
                skills(&[("network", 3), ("thai", 3)]),
            ],
        ),
    ]
}

/// The conversation source of the `n`th customer.
fn chat(account: &AccountId, n: u32) -> ConversationKey {
    ConversationKey::new(
        account.clone(),
        LineSource::user(format!("U{n:08x}")).unwrap(),
    )
}

struct Cycle {
    state: RouterState,
    queues: Vec<(QueueId, SkillMatch, Vec<Skills>)>,
    now: i64,
    turn: usize,
}

impl Cycle {
    fn build(assignments: [Assignment; 3]) -> Self {
        let mut state = RouterState::default();
        let queues = queues();
        for (priority, ((id, skill_match, _), assignment)) in
            queues.iter().zip(assignments).enumerate()
        {
            state.upsert_queue(QueueSpec {
                id: id.clone(),
                priority: priority as u32,
                assignment,
                skill_match: *skill_match,
            });
        }
        for i in 0..AGENTS {
            let level = |salt: usize| 1 + ((i * 7 + salt * 13) % 10) as u8;
            let id = AgentId::parse(format!("agent-{i:05}")).unwrap();
            // Everyone serves one queue, every other agent a second one.
            let mut serves = vec![queues[i % 3].0.clone()];
            if i % 2 == 0 {
                serves.push(queues[(i + 1) % 3].0.clone());
            }
            state
                .upsert_agent(AgentSpec {
                    id: id.clone(),
                    capacity: 5,
                    skills: skills(&[
                        ("thai", level(1)),
                        ("english", level(2)),
                        ("billing", level(3)),
                        ("network", level(4)),
                    ]),
                    queues: serves,
                })
                .unwrap();
            state.set_presence(&id, Presence::Available).unwrap();
        }
        let account = AccountId::parse("demo").unwrap();
        let mut cycle = Self {
            state,
            queues,
            now: T0,
            turn: 0,
        };
        for n in 0..WAITING {
            let waiting = cycle.replacement(ConversationId::new(chat(&account, n), 1));
            cycle.state.enqueue(waiting).unwrap();
        }
        cycle
    }

    /// The next conversation to queue: queues and requirement sets in turn.
    fn replacement(&mut self, conversation: ConversationId) -> WaitingConversation {
        self.now += 1;
        self.turn += 1;
        let (queue, _, needs) = &self.queues[self.turn % 3];
        WaitingConversation {
            conversation,
            queue: queue.clone(),
            required_skills: needs[(self.turn / 3) % needs.len()].clone(),
            priority: 0,
            since_ms: self.now,
            units: 1,
        }
    }

    /// One decision: offer, accept, release, and the customer's next conversation queues.
    fn decide(&mut self) {
        let offer = self.state.next_offer(self.now).expect("an agent is free");
        self.state
            .accept(&offer.conversation, &offer.agent, self.now)
            .unwrap();
        self.state
            .release(&offer.conversation, &offer.agent)
            .unwrap();
        let next = ConversationId::new(offer.conversation.key, offer.conversation.number + 1);
        let waiting = self.replacement(next);
        self.state.enqueue(waiting).unwrap();
        black_box(&offer.agent);
    }
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("router_decision");
    group.throughput(Throughput::Elements(1));
    let runs = [
        ("highest_capacity", [Assignment::HighestCapacity; 3]),
        ("round_robin", [Assignment::RoundRobin; 3]),
        ("most_idle", [Assignment::MostIdle; 3]),
        (
            "mixed",
            [
                Assignment::HighestCapacity,
                Assignment::RoundRobin,
                Assignment::MostIdle,
            ],
        ),
    ];
    for (name, assignments) in runs {
        let mut cycle = Cycle::build(assignments);
        // Reach the steady state first: every queue being served, not only the first.
        for _ in 0..WAITING {
            cycle.decide();
        }
        assert_eq!(cycle.state.waiting_len(), WAITING as usize);
        group.bench_function(name, |b| b.iter(|| cycle.decide()));
        assert_eq!(cycle.state.waiting_len(), WAITING as usize);
    }
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
