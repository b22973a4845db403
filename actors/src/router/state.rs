//! The routing decision as a pure data structure: no actors, no I/O, no clock.
//!
//! [`RouterState`] owns the queues ([`QueueSpec`]), the agents ([`AgentSpec`] plus their chosen
//! [`Presence`] and load), the conversations waiting for an agent ([`WaitingConversation`]), and
//! the conversations offered to or assigned to an agent. The router actor feeds it commands
//! (`enqueue`, `set_presence`, `accept`, `decline`, `release`, …) and asks [`RouterState::next_offer`]
//! for the next [`Offer`] until it answers `None`.
//!
//! # The decision
//! Queues are served in priority order (lower `priority` first, then queue id). Within a queue,
//! conversations go by `(priority, since_ms, conversation id)`: urgent first, then oldest. The
//! first conversation in that order that has an eligible agent is offered; one nobody can take
//! does not block those behind it. An agent is eligible when its effective presence is
//! `Available`, it serves the queue, its free capacity (capacity − assigned − offered) covers the
//! conversation's units, it has not declined this conversation before, and its skills fit the
//! queue's [`SkillMatch`]:
//! - class 0: every required skill at exactly the required level;
//! - class 1: every required skill at or above the level, some above;
//! - class 2: everyone else in the queue, ranked by total shortfall (missing skill = level 0).
//!
//! `Exact` takes classes 0 and 1 as one class and never class 2; `Closest` takes the best
//! non-empty class. Within the class the queue's [`Assignment`] picks the agent. An offer reserves
//! the units at once, so outstanding offers can never overbook an agent.
//!
//! # Indexes
//! - Waiting conversations of a queue are kept in **groups** of interchangeable conversations: same
//!   requirement set, same units, nobody excluded. Each group is a `BTreeSet` in serving order and
//!   the queue keeps a `BTreeSet` of group heads. If the head of a group has no eligible agent, no
//!   member of the group has one, so `next_offer` tries only heads. A declined conversation has
//!   excluded agents and becomes a group of its own.
//! - Agents are indexed per (queue, requirement set) in use, the empty set included: two
//!   `BTreeSet`s of rank keys, class 0 and class 1 agents that can take offers (effective
//!   presence `Available`), ordered by the queue's assignment method: `(−free, last assignment,
//!   id)` for highest capacity, `(last assignment, id)` for most idle, `(rotation, id)` for round
//!   robin. The first conversation with a requirement set builds its index; when no conversation
//!   needs it any more it stays in a small cache (32 indexes) and is dropped after that. So an
//!   agent is maintained only in the indexes that waiting conversations use.
//! - Group members and rank keys are stored in reverse (`ServingSet`): both are taken out at
//!   the front and mostly put in at the back, which the std B-tree makes cheap only that way.
//! - Index moves are deferred: a load or presence change marks the agent, and `next_offer` (the
//!   only reader) first moves the marked agents. Offer, accept and release of one agent between
//!   two decisions then cost one move instead of three.
//! - Conversations live in a slab reached from the group keys and an id → slot map (Fx hash: the
//!   keys are LINE-assigned or configured ids, not attacker-chosen strings).
//!
//! # Cost
//! With n agents, m waiting conversations, and for one agent `Q` queues and `R` requirement
//! indexes it is in (bounded by the requirement sets waiting in its queues plus the cache):
//! - `next_offer`: O(H · log n + log m) where H is the number of group heads tried, plus the
//!   deferred moves below. Heads that fail are heads with no eligible agent at all (a
//!   requirement nobody online meets), so H is bounded by the number of distinct requirement
//!   sets waiting, not by m.
//! - a load or presence change (`next_offer`, `accept`, `decline`, `release`, `reserve_direct`,
//!   `set_presence`): O(1) when made, then O(R · log n) for the agent at the next `next_offer`
//!   (nothing when its rank did not change), plus O(log m) to move the conversation.
//! - `enqueue`, `dequeue`: O(log m) (and building a requirement index, below).
//!
//! Cases that degrade, honestly:
//! - `Closest` with no eligible class 0 or class 1 agent scans the queue's members to rank
//!   class 2 by shortfall: O(n_q · s) for n_q members of the queue and s required skills.
//! - Most idle and round robin rank agents without their free capacity, so a conversation of more
//!   than one unit skips, one by one, the agents ahead that have too little free (none when
//!   units is 1, the common case). Highest capacity stops at the first agent with too little.
//! - Agents excluded for a conversation (they declined it) are skipped one by one.
//! - The first conversation with a new requirement set in a queue builds its index: O(n_q · s ·
//!   log n). So does reusing one that was dropped from the cache.
//! - Creating a queue or changing its assignment method re-ranks its agents: O(n log n).
//! - `upsert_agent` and `remove_agent` are O(Q · (R + log n)) plus the agent's holdings.
//! - [`RouterState::position`] is O(G + k): G groups in the queue, k conversations ahead.

use std::cmp::{Ordering, Reverse};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{AgentId, ConversationId};

#[cfg(test)]
mod tests;

/// Skill name → proficiency. A `BTreeMap` so that equal requirement sets compare, hash and
/// print the same whatever order they were written in.
pub type Skills = BTreeMap<String, u8>;

/// The lowest proficiency an agent can have or a conversation can require.
pub const MIN_PROFICIENCY: u8 = 1;
/// The highest proficiency an agent can have or a conversation can require.
pub const MAX_PROFICIENCY: u8 = 10;

/// How many requirement indexes nobody waits for are kept, so that a requirement set that comes
/// and goes does not rebuild its index each time, while a long tail of old ones is not
/// maintained forever.
const MAX_IDLE_SKILL_INDEXES: usize = 32;

crate::domain::ids::slug_id!(
    /// A queue's id, as configured. Appears in settings, APIs and logs, so it is kept to the
    /// same URL- and key-safe characters as the other ids.
    QueueId,
    "queue id"
);

/// An agent's presence. Only `Available` agents receive offers. Agents choose their presence;
/// the router reports `Busy` on its own for an `Available` agent whose capacity is used up
/// (see [`RouterState::effective_presence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Available,
    Busy,
    DoNotDisturb,
    Away,
    /// Where a newly configured agent starts: it has not connected yet.
    #[default]
    Offline,
}

/// How a queue picks among the eligible agents of the best skill class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    /// Most free capacity units first; ties go to the least recently assigned, then agent id.
    HighestCapacity,
    /// Agents take turns in the order they joined the queue; an agent who was just offered a
    /// conversation from the queue goes to the back.
    RoundRobin,
    /// The agent whose last assignment is oldest (never assigned is oldest), then agent id.
    MostIdle,
}

/// How strictly a queue matches required skills (see the module docs for the classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkillMatch {
    /// Only agents with every required skill at or above the required level.
    Exact,
    /// The best-fitting agents available: exact level, then over-qualified, then the least short.
    Closest,
}

/// A queue as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    pub id: QueueId,
    /// Lower values are served first; queues of equal priority go by id.
    pub priority: u32,
    pub assignment: Assignment,
    pub skill_match: SkillMatch,
}

/// An agent as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpec {
    pub id: AgentId,
    /// Capacity units the agent can hold at once (a conversation costs its `units`).
    pub capacity: u32,
    /// Proficiency per skill, [`MIN_PROFICIENCY`] to [`MAX_PROFICIENCY`].
    #[serde(default)]
    pub skills: Skills,
    /// The queues the agent serves. Queues not configured yet are joined when they are.
    #[serde(default)]
    pub queues: Vec<QueueId>,
}

/// A conversation asking for an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingConversation {
    pub conversation: ConversationId,
    pub queue: QueueId,
    /// Skills the conversation needs, at least at these levels (from classification rules).
    #[serde(default)]
    pub required_skills: Skills,
    /// Lower is more urgent, from classification rules; 0 when nothing says otherwise.
    #[serde(default)]
    pub priority: i32,
    /// When the conversation started waiting. A re-queued conversation keeps its first value, so
    /// it does not lose its place to newer ones.
    pub since_ms: i64,
    /// The capacity it takes from the agent.
    #[serde(default = "one_unit")]
    pub units: u32,
}

fn one_unit() -> u32 {
    1
}

/// The router's proposal: offer `conversation` to `agent`. The units are already reserved on the
/// agent; the caller answers with [`RouterState::accept`] or [`RouterState::decline`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub conversation: ConversationId,
    pub agent: AgentId,
    pub queue: QueueId,
    pub units: u32,
    /// The `now_ms` given to `next_offer`, so the caller can time the offer out.
    pub offered_at_ms: i64,
}

/// Whether an agent had only been offered a conversation or had accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    Offered,
    Assigned,
}

/// A conversation an agent held when it was removed, so the caller can queue it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldConversation {
    pub conversation: ConversationId,
    pub units: u32,
    pub kind: HoldKind,
    /// How it was queued (original age and requirements), or `None` if it came through
    /// [`RouterState::reserve_direct`] and never waited in a queue.
    pub queued_as: Option<WaitingConversation>,
}

/// Where the router has a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStatus {
    Waiting,
    Offered(AgentId),
    Assigned(AgentId),
}

/// The router's switches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterSettings {
    /// After this many offers in a row declined or timed out, [`RouterState::decline`] answers
    /// `true` so the caller can set the agent away instead of offering to an empty chair.
    pub missed_offers_limit: u32,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            missed_offers_limit: 3,
        }
    }
}

/// Why the router refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error("queue {0} is not configured")]
    UnknownQueue(QueueId),
    #[error("agent {0} is not known to the router")]
    UnknownAgent(AgentId),
    #[error("conversation {conversation} is not offered to agent {agent}")]
    NotOffered {
        conversation: ConversationId,
        agent: AgentId,
    },
    #[error("agent {agent} does not hold conversation {conversation}")]
    NotHeld {
        conversation: ConversationId,
        agent: AgentId,
    },
    #[error("agent {agent} has {free} free capacity units and the conversation needs {units}")]
    Overbooked {
        agent: AgentId,
        units: u32,
        free: u32,
    },
    #[error("conversation {conversation} is already offered to or assigned to agent {agent}")]
    AlreadyHeld {
        conversation: ConversationId,
        agent: AgentId,
    },
    #[error("conversation {0} is waiting in a queue; dequeue it first")]
    AlreadyWaiting(ConversationId),
    #[error("skill {skill} has proficiency {level}; it must be from 1 to 10")]
    InvalidProficiency { skill: String, level: u8 },
}

type Slot = usize;
/// Index into `RouterState::records`.
type RecordId = usize;
type ConvRef = Arc<ConversationId>;
type ReqId = u32;
/// Index into `RouterState::groups`; reused once a group is dropped (its head entry with it).
type GroupId = usize;

/// The Fx hash (as in rustc): several times faster than SipHash on the short ids hashed on every
/// decision. The keys are LINE-assigned conversation ids and configured agent and queue ids,
/// not strings an attacker picks freely, so SipHash's flooding protection is not needed here.
#[derive(Debug, Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// An agent as it appears in index keys: ordered by id, with its slot for a direct lookup.
/// The id is behind a thin `Arc` to keep index keys at 32 bytes (a fat `AgentId` would make them
/// 40, and the indexes are searched on every decision); it is read only to order agents of
/// equal rank and to skip agents that declined.
#[derive(Debug, Clone)]
struct AgentRef {
    id: Arc<AgentId>,
    slot: Slot,
}

impl Ord for AgentRef {
    fn cmp(&self, other: &Self) -> Ordering {
        // A key found again is a clone of the same `Arc`: no need to read the id.
        if Arc::ptr_eq(&self.id, &other.id) {
            self.slot.cmp(&other.slot)
        } else {
            (&self.id, self.slot).cmp(&(&other.id, other.slot))
        }
    }
}

impl PartialOrd for AgentRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for AgentRef {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for AgentRef {}

/// An agent's place in a queue's index; smaller is offered first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RankKey {
    rank: (i64, i64),
    agent: AgentRef,
}

/// A waiting conversation's place in its queue; smaller is served first. Carries its record so
/// that serving it needs no hash lookup (ids are unique, so `record` never decides the order).
#[derive(Debug, Clone)]
struct ConvKey {
    priority: i32,
    since_ms: i64,
    id: ConvRef,
    record: RecordId,
}

impl Ord for ConvKey {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.priority, self.since_ms)
            .cmp(&(other.priority, other.since_ms))
            .then_with(|| {
                // Every search for a key ends comparing it with itself: a clone of the same
                // `Arc`, equal without reading the id (which may not be in cache).
                if Arc::ptr_eq(&self.id, &other.id) {
                    Ordering::Equal
                } else {
                    self.id.cmp(&other.id)
                }
            })
            .then(self.record.cmp(&other.record))
    }
}

impl PartialOrd for ConvKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ConvKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ConvKey {}

/// How an agent's skills fit a requirement set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Exact,
    Over,
    /// Total proficiency missing.
    Under(u32),
}

fn classify(skills: &Skills, required: &Skills) -> Class {
    let mut over = false;
    let mut shortfall = 0u32;
    for (name, &need) in required {
        let have = skills.get(name).copied().unwrap_or(0);
        if have < need {
            shortfall += u32::from(need - have);
        } else if have > need {
            over = true;
        }
    }
    match (shortfall, over) {
        (0, false) => Class::Exact,
        (0, true) => Class::Over,
        (short, _) => Class::Under(short),
    }
}

fn rank_of(assignment: Assignment, free: u32, last_ms: Option<i64>, rotation: i64) -> (i64, i64) {
    let last = last_ms.unwrap_or(i64::MIN);
    match assignment {
        Assignment::HighestCapacity => (-i64::from(free), last),
        Assignment::MostIdle => (last, 0),
        Assignment::RoundRobin => (rotation, 0),
    }
}

fn validate_skills(skills: &Skills) -> Result<(), RouterError> {
    match skills
        .iter()
        .find(|(_, level)| !(MIN_PROFICIENCY..=MAX_PROFICIENCY).contains(*level))
    {
        Some((skill, &level)) => Err(RouterError::InvalidProficiency {
            skill: skill.clone(),
            level,
        }),
        None => Ok(()),
    }
}

/// A short list kept inside its owner, spilling to the heap past `N` items. An agent's queues,
/// requirement links and holdings are read on every decision; inline they cost no extra cache
/// misses (agents are touched in turn, so their data is rarely in cache).
#[derive(Debug, Clone)]
struct ShortList<T: Copy + Default, const N: usize> {
    len: usize,
    inline: [T; N],
    spill: Vec<T>,
}

impl<T: Copy + Default, const N: usize> Default for ShortList<T, N> {
    fn default() -> Self {
        Self {
            len: 0,
            inline: [T::default(); N],
            spill: Vec::new(),
        }
    }
}

impl<T: Copy + Default, const N: usize> ShortList<T, N> {
    fn push(&mut self, item: T) {
        if self.len < N {
            self.inline[self.len] = item;
        } else {
            self.spill.push(item);
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &T> + Clone {
        self.inline[..self.len.min(N)].iter().chain(&self.spill)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.inline[..self.len.min(N)]
            .iter_mut()
            .chain(&mut self.spill)
    }

    fn get_mut(&mut self, at: usize) -> &mut T {
        if at < N {
            &mut self.inline[at]
        } else {
            &mut self.spill[at - N]
        }
    }

    /// Removes the item at `at`, moving the last one into its place.
    fn swap_remove(&mut self, at: usize) {
        let last = *self.get_mut(self.len - 1);
        *self.get_mut(at) = last;
        if self.len > N {
            self.spill.pop();
        }
        self.len -= 1;
    }

    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut at = 0;
        while at < self.len {
            if keep(self.get_mut(at)) {
                at += 1;
            } else {
                self.swap_remove(at);
            }
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.spill.clear();
    }
}

/// A sorted set read from its smallest key, stored reversed. Indexes mostly take keys out at
/// the front (the conversation served, the agent offered) and put them in at the back (the
/// newest conversation, the agent just assigned). The std B-tree searches each node from its
/// smallest key, so an insert at the back compared with every key on its path: most of the
/// instructions and cache misses of a decision. Reversed, that insert stops at the first key
/// of each node, and the front is taken with `pop_last`, which compares nothing.
#[derive(Debug)]
struct ServingSet<K>(BTreeSet<Reverse<K>>);

impl<K> Default for ServingSet<K> {
    fn default() -> Self {
        Self(BTreeSet::new())
    }
}

impl<K: Ord + Clone> ServingSet<K> {
    fn first(&self) -> Option<&K> {
        self.0.last().map(|key| &key.0)
    }

    /// In ascending order.
    fn iter(&self) -> impl Iterator<Item = &K> {
        self.0.iter().rev().map(|key| &key.0)
    }

    fn insert(&mut self, key: K) -> bool {
        self.0.insert(Reverse(key))
    }

    fn remove(&mut self, key: &K) -> bool {
        if self.first() == Some(key) {
            self.0.pop_last();
            return true;
        }
        self.0.remove(&Reverse(key.clone()))
    }

    /// How many keys are smaller than `key`.
    fn count_below(&self, key: &K) -> usize {
        let key = Reverse(key.clone());
        self.0
            .range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
            .count()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
impl<K: Ord + Clone> ServingSet<K> {
    fn contains(&self, key: &K) -> bool {
        self.0.contains(&Reverse(key.clone()))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn to_set(&self) -> BTreeSet<K> {
        self.iter().cloned().collect()
    }
}

/// An agent's membership of one queue.
#[derive(Debug, Clone, Copy, Default)]
struct Membership {
    queue: usize,
    /// Place in the queue's round-robin rotation; taken from the queue's counter on joining
    /// and on every offer from this queue.
    rotation: i64,
    /// The rank under which the agent is in the queue's indexes, `None` while not offerable.
    rank: Option<(i64, i64)>,
}

/// An agent qualifies (class 0 or 1) for a requirement index of one of its queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct SkillLink {
    queue: usize,
    req: ReqId,
    over: bool,
}

/// One agent. What every decision reads and writes sits in this struct; the configured spec,
/// needed only on changes and for class 2 ranking, is boxed out of the way.
#[derive(Debug)]
struct AgentEntry {
    /// The id offers carry, cloned from here without a trip through `agent.id`'s `Arc`.
    id: AgentId,
    agent: AgentRef,
    capacity: u32,
    assigned: u32,
    offered: u32,
    missed_in_a_row: u32,
    /// The presence the agent chose; the effective one may be `Busy` instead.
    chosen: Presence,
    last_assigned_ms: Option<i64>,
    memberships: ShortList<Membership, 2>,
    /// All requirement indexes the agent is in, across its queues.
    links: ShortList<SkillLink, 4>,
    /// Records offered or assigned to the agent (a handful: bounded by capacity for
    /// conversations of at least one unit).
    holdings: ShortList<RecordId, 5>,
    /// Its index entries may be out of date; it is listed in `RouterState::dirty`.
    dirty: bool,
    spec: Box<AgentSpec>,
}

impl AgentEntry {
    fn free(&self) -> u32 {
        self.capacity
            .saturating_sub(self.assigned.saturating_add(self.offered))
    }

    fn effective(&self) -> Presence {
        if self.chosen == Presence::Available && self.free() == 0 {
            Presence::Busy
        } else {
            self.chosen
        }
    }

    fn membership_mut(&mut self, queue: usize) -> Option<&mut Membership> {
        self.memberships.iter_mut().find(|m| m.queue == queue)
    }

    fn drop_holding(&mut self, record: RecordId) {
        let at = self.holdings.iter().position(|&r| r == record);
        if let Some(at) = at {
            self.holdings.swap_remove(at);
        }
    }

    fn rank_in(&self, queue: usize) -> Option<(i64, i64)> {
        self.memberships
            .iter()
            .find(|m| m.queue == queue)
            .and_then(|m| m.rank)
    }
}

/// The offerable agents of one queue that meet one requirement set.
#[derive(Debug, Default)]
struct SkillIndex {
    exact: ServingSet<RankKey>,
    over: ServingSet<RankKey>,
    /// Groups of waiting conversations using this index; 0 means it sits in the idle cache.
    groups: usize,
    idle_stamp: Option<u64>,
}

impl SkillIndex {
    fn set_mut(&mut self, over: bool) -> &mut ServingSet<RankKey> {
        if over {
            &mut self.over
        } else {
            &mut self.exact
        }
    }
}

#[derive(Debug)]
struct QueueEntry {
    spec: QueueSpec,
    rotation_counter: i64,
    /// Every agent serving the queue, whatever its presence.
    members: BTreeSet<Slot>,
    /// Per requirement set in use (the empty one included, where everyone is class 0): the
    /// members that can take offers, in the order of the queue's assignment method.
    skills: BTreeMap<ReqId, SkillIndex>,
    /// The group for each (requirement set, units) of conversations nobody declined.
    shared_groups: FxMap<(ReqId, u32), GroupId>,
    /// The first conversation of each group.
    heads: BTreeSet<(ConvKey, GroupId)>,
    /// Conversations waiting in this queue (for overflow limits).
    waiting: usize,
}

/// Waiting conversations that are interchangeable for eligibility.
#[derive(Debug)]
struct Group {
    queue: usize,
    req: ReqId,
    units: u32,
    /// False for a declined conversation's own group.
    shared: bool,
    members: ServingSet<ConvKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Waiting(GroupId),
    Offered(Slot),
    Assigned(Slot),
}

/// How a conversation came through a queue: the [`WaitingConversation`] in interned form, so
/// that a record stays small (100,000 waiting conversations are looked up at random).
#[derive(Debug, Clone, Copy)]
struct Queued {
    queue: usize,
    req: ReqId,
    priority: i32,
    since_ms: i64,
}

#[derive(Debug)]
struct Record {
    id: ConvRef,
    /// `None` for a reservation made with `reserve_direct`.
    queued: Option<Queued>,
    units: u32,
    place: Place,
    /// Agents that declined this conversation.
    excluded: Vec<AgentId>,
}

impl Record {
    /// Its key in its queue; `None` for a direct reservation, which never waits.
    fn key(&self, record: RecordId) -> Option<ConvKey> {
        let queued = self.queued?;
        Some(ConvKey {
            priority: queued.priority,
            since_ms: queued.since_ms,
            id: self.id.clone(),
            record,
        })
    }
}

/// The router's whole state: see the module docs.
#[derive(Debug)]
pub struct RouterState {
    settings: RouterSettings,
    queues: Vec<QueueEntry>,
    queue_slots: FxMap<QueueId, usize>,
    /// Queue slots by (priority, id).
    queue_order: Vec<usize>,
    agents: Vec<Option<AgentEntry>>,
    free_slots: Vec<Slot>,
    /// Keyed by clones of `AgentEntry::id`: an id given back from an offer shares the key's
    /// text, so comparing them reads no other memory.
    agent_slots: FxMap<AgentId, Slot>,
    /// Interned requirement sets.
    requirements: Vec<Skills>,
    requirement_ids: FxMap<Skills, ReqId>,
    /// A slab: `None` marks a free group id.
    groups: Vec<Option<Group>>,
    free_groups: Vec<GroupId>,
    /// Every conversation the router knows (waiting, offered or assigned). A slab, so that
    /// the queue and agent indexes reach a record without hashing its id.
    records: Vec<Option<Record>>,
    free_records: Vec<RecordId>,
    conversations: FxMap<ConvRef, RecordId>,
    /// Agents whose load or presence changed since the indexes were last brought up to date.
    dirty: Vec<Slot>,
    waiting: usize,
    idle_indexes: VecDeque<(usize, ReqId, u64)>,
    idle_clock: u64,
}

impl Default for RouterState {
    fn default() -> Self {
        Self::new(RouterSettings::default())
    }
}

impl RouterState {
    pub fn new(settings: RouterSettings) -> Self {
        Self {
            settings,
            queues: Vec::new(),
            queue_slots: FxMap::default(),
            queue_order: Vec::new(),
            agents: Vec::new(),
            free_slots: Vec::new(),
            agent_slots: FxMap::default(),
            requirements: Vec::new(),
            requirement_ids: FxMap::default(),
            groups: Vec::new(),
            free_groups: Vec::new(),
            records: Vec::new(),
            free_records: Vec::new(),
            conversations: FxMap::default(),
            dirty: Vec::new(),
            waiting: 0,
            idle_indexes: VecDeque::new(),
            idle_clock: 0,
        }
    }

    /// Adds a queue or changes one. Agents that named the queue before it existed join it now.
    /// Changing the assignment method re-ranks the queue's agents.
    pub fn upsert_queue(&mut self, spec: QueueSpec) {
        if let Some(&qs) = self.queue_slots.get(&spec.id) {
            let old = std::mem::replace(&mut self.queues[qs].spec, spec);
            let new = &self.queues[qs].spec;
            let reorder = old.priority != new.priority;
            if old.assignment != new.assignment {
                self.rerank_queue(qs);
            }
            if reorder {
                self.sort_queue_order();
            }
            return;
        }
        let qs = self.queues.len();
        let id = spec.id.clone();
        self.queues.push(QueueEntry {
            spec,
            rotation_counter: 0,
            members: BTreeSet::new(),
            skills: BTreeMap::new(),
            shared_groups: FxMap::default(),
            heads: BTreeSet::new(),
            waiting: 0,
        });
        self.queue_slots.insert(id.clone(), qs);
        self.sort_queue_order();
        let mut joining: Vec<&AgentRef> = self
            .agents
            .iter()
            .flatten()
            .filter(|agent| agent.spec.queues.contains(&id))
            .map(|agent| &agent.agent)
            .collect();
        joining.sort();
        let joining: Vec<Slot> = joining.into_iter().map(|agent| agent.slot).collect();
        for slot in joining {
            self.join_queue(slot, qs);
            self.reindex(slot);
        }
    }

    /// Adds an agent or changes one. A known agent keeps its load, presence, holdings and its
    /// place in the rotation of queues it still serves. Refuses proficiencies outside 1 to 10.
    /// A capacity lowered below the current load makes the agent busy until enough is released.
    pub fn upsert_agent(&mut self, spec: AgentSpec) -> Result<(), RouterError> {
        validate_skills(&spec.skills)?;
        let slot = match self.agent_slots.get(&spec.id) {
            Some(&slot) => {
                self.unindex(slot);
                slot
            }
            None => {
                let slot = self.free_slots.pop().unwrap_or(self.agents.len());
                let id = spec.id.clone();
                let entry = AgentEntry {
                    id: id.clone(),
                    agent: AgentRef {
                        id: Arc::new(id.clone()),
                        slot,
                    },
                    capacity: spec.capacity,
                    assigned: 0,
                    offered: 0,
                    missed_in_a_row: 0,
                    chosen: Presence::default(),
                    last_assigned_ms: None,
                    memberships: ShortList::default(),
                    links: ShortList::default(),
                    holdings: ShortList::default(),
                    dirty: false,
                    spec: Box::new(spec.clone()),
                };
                if slot == self.agents.len() {
                    self.agents.push(Some(entry));
                } else {
                    self.agents[slot] = Some(entry);
                }
                self.agent_slots.insert(id, slot);
                slot
            }
        };
        let mut wanted: Vec<usize> = Vec::new();
        for queue in &spec.queues {
            if let Some(&qs) = self.queue_slots.get(queue) {
                if !wanted.contains(&qs) {
                    wanted.push(qs);
                }
            }
        }
        {
            let Self {
                agents,
                queues,
                requirements,
                ..
            } = self;
            let agent = live_mut(agents, slot);
            agent.memberships.retain(|m| {
                let keep = wanted.contains(&m.queue);
                if !keep {
                    queues[m.queue].members.remove(&slot);
                }
                keep
            });
            agent.capacity = spec.capacity;
            *agent.spec = spec;
            agent.links.clear();
            for m in agent.memberships.iter() {
                for link in qualifying(&agent.spec.skills, m.queue, &queues[m.queue], requirements)
                {
                    agent.links.push(link);
                }
            }
        }
        for qs in wanted {
            self.join_queue(slot, qs);
        }
        self.reindex(slot);
        Ok(())
    }

    /// Forgets an agent (deleted, or its session is gone for good). Returns what it held, offered
    /// or accepted, so the caller can queue those conversations again; the router forgets them.
    pub fn remove_agent(&mut self, agent: &AgentId) -> Vec<HeldConversation> {
        let Some(slot) = self.agent_slots.remove(agent) else {
            return Vec::new();
        };
        self.unindex(slot);
        let Some(entry) = self.agents[slot].take() else {
            return Vec::new();
        };
        for m in entry.memberships.iter() {
            self.queues[m.queue].members.remove(&slot);
        }
        self.free_slots.push(slot);
        let mut held: Vec<HeldConversation> = entry
            .holdings
            .iter()
            .map(|&rid| {
                let record = self.remove_record(rid);
                HeldConversation {
                    conversation: (*record.id).clone(),
                    units: record.units,
                    kind: match record.place {
                        Place::Offered(_) => HoldKind::Offered,
                        _ => HoldKind::Assigned,
                    },
                    queued_as: self.waiting_conversation(&record),
                }
            })
            .collect();
        held.sort_by(|a, b| a.conversation.cmp(&b.conversation));
        held
    }

    /// Sets the presence the agent chose and returns the effective one (`Busy` instead of
    /// `Available` while its capacity is used up).
    pub fn set_presence(
        &mut self,
        agent: &AgentId,
        presence: Presence,
    ) -> Result<Presence, RouterError> {
        let slot = self.slot_of(agent)?;
        live_mut(&mut self.agents, slot).chosen = presence;
        self.touch(slot);
        Ok(self.live(slot).effective())
    }

    /// The presence the agent chose.
    pub fn presence(&self, agent: &AgentId) -> Option<Presence> {
        let slot = *self.agent_slots.get(agent)?;
        Some(self.live(slot).chosen)
    }

    /// The presence others see: `Busy` when the agent chose `Available` but has no free
    /// capacity; `Available` again as soon as capacity frees. Other choices show as chosen.
    pub fn effective_presence(&self, agent: &AgentId) -> Option<Presence> {
        let slot = *self.agent_slots.get(agent)?;
        Some(self.live(slot).effective())
    }

    /// Puts a conversation in its queue. A conversation already waiting is left where it is;
    /// one offered or assigned is refused (release it first).
    pub fn enqueue(&mut self, waiting: WaitingConversation) -> Result<(), RouterError> {
        let qs = *self
            .queue_slots
            .get(&waiting.queue)
            .ok_or_else(|| RouterError::UnknownQueue(waiting.queue.clone()))?;
        validate_skills(&waiting.required_skills)?;
        let id = Arc::new(waiting.conversation);
        // One hash lookup both finds a known conversation and files a new one, under the
        // record id `add_record` is about to use.
        let rid = self.next_record_id();
        match self.conversations.entry(id.clone()) {
            Entry::Occupied(known) => {
                let known = *known.get();
                return match self.record(known).place {
                    Place::Waiting(_) => Ok(()),
                    Place::Offered(slot) | Place::Assigned(slot) => Err(RouterError::AlreadyHeld {
                        conversation: (*id).clone(),
                        agent: self.agent_id(slot),
                    }),
                };
            }
            Entry::Vacant(entry) => {
                entry.insert(rid);
            }
        }
        let queued = Queued {
            queue: qs,
            req: self.intern(&waiting.required_skills),
            priority: waiting.priority,
            since_ms: waiting.since_ms,
        };
        let added = self.add_record(Record {
            id,
            queued: Some(queued),
            units: waiting.units,
            // Replaced just below, once the group is known.
            place: Place::Waiting(0),
            excluded: Vec::new(),
        });
        debug_assert_eq!(added, rid);
        let group = self.insert_waiting(rid, true);
        self.record_mut(rid).place = Place::Waiting(group);
        Ok(())
    }

    /// Takes a waiting conversation out of its queue (the customer closed it, or it moved on)
    /// and forgets it. `None` if it is not waiting; an offered or assigned one is `release`d.
    pub fn dequeue(&mut self, conversation: &ConversationId) -> Option<WaitingConversation> {
        let rid = *self.conversations.get(conversation)?;
        let Place::Waiting(group) = self.record(rid).place else {
            return None;
        };
        let key = self.record(rid).key(rid)?;
        self.remove_waiting(group, &key);
        let record = self.remove_record(rid);
        self.waiting_conversation(&record)
    }

    /// Chooses the next conversation and its agent (see the module docs), takes the
    /// conversation out of its queue and reserves its units on the agent. `None` when no
    /// waiting conversation has an eligible agent. Call again until `None`.
    pub fn next_offer(&mut self, now_ms: i64) -> Option<Offer> {
        self.flush_indexes();
        let (qs, key, group, units, slot) = self.choose()?;
        self.remove_waiting(group, &key);
        self.record_mut(key.record).place = Place::Offered(slot);
        let queue = &mut self.queues[qs];
        queue.rotation_counter += 1;
        let rotation = queue.rotation_counter;
        let agent = live_mut(&mut self.agents, slot);
        agent.offered += units;
        agent.holdings.push(key.record);
        if let Some(m) = agent.membership_mut(qs) {
            m.rotation = rotation;
        }
        let agent = agent.id.clone();
        self.touch(slot);
        Some(Offer {
            conversation: (*key.id).clone(),
            agent,
            queue: self.queues[qs].spec.id.clone(),
            units,
            offered_at_ms: now_ms,
        })
    }

    /// The agent took the offer: it becomes an assignment (the units stay taken), the agent's
    /// last assignment time is now, and its run of missed offers ends.
    pub fn accept(
        &mut self,
        conversation: &ConversationId,
        agent: &AgentId,
        now_ms: i64,
    ) -> Result<(), RouterError> {
        let (slot, rid) = self.offered(conversation, agent)?;
        let record = self.record_mut(rid);
        record.place = Place::Assigned(slot);
        let units = record.units;
        let entry = live_mut(&mut self.agents, slot);
        entry.offered -= units;
        entry.assigned += units;
        entry.last_assigned_ms = Some(now_ms);
        entry.missed_in_a_row = 0;
        self.touch(slot);
        Ok(())
    }

    /// The agent rejected the offer or let it time out: its units are freed, the conversation
    /// waits again with its original age (so in its old place), and this agent is never offered
    /// it again. Answers whether the agent has now missed
    /// [`RouterSettings::missed_offers_limit`] offers in a row.
    pub fn decline(
        &mut self,
        conversation: &ConversationId,
        agent: &AgentId,
    ) -> Result<bool, RouterError> {
        let (slot, rid) = self.offered(conversation, agent)?;
        let units = self.record(rid).units;
        let entry = live_mut(&mut self.agents, slot);
        entry.offered -= units;
        entry.drop_holding(rid);
        entry.missed_in_a_row += 1;
        let missed = entry.missed_in_a_row;
        self.touch(slot);
        self.record_mut(rid).excluded.push(agent.clone());
        let group = self.insert_waiting(rid, false);
        self.record_mut(rid).place = Place::Waiting(group);
        Ok(missed >= self.settings.missed_offers_limit)
    }

    /// Offers in a row the agent declined or let time out since its last accepted one.
    pub fn missed_in_a_row(&self, agent: &AgentId) -> u32 {
        self.agent_slots
            .get(agent)
            .map_or(0, |&slot| self.live(slot).missed_in_a_row)
    }

    /// The agent no longer holds the conversation (it ended, is waiting for the customer, or
    /// was transferred away): its units are freed and the router forgets it. Works for an
    /// outstanding offer as well as an assignment.
    pub fn release(
        &mut self,
        conversation: &ConversationId,
        agent: &AgentId,
    ) -> Result<(), RouterError> {
        let slot = self.slot_of(agent)?;
        let not_held = || RouterError::NotHeld {
            conversation: conversation.clone(),
            agent: agent.clone(),
        };
        // Taken out of the map at once (one hash lookup) and put back if the agent does not
        // hold it.
        let (id, rid) = self
            .conversations
            .remove_entry(conversation)
            .ok_or_else(not_held)?;
        if !matches!(self.record(rid).place, Place::Offered(s) | Place::Assigned(s) if s == slot) {
            self.conversations.insert(id, rid);
            return Err(not_held());
        }
        let record = self.take_record(rid);
        let entry = live_mut(&mut self.agents, slot);
        match record.place {
            Place::Offered(_) => entry.offered -= record.units,
            _ => entry.assigned -= record.units,
        }
        entry.drop_holding(rid);
        self.touch(slot);
        Ok(())
    }

    /// Assigns a conversation straight to an agent without a queue or an offer: the customer
    /// came back to the agent that served them. Presence is not checked (the agent already
    /// knows the customer), capacity is: this never overbooks. The agent's last assignment
    /// time is not changed.
    pub fn reserve_direct(
        &mut self,
        conversation: &ConversationId,
        agent: &AgentId,
        units: u32,
    ) -> Result<(), RouterError> {
        let slot = self.slot_of(agent)?;
        if let Some(&rid) = self.conversations.get(conversation) {
            return Err(match self.record(rid).place {
                Place::Waiting(_) => RouterError::AlreadyWaiting(conversation.clone()),
                Place::Offered(slot) | Place::Assigned(slot) => RouterError::AlreadyHeld {
                    conversation: conversation.clone(),
                    agent: self.agent_id(slot),
                },
            });
        }
        let free = self.live(slot).free();
        if free < units {
            return Err(RouterError::Overbooked {
                agent: agent.clone(),
                units,
                free,
            });
        }
        let id = Arc::new(conversation.clone());
        let rid = self.add_record(Record {
            id: id.clone(),
            queued: None,
            units,
            place: Place::Assigned(slot),
            excluded: Vec::new(),
        });
        self.conversations.insert(id, rid);
        let entry = live_mut(&mut self.agents, slot);
        entry.assigned += units;
        entry.holdings.push(rid);
        self.touch(slot);
        Ok(())
    }

    /// Conversations waiting in all queues (not counting outstanding offers).
    pub fn waiting_len(&self) -> usize {
        self.waiting
    }

    /// `(assigned, offered, capacity)` units of an agent.
    pub fn load(&self, agent: &AgentId) -> Option<(u32, u32, u32)> {
        let slot = *self.agent_slots.get(agent)?;
        let entry = self.live(slot);
        Some((entry.assigned, entry.offered, entry.capacity))
    }

    /// Conversations waiting in `queue` (0 for an unknown queue). O(1).
    pub fn waiting_in(&self, queue: &QueueId) -> usize {
        self.queue_slots
            .get(queue)
            .map_or(0, |&qs| self.queues[qs].waiting)
    }

    /// 1-based place of a waiting conversation within its queue in serving order, whether or
    /// not an agent could take the ones ahead. O(G + k): G groups, k conversations ahead.
    pub fn position(&self, conversation: &ConversationId) -> Option<usize> {
        let rid = *self.conversations.get(conversation)?;
        let record = self.record(rid);
        if !matches!(record.place, Place::Waiting(_)) {
            return None;
        }
        let key = record.key(rid)?;
        let queue = record.queued?.queue;
        let ahead: usize = self.queues[queue]
            .heads
            .iter()
            .take_while(|(head, _)| *head < key)
            .filter_map(|&(_, group)| self.groups[group].as_ref())
            .map(|group| group.members.count_below(&key))
            .sum();
        Some(ahead + 1)
    }

    /// Where the router has a conversation; `None` if it does not know it.
    pub fn status(&self, conversation: &ConversationId) -> Option<RoutingStatus> {
        let rid = *self.conversations.get(conversation)?;
        Some(match self.record(rid).place {
            Place::Waiting(_) => RoutingStatus::Waiting,
            Place::Offered(slot) => RoutingStatus::Offered(self.agent_id(slot)),
            Place::Assigned(slot) => RoutingStatus::Assigned(self.agent_id(slot)),
        })
    }

    /// The [`WaitingConversation`] a record was queued as, rebuilt from its interned form.
    fn waiting_conversation(&self, record: &Record) -> Option<WaitingConversation> {
        let queued = record.queued?;
        Some(WaitingConversation {
            conversation: (*record.id).clone(),
            queue: self.queues[queued.queue].spec.id.clone(),
            required_skills: self.requirements[queued.req as usize].clone(),
            priority: queued.priority,
            since_ms: queued.since_ms,
            units: record.units,
        })
    }

    fn live(&self, slot: Slot) -> &AgentEntry {
        // unwrap: slots in `agent_slots`, indexes, queue members and records always name live
        // agents; `remove_agent` clears all of them before it frees the slot.
        self.agents[slot].as_ref().unwrap()
    }

    fn agent_id(&self, slot: Slot) -> AgentId {
        self.live(slot).id.clone()
    }

    fn slot_of(&self, agent: &AgentId) -> Result<Slot, RouterError> {
        self.agent_slots
            .get(agent)
            .copied()
            .ok_or_else(|| RouterError::UnknownAgent(agent.clone()))
    }

    fn record(&self, rid: RecordId) -> &Record {
        // unwrap: record ids in `conversations`, groups and holdings always name live records;
        // `remove_record` clears the map entry, and callers drop the other references first.
        self.records[rid].as_ref().unwrap()
    }

    fn record_mut(&mut self, rid: RecordId) -> &mut Record {
        // unwrap: as in `record`.
        self.records[rid].as_mut().unwrap()
    }

    /// The id `add_record` gives the next record.
    fn next_record_id(&self) -> RecordId {
        self.free_records
            .last()
            .copied()
            .unwrap_or(self.records.len())
    }

    /// Stores a record under `next_record_id`; the caller files it in `conversations`.
    fn add_record(&mut self, record: Record) -> RecordId {
        match self.free_records.pop() {
            Some(rid) => {
                self.records[rid] = Some(record);
                rid
            }
            None => {
                self.records.push(Some(record));
                self.records.len() - 1
            }
        }
    }

    /// Forgets a record; the caller has taken it out of its group or its agent's holdings.
    fn remove_record(&mut self, rid: RecordId) -> Record {
        let record = self.take_record(rid);
        self.conversations.remove(&record.id);
        record
    }

    /// `remove_record` for a record whose id the caller already took out of `conversations`.
    fn take_record(&mut self, rid: RecordId) -> Record {
        // unwrap: as in `record`.
        let record = self.records[rid].take().unwrap();
        self.free_records.push(rid);
        record
    }

    /// The agent and record of a conversation offered to `agent`.
    fn offered(
        &self,
        conversation: &ConversationId,
        agent: &AgentId,
    ) -> Result<(Slot, RecordId), RouterError> {
        let slot = self.slot_of(agent)?;
        self.conversations
            .get(conversation)
            .copied()
            .filter(|&rid| self.record(rid).place == Place::Offered(slot))
            .map(|rid| (slot, rid))
            .ok_or_else(|| RouterError::NotOffered {
                conversation: conversation.clone(),
                agent: agent.clone(),
            })
    }

    fn sort_queue_order(&mut self) {
        let queues = &self.queues;
        let mut order: Vec<usize> = (0..queues.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&queues[a].spec, &queues[b].spec);
            (a.priority, &a.id).cmp(&(b.priority, &b.id))
        });
        self.queue_order = order;
    }

    fn intern(&mut self, required: &Skills) -> ReqId {
        if let Some(&req) = self.requirement_ids.get(required) {
            return req;
        }
        let req = self.requirements.len() as ReqId;
        self.requirements.push(required.clone());
        self.requirement_ids.insert(required.clone(), req);
        req
    }

    /// Makes the agent a member of the queue (at the back of its rotation) if it is not yet.
    fn join_queue(&mut self, slot: Slot, qs: usize) {
        let Self {
            agents,
            queues,
            requirements,
            ..
        } = self;
        let agent = live_mut(agents, slot);
        if agent.memberships.iter().any(|m| m.queue == qs) {
            return;
        }
        let queue = &mut queues[qs];
        queue.rotation_counter += 1;
        queue.members.insert(slot);
        agent.memberships.push(Membership {
            queue: qs,
            rotation: queue.rotation_counter,
            rank: None,
        });
        for link in qualifying(&agent.spec.skills, qs, queue, requirements) {
            agent.links.push(link);
        }
    }

    /// Recomputes the ranks of every member after the queue's assignment method changed.
    fn rerank_queue(&mut self, qs: usize) {
        let queue = &mut self.queues[qs];
        for index in queue.skills.values_mut() {
            index.exact.clear();
            index.over.clear();
        }
        let members: Vec<Slot> = queue.members.iter().copied().collect();
        for &slot in &members {
            if let Some(m) = live_mut(&mut self.agents, slot).membership_mut(qs) {
                m.rank = None;
            }
        }
        for slot in members {
            self.reindex(slot);
        }
    }

    fn reindex(&mut self, slot: Slot) {
        self.place_in_indexes(slot, true);
    }

    /// Notes that the agent's load or presence changed. Its index entries are moved by the next
    /// `flush_indexes`, so several changes between two decisions (offer, accept, release) cost
    /// one move, not one each.
    fn touch(&mut self, slot: Slot) {
        let agent = live_mut(&mut self.agents, slot);
        if !agent.dirty {
            agent.dirty = true;
            self.dirty.push(slot);
        }
    }

    /// Brings the indexes up to date with every agent touched since the last call. Run before
    /// anything reads the agent indexes.
    fn flush_indexes(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            // A slot freed by `remove_agent` since it was touched is skipped (or, if reused,
            // indexed again, which is harmless).
            if let Some(agent) = self.agents[slot].as_mut() {
                agent.dirty = false;
                self.place_in_indexes(slot, true);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn unindex(&mut self, slot: Slot) {
        self.place_in_indexes(slot, false);
    }

    /// Brings the agent's entries in all its queues' indexes up to date with its state (or
    /// takes them out when `allowed` is false). Entries whose rank did not change stay.
    fn place_in_indexes(&mut self, slot: Slot, allowed: bool) {
        let Self { agents, queues, .. } = self;
        let Some(agent) = agents[slot].as_mut() else {
            return;
        };
        let offerable = allowed && agent.effective() == Presence::Available;
        let free = agent.free();
        let last = agent.last_assigned_ms;
        for m in agent.memberships.iter_mut() {
            let qs = m.queue;
            let queue = &mut queues[qs];
            let rank = offerable.then(|| rank_of(queue.spec.assignment, free, last, m.rotation));
            if rank == m.rank {
                continue;
            }
            let links = agent.links.iter().filter(|link| link.queue == qs);
            if let Some(old) = m.rank {
                let key = RankKey {
                    rank: old,
                    agent: agent.agent.clone(),
                };
                for link in links.clone() {
                    if let Some(index) = queue.skills.get_mut(&link.req) {
                        index.set_mut(link.over).remove(&key);
                    }
                }
            }
            if let Some(new) = rank {
                let key = RankKey {
                    rank: new,
                    agent: agent.agent.clone(),
                };
                for link in links {
                    if let Some(index) = queue.skills.get_mut(&link.req) {
                        index.set_mut(link.over).insert(key.clone());
                    }
                }
            }
            m.rank = rank;
        }
    }

    /// Adds a record to its queue: to the shared group of its requirements, or (`shared` false,
    /// for a conversation that excludes agents) to a new group of its own. Keeps the queue's
    /// heads right and returns the group.
    fn insert_waiting(&mut self, rid: RecordId, shared: bool) -> GroupId {
        let record = self.record(rid);
        // unwrap: only queued records wait; `enqueue` and `decline` pass nothing else.
        let queued = record.queued.unwrap();
        let key = record.key(rid).unwrap();
        let (qs, req, units) = (queued.queue, queued.req, record.units);
        let existing = shared
            .then(|| self.queues[qs].shared_groups.get(&(req, units)).copied())
            .flatten();
        let id = match existing {
            Some(id) => id,
            None => {
                let group = Group {
                    queue: qs,
                    req,
                    units,
                    shared,
                    members: ServingSet::default(),
                };
                let id = match self.free_groups.pop() {
                    Some(id) => {
                        self.groups[id] = Some(group);
                        id
                    }
                    None => {
                        self.groups.push(Some(group));
                        self.groups.len() - 1
                    }
                };
                if shared {
                    self.queues[qs].shared_groups.insert((req, units), id);
                }
                self.use_skill_index(qs, req);
                id
            }
        };
        // unwrap: the group was found or created just above.
        let group = self.groups[id].as_mut().unwrap();
        let heads = &mut self.queues[qs].heads;
        match group.members.first() {
            Some(head) if *head <= key => {}
            Some(head) => {
                heads.remove(&(head.clone(), id));
                heads.insert((key.clone(), id));
            }
            None => {
                heads.insert((key.clone(), id));
            }
        }
        group.members.insert(key);
        self.waiting += 1;
        self.queues[qs].waiting += 1;
        id
    }

    /// Takes a conversation out of its group, keeps the heads right, and drops the group when
    /// it is empty.
    fn remove_waiting(&mut self, id: GroupId, key: &ConvKey) {
        let Some(group) = self.groups[id].as_mut() else {
            return;
        };
        let was_head = group.members.first() == Some(key);
        if !group.members.remove(key) {
            return;
        }
        self.waiting -= 1;
        let queue = &mut self.queues[group.queue];
        queue.waiting -= 1;
        if was_head {
            queue.heads.remove(&(key.clone(), id));
            if let Some(next) = group.members.first() {
                queue.heads.insert((next.clone(), id));
            }
        }
        if group.members.is_empty() {
            let (qs, req, units, shared) = (group.queue, group.req, group.units, group.shared);
            self.groups[id] = None;
            self.free_groups.push(id);
            if shared {
                self.queues[qs].shared_groups.remove(&(req, units));
            }
            self.release_skill_index(qs, req);
        }
    }

    /// One more group needs the queue's index for `req`: reuse it, or build it from the
    /// queue's members.
    fn use_skill_index(&mut self, qs: usize, req: ReqId) {
        if let Some(index) = self.queues[qs].skills.get_mut(&req) {
            index.groups += 1;
            index.idle_stamp = None;
            return;
        }
        let Self {
            agents,
            queues,
            requirements,
            ..
        } = self;
        let queue = &mut queues[qs];
        let required = &requirements[req as usize];
        let mut index = SkillIndex {
            groups: 1,
            ..SkillIndex::default()
        };
        for &slot in &queue.members {
            let agent = live_mut(agents, slot);
            let over = match classify(&agent.spec.skills, required) {
                Class::Exact => false,
                Class::Over => true,
                Class::Under(_) => continue,
            };
            agent.links.push(SkillLink {
                queue: qs,
                req,
                over,
            });
            if let Some(rank) = agent.rank_in(qs) {
                index.set_mut(over).insert(RankKey {
                    rank,
                    agent: agent.agent.clone(),
                });
            }
        }
        queue.skills.insert(req, index);
    }

    /// One group fewer needs the index; an unused index goes to the idle cache, and the
    /// oldest idle ones beyond its size are dropped.
    fn release_skill_index(&mut self, qs: usize, req: ReqId) {
        let Some(index) = self.queues[qs].skills.get_mut(&req) else {
            return;
        };
        index.groups -= 1;
        if index.groups > 0 {
            return;
        }
        self.idle_clock += 1;
        index.idle_stamp = Some(self.idle_clock);
        self.idle_indexes.push_back((qs, req, self.idle_clock));
        while self.idle_indexes.len() > MAX_IDLE_SKILL_INDEXES {
            let Some((qs, req, stamp)) = self.idle_indexes.pop_front() else {
                break;
            };
            // An entry is stale when the index was used again since (a newer entry, if idle).
            let still_idle = self.queues[qs]
                .skills
                .get(&req)
                .is_some_and(|index| index.idle_stamp == Some(stamp));
            if still_idle {
                self.drop_skill_index(qs, req);
            }
        }
    }

    fn drop_skill_index(&mut self, qs: usize, req: ReqId) {
        let Self { agents, queues, .. } = self;
        let queue = &mut queues[qs];
        queue.skills.remove(&req);
        for &slot in &queue.members {
            live_mut(agents, slot)
                .links
                .retain(|link| (link.queue, link.req) != (qs, req));
        }
    }

    /// The next conversation to offer and its agent: queue by queue, group head by group head.
    fn choose(&self) -> Option<(usize, ConvKey, GroupId, u32, Slot)> {
        for &qs in &self.queue_order {
            let queue = &self.queues[qs];
            for (key, id) in &queue.heads {
                let Some(group) = self.groups[*id].as_ref() else {
                    continue;
                };
                let excluded: &[AgentId] = if group.shared {
                    &[]
                } else {
                    &self.record(key.record).excluded
                };
                if let Some(slot) = self.find_agent(queue, qs, group.req, group.units, excluded) {
                    return Some((qs, key.clone(), *id, group.units, slot));
                }
            }
        }
        None
    }

    /// The best eligible agent of the queue for a conversation with these requirements.
    fn find_agent(
        &self,
        queue: &QueueEntry,
        qs: usize,
        req: ReqId,
        units: u32,
        excluded: &[AgentId],
    ) -> Option<Slot> {
        let assignment = queue.spec.assignment;
        let index = queue.skills.get(&req)?;
        let exact = self.first_eligible(&index.exact, assignment, units, excluded);
        let over = || self.first_eligible(&index.over, assignment, units, excluded);
        let best = match queue.spec.skill_match {
            SkillMatch::Exact => match (exact, over()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            SkillMatch::Closest => exact.or_else(over),
        };
        match (best, queue.spec.skill_match) {
            (Some(key), _) => Some(key.agent.slot),
            (None, SkillMatch::Exact) => None,
            (None, SkillMatch::Closest) => {
                self.least_short(queue, qs, &self.requirements[req as usize], units, excluded)
            }
        }
    }

    /// The first agent of `set` (in rank order) with enough free units that did not decline.
    fn first_eligible<'a>(
        &self,
        set: &'a ServingSet<RankKey>,
        assignment: Assignment,
        units: u32,
        excluded: &[AgentId],
    ) -> Option<&'a RankKey> {
        for key in set.iter() {
            if excluded.contains(&*key.agent.id) {
                continue;
            }
            // Indexed agents have at least one unit free, so most checks need not look.
            if units <= 1 || self.live(key.agent.slot).free() >= units {
                return Some(key);
            }
            if assignment == Assignment::HighestCapacity {
                // Ranked by free units: everyone after has as little or less.
                return None;
            }
        }
        None
    }

    /// Class 2 for `Closest`: the eligible agent with the least total shortfall, ties in rank
    /// order. Scans the queue's members.
    fn least_short(
        &self,
        queue: &QueueEntry,
        qs: usize,
        required: &Skills,
        units: u32,
        excluded: &[AgentId],
    ) -> Option<Slot> {
        let mut best: Option<(u32, (i64, i64), &AgentRef)> = None;
        for &slot in &queue.members {
            let agent = self.live(slot);
            let Some(rank) = agent.rank_in(qs) else {
                continue;
            };
            if agent.free() < units || excluded.contains(&agent.id) {
                continue;
            }
            let Class::Under(short) = classify(&agent.spec.skills, required) else {
                continue;
            };
            let candidate = (short, rank, &agent.agent);
            if best.is_none_or(|best| candidate < best) {
                best = Some(candidate);
            }
        }
        best.map(|(_, _, agent)| agent.slot)
    }
}

fn live_mut(agents: &mut [Option<AgentEntry>], slot: Slot) -> &mut AgentEntry {
    // unwrap: slots in `agent_slots`, indexes, queue members and records always name live
    // agents; `remove_agent` clears all of them before it frees the slot.
    agents[slot].as_mut().unwrap()
}

/// The requirement indexes of queue `qs` an agent with these skills belongs to, and whether it
/// is over-qualified for each.
fn qualifying<'a>(
    skills: &'a Skills,
    qs: usize,
    queue: &'a QueueEntry,
    requirements: &'a [Skills],
) -> impl Iterator<Item = SkillLink> + 'a {
    queue.skills.keys().filter_map(move |&req| {
        let over = match classify(skills, &requirements[req as usize]) {
            Class::Exact => false,
            Class::Over => true,
            Class::Under(_) => return None,
        };
        Some(SkillLink {
            queue: qs,
            req,
            over,
        })
    })
}
