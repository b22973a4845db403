//! The router actor's restore after a restart: chunks of open conversations arriving while the
//! conversations' own actors already report to the router.

use std::time::Duration;

use super::*;
use crate::conversation::{RoutingInfo, Status};
use crate::router::state::{Assignment, QueueId, QueueSpec, SkillMatch};

const T0: i64 = 1_700_000_000_000;

fn conv(n: u32) -> ConversationId {
    ConversationId::parse(&format!("demo.user.U{n}.1")).unwrap()
}

fn general() -> QueuePolicy {
    QueuePolicy {
        spec: QueueSpec {
            id: QueueId::parse("general").unwrap(),
            priority: 0,
            assignment: Assignment::HighestCapacity,
            skill_match: SkillMatch::Exact,
        },
        offer_timeout: Duration::from_secs(60),
        auto_accept: false,
        overflow: OverflowPolicy::default(),
    }
}

/// As its last snapshot has it: waiting in "general".
fn queued(n: u32) -> OpenConversation {
    OpenConversation {
        conversation: conv(n),
        status: Status::Queued,
        agent: None,
        routing: Some(RoutingInfo {
            workstream: "support".into(),
            queue: "general".into(),
            skills: Default::default(),
            priority: 0,
            units: 1,
            rule: None,
            direct_to: None,
        }),
        since_ms: T0 + i64::from(n),
        capacity_held: false,
    }
}

fn queued_notice(n: u32) -> ConversationNotice {
    ConversationNotice::Queued {
        conversation: conv(n),
        queue: "general".into(),
        skills: Default::default(),
        priority: 0,
        since_ms: T0 + i64::from(n),
        units: 1,
        direct_to: None,
    }
}

async fn waiting(router: &Addr<Router>) -> usize {
    router.send(GetRouterStats).await.unwrap().waiting
}

#[actix::test]
async fn a_restore_chunk_skips_conversations_whose_actors_spoke_since_start_up() {
    let router = Router::new(vec![general()], 3).restoring().start();
    // 1 wrote after the restart and queued itself; 2 closed after its chunk was read.
    router.send(queued_notice(1)).await.unwrap();
    router
        .send(ConversationNotice::Closed {
            conversation: conv(2),
        })
        .await
        .unwrap();

    let first = RestoreRouting {
        conversations: vec![queued(1), queued(2)],
        last: false,
    };
    assert_eq!(router.send(first).await.unwrap(), 0);
    let last = RestoreRouting {
        conversations: vec![queued(3)],
        last: true,
    };
    assert_eq!(router.send(last).await.unwrap(), 1);

    assert_eq!(
        waiting(&router).await,
        2,
        "1 and 3 wait, once each; 2 stays closed"
    );
    assert_eq!(
        router
            .send(GetQueuePosition {
                conversation: conv(1)
            })
            .await
            .unwrap(),
        Some(1)
    );
}

#[actix::test]
async fn a_router_not_told_to_expect_a_restore_still_restores_each_conversation_once() {
    let router = Router::new(vec![general()], 3).start();
    router.send(queued_notice(1)).await.unwrap();
    let chunk = RestoreRouting {
        conversations: vec![queued(1), queued(2)],
        last: true,
    };
    assert_eq!(router.send(chunk).await.unwrap(), 1);
    assert_eq!(waiting(&router).await, 2);
}
