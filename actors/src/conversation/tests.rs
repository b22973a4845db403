//! Actor tests: the registry and conversation actors over the in-memory store.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::memory_store::MemoryStore;
use super::*;
use crate::domain::{
    AccountId, AgentId, Content, ConversationId, ConversationKey, Inbound, InboundKind, LineSource,
};

fn key(user: &str) -> ConversationKey {
    ConversationKey::new(
        AccountId::parse("demo").unwrap(),
        LineSource::user(user).unwrap(),
    )
}

fn text(seq: u64, text: &str) -> Inbound {
    Inbound {
        seq,
        webhook_event_id: format!("E{seq}"),
        at_ms: 1,
        received_at_ms: actor::now_ms(),
        sender: None,
        reply_token: None,
        redelivery: false,
        kind: InboundKind::Message {
            message_id: format!("m{seq}"),
            content: Content::Text { text: text.into() },
            quote_token: None,
        },
    }
}

fn runtime() -> RuntimeSettings {
    RuntimeSettings {
        snapshot_every: 1_000,
        idle_passivate: Duration::from_secs(3_600),
        timer_resolution: Duration::from_millis(20),
        arbiters: 2,
    }
}

fn start(
    store: &Arc<MemoryStore>,
    settings: ConversationSettings,
    runtime: RuntimeSettings,
) -> Addr<Registry> {
    Registry::new(store.clone(), settings, runtime).start()
}

async fn get(registry: &Addr<Registry>, key: &ConversationKey) -> ConversationView {
    registry
        .send(AskConversation {
            key: key.clone(),
            question: Question::Get,
        })
        .await
        .unwrap()
        .unwrap()
}

fn texts(view: &ConversationView) -> Vec<String> {
    view.state
        .current
        .as_ref()
        .map(|c| c.transcript.iter().map(|e| e.preview()).collect())
        .unwrap_or_default()
}

/// `agent` doing `action` to the conversation of `key`.
fn as_agent(key: &ConversationKey, agent: &AgentId, action: AgentAction) -> AskConversation {
    AskConversation {
        key: key.clone(),
        question: Question::Agent(ApplyAgentAction {
            agent: agent.clone(),
            action,
        }),
    }
}

/// Polls `check` until it holds, for at most 30 s (the machine may be loaded).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        actix::clock::sleep(Duration::from_millis(10)).await;
    }
}

#[actix::test]
async fn notices_go_straight_to_live_actors_in_order_even_those_stored_before_the_registry_started()
{
    let store = Arc::new(MemoryStore::default());
    // Every event saved: the snapshots show what the notices alone brought (a question would
    // read the journal first).
    let runtime = RuntimeSettings {
        snapshot_every: 1,
        ..runtime()
    };
    let registry = Registry::new(store.clone(), ConversationSettings::default(), runtime);
    let live = registry.live_conversations();
    let (a, b) = (key("Ua"), key("Ub"));
    // Stored before the registry runs: applied once it starts (its notice waits for it, and
    // the start resumes every chat whose journal is ahead anyway).
    store.append(&a, text(1, "early"));
    live.stored(EventsStored {
        key: a.clone(),
        seq: 1,
        events: vec![text(1, "early")],
    });
    let registry = registry.start();
    let applied = |k: &ConversationKey| store.snapshot(k).map(|s| s.applied_seq);
    eventually("the early notice delivered", || {
        let done = applied(&a) == Some(1);
        async move { done }
    })
    .await;
    // Then straight from the storing thread, interleaved across chats; a notice carrying no
    // events makes its actor read the journal.
    for (seq, k, t) in [(2, &a, "a2"), (3, &b, "b3"), (4, &a, "a4"), (5, &b, "b5")] {
        store.append(k, text(seq, t));
        let events = if seq == 5 {
            Vec::new()
        } else {
            vec![text(seq, t)]
        };
        live.stored(EventsStored {
            key: k.clone(),
            seq,
            events,
        });
    }
    eventually("both chats applied", || {
        let done = applied(&a) == Some(4) && applied(&b) == Some(5);
        async move { done }
    })
    .await;
    assert_eq!(texts(&get(&registry, &a).await), ["early", "a2", "a4"]);
    assert_eq!(texts(&get(&registry, &b).await), ["b3", "b5"]);
    let stats = registry.send(GetRegistryStats).await.unwrap();
    assert_eq!((stats.started, stats.live), (2, 2));
}

#[actix::test]
async fn questions_go_straight_to_the_actor_once_the_registry_is_launched() {
    let store = Arc::new(MemoryStore::default());
    let registry = Registry::new(store.clone(), ConversationSettings::default(), runtime());
    let live = registry.live_conversations();
    let k = key("Ua");
    store.append(&k, text(1, "hello"));
    let ask = || AskConversation {
        key: k.clone(),
        question: Question::Get,
    };
    // Not launched: an error to pass on, not a hang or a panic.
    assert!(matches!(
        live.ask(ask()).await,
        Err(ConversationError::Unreachable(_))
    ));
    let registry = registry.launch();
    // Asked at once, before the registry's own start ran: the actor starts and reads the
    // journal.
    let view = live.ask(ask()).await.unwrap();
    assert_eq!(texts(&view), ["hello"]);
    // The registry's mailbox answers from the same actor.
    assert_eq!(get(&registry, &k).await.state.applied_seq, 1);
    let stats = registry.send(GetRegistryStats).await.unwrap();
    assert_eq!((stats.started, stats.live), (1, 1));
}

#[actix::test]
async fn events_are_applied_in_order_and_a_state_change_is_snapshotted() {
    let store = Arc::new(MemoryStore::default());
    let registry = start(&store, ConversationSettings::default(), runtime());
    let k = key("Ua");
    for (seq, t) in [(1, "one"), (2, "two"), (3, "three")] {
        store.append(&k, text(seq, t));
        registry.do_send(EventsStored {
            events: Vec::new(),
            key: k.clone(),
            seq,
        });
    }
    let view = get(&registry, &k).await;
    assert_eq!(texts(&view), ["one", "two", "three"]);
    assert_eq!(view.state.applied_seq, 3);
    let snapshot = store
        .snapshot(&k)
        .expect("opening a conversation is snapshotted");
    assert_eq!(snapshot.current.unwrap().status, Status::Queued);
}

#[actix::test]
async fn a_timer_entry_no_snapshot_names_is_discarded_when_it_fires_and_changes_nothing() {
    let store = Arc::new(MemoryStore::default());
    let registry = start(&store, ConversationSettings::default(), runtime());
    let k = key("Ua");
    store.append(&k, text(1, "one"));
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: k.clone(),
        seq: 1,
    });
    let before = get(&registry, &k).await;
    assert_eq!(
        before.state.current.as_ref().unwrap().status,
        Status::Queued
    );
    store.add_stray_timer(DueTimer {
        key: k.clone(),
        deadline_ms: 5,
    });
    eventually("the stray entry is discarded", || async {
        store.stray_timers() == 0
    })
    .await;
    let after = get(&registry, &k).await;
    assert_eq!(after.state, before.state, "the conversation did not move");
}

#[actix::test]
async fn events_handed_over_with_their_notice_are_applied_without_reading_the_journal() {
    let store = Arc::new(MemoryStore::default());
    let registry = start(&store, ConversationSettings::default(), runtime());
    let k = key("Ua");
    // Nothing in the store's journal: what is applied can only come from the notices.
    registry.do_send(EventsStored {
        key: k.clone(),
        seq: 2,
        events: vec![text(1, "one"), text(2, "two")],
    });
    registry.do_send(EventsStored {
        key: k.clone(),
        seq: 3,
        events: vec![text(2, "two again"), text(3, "three")],
    });
    let view = get(&registry, &k).await;
    assert_eq!(
        texts(&view),
        ["one", "two", "three"],
        "an event is applied once"
    );
    assert_eq!(view.state.applied_seq, 3);
}

#[actix::test]
async fn after_a_notice_it_could_not_apply_a_conversation_reads_the_journal() {
    let store = Arc::new(MemoryStore::default());
    let registry = start(&store, ConversationSettings::default(), runtime());
    let k = key("Ua");
    // Told of seq 1 without the event, before the journal holds it: nothing to apply yet.
    registry.do_send(EventsStored {
        key: k.clone(),
        seq: 1,
        events: Vec::new(),
    });
    assert!(texts(&get(&registry, &k).await).is_empty());
    store.append(&k, text(1, "one"));
    store.append(&k, text(2, "two"));
    // This notice carries only seq 2; seq 1 must come from the journal, before it.
    registry.do_send(EventsStored {
        key: k.clone(),
        seq: 2,
        events: vec![text(2, "two")],
    });
    let view = get(&registry, &k).await;
    assert_eq!(texts(&view), ["one", "two"]);
}

#[actix::test]
async fn a_restart_replays_the_journal_after_the_snapshot_exactly_once() {
    let store = Arc::new(MemoryStore::default());
    let k = key("Ua");
    {
        let registry = start(&store, ConversationSettings::default(), runtime());
        store.append(&k, text(1, "before"));
        registry.do_send(EventsStored {
            events: Vec::new(),
            key: k.clone(),
            seq: 1,
        });
        get(&registry, &k).await;
    }
    // Events stored but never applied (as after kill -9), then a new registry on the same store.
    store.append(&k, text(2, "after one"));
    store.append(&k, text(3, "after two"));
    let registry = start(&store, ConversationSettings::default(), runtime());
    // Resumed at start-up without any new notification:
    eventually("pending conversation resumed", || async {
        store.snapshot(&k).is_some_and(|s| s.applied_seq == 3)
    })
    .await;
    // A late, duplicate notification changes nothing.
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: k.clone(),
        seq: 2,
    });
    let view = get(&registry, &k).await;
    assert_eq!(texts(&view), ["before", "after one", "after two"]);
}

#[actix::test]
async fn an_idle_conversation_passivates_and_comes_back_from_storage() {
    let store = Arc::new(MemoryStore::default());
    let runtime = RuntimeSettings {
        idle_passivate: Duration::from_millis(50),
        ..runtime()
    };
    let registry = start(&store, ConversationSettings::default(), runtime);
    let keys: Vec<_> = (0..20).map(|i| key(&format!("U{i}"))).collect();
    for (i, k) in keys.iter().enumerate() {
        store.append(k, text(i as u64 + 1, "hi"));
        registry.do_send(EventsStored {
            events: Vec::new(),
            key: k.clone(),
            seq: i as u64 + 1,
        });
    }
    eventually("all started", || async {
        registry.send(GetRegistryStats).await.unwrap().started == 20
    })
    .await;
    eventually("all passivated", || async {
        registry.send(GetRegistryStats).await.unwrap().live == 0
    })
    .await;

    store.append(&keys[0], text(100, "again"));
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: keys[0].clone(),
        seq: 100,
    });
    let view = get(&registry, &keys[0]).await;
    assert_eq!(texts(&view), ["hi", "again"]);
    let stats = registry.send(GetRegistryStats).await.unwrap();
    assert_eq!(stats.passivated, 20);
    assert_eq!(stats.started, 21);
}

#[cfg(feature = "fault-injection")]
#[actix::test]
async fn an_injected_fault_restarts_one_conversation_while_others_go_on() {
    let store = Arc::new(MemoryStore::default());
    let registry = start(&store, ConversationSettings::default(), runtime());
    let (a, b) = (key("Ua"), key("Ub"));
    store.append(&a, text(1, "a1"));
    store.append(&b, text(2, "b1"));
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: a.clone(),
        seq: 1,
    });
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: b.clone(),
        seq: 2,
    });
    get(&registry, &a).await;

    registry
        .send(AskConversation {
            key: a.clone(),
            question: Question::InjectFault,
        })
        .await
        .unwrap()
        .unwrap();
    store.append(&a, text(3, "a2"));
    store.append(&b, text(4, "b2"));
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: a.clone(),
        seq: 3,
    });
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: b.clone(),
        seq: 4,
    });

    let view_b = get(&registry, &b).await;
    assert_eq!(texts(&view_b), ["b1", "b2"]);
    assert_eq!(view_b.restarts, 0);
    eventually("a restarted and caught up", || async {
        match registry
            .send(AskConversation {
                key: a.clone(),
                question: Question::Get,
            })
            .await
        {
            Ok(Ok(view)) => view.restarts == 1 && texts(&view) == ["a1", "a2"],
            _ => false,
        }
    })
    .await;
}

#[actix::test]
async fn the_queued_timer_fires_through_the_registry() {
    let store = Arc::new(MemoryStore::default());
    let settings = ConversationSettings {
        queued_timeout: Duration::from_millis(100),
        ..ConversationSettings::default()
    };
    let registry = start(&store, settings, runtime());
    let k = key("Ua");
    store.append(&k, text(1, "anyone?"));
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: k.clone(),
        seq: 1,
    });
    get(&registry, &k).await;
    let id = ConversationId::new(k.clone(), 1);
    eventually("queued conversation closed by its timer", || async {
        store.archived(&id).is_some()
    })
    .await;
    let closed = store.archived(&id).unwrap();
    assert_eq!(closed.status, Status::Closed);
    assert!(matches!(
        closed.transitions.last().unwrap().cause,
        Cause::Timeout { after_ms: 100 }
    ));
    let view = get(&registry, &k).await;
    assert_eq!(view.state.current, None);
    assert_eq!(view.state.history, [id]);
}

#[actix::test]
async fn an_agent_action_comes_after_every_event_stored_before_it_even_with_its_notice_in_flight() {
    let store = Arc::new(MemoryStore::default());
    let registry = start(&store, ConversationSettings::default(), runtime());
    let k = key("Ua");
    let alice = AgentId::parse("alice").unwrap();
    store.append(&k, text(1, "first question"));
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: k.clone(),
        seq: 1,
    });
    assert_eq!(texts(&get(&registry, &k).await), ["first question"]);
    // Stored, its notice not sent yet: the writer answers LINE before it tells the actor.
    store.append(&k, text(2, "and a second one"));
    let view = registry
        .send(as_agent(&k, &alice, AgentAction::Assign))
        .await
        .unwrap()
        .unwrap();
    let current = view.state.current.as_ref().unwrap();
    assert_eq!(current.status, Status::Active);
    use crate::agent::RecentMessage;
    let recent: Vec<String> = RecentMessage::latest(&view.state, RecentMessage::SHOWN)
        .into_iter()
        .map(|m| m.preview)
        .collect();
    assert_eq!(recent, ["first question", "and a second one"]);
    // The late notice changes nothing more.
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: k.clone(),
        seq: 2,
    });
    assert_eq!(
        texts(&get(&registry, &k).await),
        ["first question", "and a second one"]
    );
}

#[actix::test]
async fn agent_actions_drive_active_waiting_and_wrap_up_timers() {
    let store = Arc::new(MemoryStore::default());
    let settings = ConversationSettings {
        waiting_timeout: Duration::from_millis(100),
        ..ConversationSettings::default()
    };
    let registry = start(&store, settings, runtime());
    let k = key("Ua");
    let alice = AgentId::parse("alice").unwrap();
    store.append(&k, text(1, "help"));
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: k.clone(),
        seq: 1,
    });
    let act = |action| as_agent(&k, &alice, action);
    let view = registry
        .send(act(AgentAction::Assign))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.state.current.unwrap().status, Status::Active);
    let refused = registry.send(act(AgentAction::WrapUpDone)).await.unwrap();
    assert!(
        matches!(refused, Err(ConversationError::Transition(_))),
        "{refused:?}"
    );
    let view = registry
        .send(act(AgentAction::SetWaiting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.state.current.unwrap().status, Status::Waiting);

    let id = ConversationId::new(k.clone(), 1);
    eventually("waiting conversation closed by its timer", || async {
        store.archived(&id).is_some()
    })
    .await;
    let closed = store.archived(&id).unwrap();
    let path: Vec<Status> = closed.transitions.iter().map(|t| t.to).collect();
    assert_eq!(
        path,
        [
            Status::Open,
            Status::Queued,
            Status::Active,
            Status::Waiting,
            Status::Closed
        ]
    );
}

#[actix::test]
async fn an_agent_action_answers_with_the_latest_entries_not_the_whole_transcript() {
    let store = Arc::new(MemoryStore::default());
    let registry = start(&store, ConversationSettings::default(), runtime());
    let k = key("Ua");
    let alice = AgentId::parse("alice").unwrap();
    for seq in 1..=30 {
        store.append(&k, text(seq, &format!("message {seq}")));
    }
    registry.do_send(EventsStored {
        events: Vec::new(),
        key: k.clone(),
        seq: 30,
    });
    let act = |action| as_agent(&k, &alice, action);
    // The new assignee is shown the conversation so far, as far back as agents are shown.
    let assigned = registry
        .send(act(AgentAction::Assign))
        .await
        .unwrap()
        .unwrap();
    let shown = texts(&assigned);
    assert_eq!(shown.len(), 20, "{shown:?}");
    assert_eq!(
        (shown[0].as_str(), assigned.transcript_from),
        ("message 11", 10)
    );

    let note = AgentAction::Note {
        text: "regular customer".into(),
    };
    let noted = registry.send(act(note)).await.unwrap().unwrap();
    assert!(noted.changed);
    assert_eq!((texts(&noted).len(), noted.transcript_from), (0, 31));

    let whole = get(&registry, &k).await;
    assert_eq!(whole.transcript_from, 0);
    let all = texts(&whole);
    assert_eq!(all.len(), 31, "the conversation keeps every entry");
    assert_eq!(all[30], "regular customer");
}

mod automated_order {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::domain::{CustomerProfile, Outgoing, Trigger};
    use crate::outbound::{ContactBook, OutboundLinks, Outbox};
    use crate::router::messages::{ConversationNotice, GetQueuePosition};
    use crate::workstream::{AutomatedMessage, RoutingTable, Workstream};

    #[derive(Default)]
    struct Recorded(Mutex<Vec<Outgoing>>);

    impl Outbox for Recorded {
        fn enqueue(&self, outgoing: &Outgoing, known_new: bool) -> Result<bool, StoreError> {
            let mut stored = self.0.lock().unwrap();
            if stored.iter().any(|o| o.id == outgoing.id) {
                assert!(!known_new, "{} was said to be new", outgoing.id);
                return Ok(false);
            }
            stored.push(outgoing.clone());
            Ok(true)
        }

        fn stored_for(
            &self,
            conversation: &crate::domain::ConversationId,
        ) -> Result<Vec<String>, StoreError> {
            let stored = self.0.lock().unwrap();
            let of = |o: &&Outgoing| &o.conversation == conversation;
            Ok(stored.iter().filter(of).map(|o| o.id.clone()).collect())
        }
    }

    struct NoProfiles;

    impl ContactBook for NoProfiles {
        fn cached(&self, _: &ConversationKey) -> Option<CustomerProfile> {
            None
        }
    }

    /// A router that answers the queue position only when the test says so.
    struct SlowRouter(Arc<AtomicBool>);

    impl Actor for SlowRouter {
        type Context = Context<Self>;
    }

    impl Handler<ConversationNotice> for SlowRouter {
        type Result = ();
        fn handle(&mut self, _: ConversationNotice, _: &mut Self::Context) {}
    }

    impl Handler<GetQueuePosition> for SlowRouter {
        type Result = ResponseFuture<Option<usize>>;
        fn handle(&mut self, _: GetQueuePosition, _: &mut Self::Context) -> Self::Result {
            let go = self.0.clone();
            Box::pin(async move {
                for _ in 0..30_000 {
                    if go.load(Ordering::SeqCst) {
                        break;
                    }
                    actix::clock::sleep(Duration::from_millis(1)).await;
                }
                Some(1)
            })
        }
    }

    /// Routing by `table()` through `router`, messages to `outbox`.
    fn links(outbox: &Arc<Recorded>, router: Addr<SlowRouter>) -> ConversationLinks {
        ConversationLinks {
            routing: Arc::new(table()),
            router: Some(router.clone().recipient()),
            positions: Some(router.recipient()),
            agents: Arc::new(Default::default()),
            outbound: Some(OutboundLinks {
                outbox: outbox.clone(),
                contacts: Arc::new(NoProfiles),
                lookup: None,
                reply_token_ttl: Duration::from_secs(50),
                profile_wait: Duration::from_secs(1),
            }),
        }
    }

    fn table() -> RoutingTable {
        let mut table = RoutingTable {
            workstreams: vec![Workstream {
                id: "support".into(),
                account: AccountId::parse("demo").unwrap(),
                language: "en".into(),
                default_queue: "general".into(),
                fallback_queue: "general".into(),
                keep_same_agent: false,
                capacity_units: 1,
                show_sender: false,
                customer_attachments: true,
                agent_attachments: true,
                hours: None,
            }],
            queues: vec!["general".into()],
            agent_names: [(AgentId::parse("alice").unwrap(), "Alice".to_owned())].into(),
            ..RoutingTable::default()
        };
        for (trigger, text) in [
            (Trigger::Greeting, "hello"),
            (Trigger::Queued, "you are number {position}"),
            (Trigger::Assigned, "{agent_name} here"),
        ] {
            let texts = BTreeMap::from([("en".to_owned(), text.to_owned())]);
            let message = AutomatedMessage {
                enabled: true,
                texts,
            };
            table.automated.insert("support", trigger, message);
        }
        table
    }

    #[actix::test]
    async fn an_agent_accepting_before_the_queue_position_is_known_is_announced_after_it() {
        let store = Arc::new(MemoryStore::default());
        let outbox = Arc::new(Recorded::default());
        let go = Arc::new(AtomicBool::new(false));
        let links = links(&outbox, SlowRouter(go.clone()).start());
        let registry = Registry::new(store.clone(), ConversationSettings::default(), runtime())
            .with_links(links)
            .start();
        let k = key("Ua");
        registry.do_send(EventsStored {
            key: k.clone(),
            seq: 1,
            events: vec![text(1, "help")],
        });
        let view = get(&registry, &k).await;
        assert_eq!(view.state.current.unwrap().status, Status::Queued);
        // The router offered it and the agent accepted while the position is still asked for.
        registry
            .send(AskConversation {
                key: k.clone(),
                question: Question::Agent(ApplyAgentAction {
                    agent: AgentId::parse("alice").unwrap(),
                    action: AgentAction::Assign,
                }),
            })
            .await
            .unwrap()
            .unwrap();
        assert!(
            outbox.0.lock().unwrap().is_empty(),
            "the assigned notice waits"
        );
        go.store(true, Ordering::SeqCst);
        eventually("both notices stored", || async {
            outbox.0.lock().unwrap().len() == 2
        })
        .await;
        let texts: Vec<Vec<String>> = outbox
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|o| o.contents.iter().map(|c| c.preview()).collect())
            .collect();
        assert_eq!(
            texts,
            [
                vec!["hello".to_owned(), "you are number 1".to_owned()],
                vec!["Alice here".to_owned()]
            ]
        );
    }

    /// A crash after the outbox stored an agent's message but before the transcript did: the
    /// recovered conversation knows the outbox has it, so the agent's retried `send` is looked
    /// up (and not stored twice), while a new message is stored without a look.
    #[actix::test]
    async fn a_message_the_outbox_holds_and_the_transcript_lacks_is_looked_up_when_sent_again() {
        let store = Arc::new(MemoryStore::default());
        let outbox = Arc::new(Recorded::default());
        let links = links(&outbox, SlowRouter(Arc::new(AtomicBool::new(true))).start());
        let start = || {
            Registry::new(store.clone(), ConversationSettings::default(), runtime())
                .with_links(links.clone())
                .start()
        };
        let k = key("Ua");
        let act = |action| AskConversation {
            key: k.clone(),
            question: Question::Agent(ApplyAgentAction {
                agent: AgentId::parse("alice").unwrap(),
                action,
            }),
        };
        let send = |client_msg_id: &str| AgentAction::Send {
            content: Content::Text {
                text: "on it".into(),
            },
            client_msg_id: client_msg_id.into(),
            quick_replies: Vec::new(),
        };
        let before = start();
        before.do_send(EventsStored {
            key: k.clone(),
            seq: 1,
            events: vec![text(1, "help")],
        });
        let current = get(&before, &k).await.state.current.unwrap();
        assert_eq!(current.status, Status::Queued);
        before
            .send(act(AgentAction::Assign))
            .await
            .unwrap()
            .unwrap();
        // The crash: the outbox holds `c9`, the saved conversation does not.
        outbox.0.lock().unwrap().push(Outgoing {
            id: format!("{}/agent/c9", current.id),
            key: k.clone(),
            conversation: current.id.clone(),
            origin: crate::domain::Origin::Agent {
                agent: AgentId::parse("alice").unwrap(),
                client_msg_id: "c9".into(),
            },
            contents: vec![Content::Text {
                text: "on it".into(),
            }],
            quick_replies: Vec::new(),
            reply_token: None,
            show_sender: false,
            created_at_ms: 1,
        });

        let after = start();
        // `Recorded` fails the test if a message it holds is said to be new.
        for client_msg_id in ["c9", "c10"] {
            after.send(act(send(client_msg_id))).await.unwrap().unwrap();
        }
        let ids: Vec<String> = outbox
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|o| o.id.clone())
            .collect();
        let agents = ids.iter().filter(|id| id.contains("/agent/")).count();
        assert_eq!(agents, 2, "{ids:?}");
        let transcript = get(&after, &k).await.state.current.unwrap().transcript;
        let written = transcript
            .iter()
            .filter(|e| e.client_msg_id.is_some())
            .count();
        assert_eq!(written, 2);
    }
}
