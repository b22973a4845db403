//! Typed settings. `Settings::load` layers the embedded `config/default.toml`, then an optional
//! file given on the command line, then environment variables `LINEDESK__SECTION__KEY`.
//!
//! Accounts are an array of tables, which plain `SECTION__KEY` variables cannot address, so their
//! secrets are overridden by id: `LINEDESK__ACCOUNTS__{ID}__CHANNEL_SECRET` (id upper-cased, `-`
//! written `_`). Real secrets belong there or in an uncommitted overlay file, never in
//! `default.toml`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use linedesk_actors::domain::AccountId;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The defaults, compiled in so that the binary runs from any folder.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

mod outbound;

pub use outbound::{AutomatedMessageSettings, ContentSection, LineSection};

const ENV_PREFIX: &str = "LINEDESK";
const ENV_SEPARATOR: &str = "__";

/// Why the settings could not be used; every message names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {path}: {source}")]
    File {
        path: PathBuf,
        source: config::ConfigError,
    },
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub log: LogSettings,
    pub admin: AdminSettings,
    pub conversation: ConversationSection,
    pub routing: RoutingSection,
    pub line: LineSection,
    pub content: ContentSection,
    /// Texts linedesk sends by itself, per workstream and trigger.
    #[serde(default)]
    pub automated_messages: Vec<AutomatedMessageSettings>,
    #[serde(default)]
    pub accounts: Vec<AccountSettings>,
    #[serde(default)]
    pub workstreams: Vec<WorkstreamSettings>,
    #[serde(default)]
    pub queues: Vec<QueueSettings>,
    #[serde(default)]
    pub rules: Vec<RuleSettings>,
    #[serde(default)]
    pub agents: Vec<AgentSettings>,
}

/// Routing-wide knobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    /// An agent who misses this many offers in a row is set `away`.
    pub missed_offers_to_away: u32,
    /// After an agent's last connection drops, their conversations stay theirs this long.
    pub reconnect_grace_ms: u64,
    /// Websocket heartbeat: a connection silent for two intervals is dead.
    pub heartbeat_interval_ms: u64,
    /// After a restart, open conversations are read and handed to the router this many at a
    /// time, while the server already answers.
    pub restore_chunk: usize,
}

/// Binds an account to routing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkstreamSettings {
    pub id: String,
    pub account: AccountId,
    pub language: String,
    pub default_queue: String,
    /// Where conversations go when a rule can't be evaluated; the default queue if unset.
    #[serde(default)]
    pub fallback_queue: Option<String>,
    pub keep_same_agent: bool,
    pub capacity_units: u32,
    /// Agents' messages show the agent's name (and icon) on the customer's screen.
    #[serde(default = "yes")]
    pub sender: bool,
    /// Customers may send images, video, audio and files.
    #[serde(default = "yes")]
    pub customer_attachments: bool,
    /// Agents may send images and files.
    #[serde(default = "yes")]
    pub agent_attachments: bool,
    /// When agents are there; outside them customers get the `outside_hours` message. Always
    /// open when left out.
    #[serde(default)]
    pub operating_hours: Option<OperatingHoursSettings>,
}

/// `operating_hours = { utc_offset = "+09:00", days = ["mon", ...], open = "09:00", close = "18:00" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatingHoursSettings {
    /// The business's time zone as a fixed offset from UTC, `+HH:MM` or `-HH:MM`.
    pub utc_offset: String,
    pub days: Vec<String>,
    pub open: String,
    pub close: String,
}

impl OperatingHoursSettings {
    fn parse(
        &self,
        key: &str,
    ) -> Result<linedesk_actors::workstream::OperatingHours, SettingsError> {
        use linedesk_actors::workstream::OperatingHours;
        let offset = parse_offset(&self.utc_offset).ok_or_else(|| {
            invalid(
                format!("{key}.utc_offset"),
                "must look like +09:00 or -05:00",
            )
        })?;
        let mut days = [false; 7];
        for day in &self.days {
            let i = OperatingHours::parse_day(day).ok_or_else(|| {
                invalid(
                    format!("{key}.days"),
                    format!("`{day}` is not one of mon, tue, wed, thu, fri, sat, sun"),
                )
            })?;
            days[i] = true;
        }
        let time = |field: &str, value: &str| {
            OperatingHours::parse_time(value)
                .ok_or_else(|| invalid(format!("{key}.{field}"), "must be HH:MM (00:00 to 23:59)"))
        };
        Ok(OperatingHours {
            utc_offset_minutes: offset,
            days,
            open: time("open", &self.open)?,
            close: time("close", &self.close)?,
        })
    }
}

fn parse_offset(value: &str) -> Option<i32> {
    let (sign, rest) = match value.as_bytes().first()? {
        b'+' => (1, &value[1..]),
        b'-' => (-1, &value[1..]),
        _ => return None,
    };
    let minutes = i32::from(linedesk_actors::workstream::OperatingHours::parse_time(
        rest,
    )?);
    (minutes <= 14 * 60).then_some(sign * minutes)
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub id: String,
    /// What customers are told the queue is called (`{queue_name}`); the id if unset.
    #[serde(default)]
    pub name: Option<String>,
    /// Lower is served first.
    pub priority: u32,
    /// `highest_capacity`, `round_robin` or `most_idle`.
    pub assignment: String,
    /// `exact` or `closest`.
    pub skill_match: String,
    pub offer_timeout_ms: u64,
    pub auto_accept: bool,
    /// When the queue is too full or a wait too long; none by default.
    #[serde(default)]
    pub overflow: Option<OverflowSettings>,
}

/// Queue overflow: `max_waiting` and/or `max_wait_ms`, then to `to_queue`, or (without it)
/// the conversation stays and the customer gets the workstream's `overflow` message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverflowSettings {
    #[serde(default)]
    pub max_waiting: Option<usize>,
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
    #[serde(default)]
    pub to_queue: Option<String>,
}

/// A classification rule; rules are tried in file order, first match wins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    pub name: String,
    pub workstream: String,
    #[serde(default)]
    pub account: Option<AccountId>,
    #[serde(default)]
    pub text_contains: Vec<String>,
    #[serde(default)]
    pub text_regex: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub contact: std::collections::BTreeMap<String, String>,
    pub queue: String,
    #[serde(default)]
    pub skills: std::collections::BTreeMap<String, u8>,
    #[serde(default)]
    pub priority: i32,
}

/// An agent who may sign in on the websocket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    pub id: linedesk_actors::domain::AgentId,
    pub name: String,
    /// Bearer token of the agent websocket. Development values only in files you commit.
    pub token: SecretString,
    /// Capacity in units (a LINE conversation costs its workstream's `capacity_units`).
    pub capacity: u32,
    /// Skill name → proficiency 1-10.
    #[serde(default)]
    pub skills: std::collections::BTreeMap<String, u8>,
    /// Queues the agent takes conversations from.
    pub queues: Vec<String>,
    /// HTTPS URL of the picture shown beside the agent's messages in LINE (`sender`).
    #[serde(default)]
    pub icon_url: Option<String>,
}

/// The operators' API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token of `/api/*`. An empty token turns the API off (every call answers 401).
    pub token: SecretString,
}

/// Conversation actors: persistence, passivation and the auto-close timers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationSection {
    pub snapshot_every: u32,
    pub idle_passivate_ms: u64,
    pub timer_resolution_ms: u64,
    pub arbiters: usize,
    pub queued_timeout_ms: u64,
    pub active_timeout_ms: u64,
    pub waiting_timeout_ms: u64,
    pub wrap_up_ms: u64,
    pub wrap_up_timeout_ms: u64,
}

impl ConversationSection {
    /// The state machine's settings.
    pub fn lifecycle(&self) -> linedesk_actors::conversation::ConversationSettings {
        let ms = Duration::from_millis;
        linedesk_actors::conversation::ConversationSettings {
            queued_timeout: ms(self.queued_timeout_ms),
            active_timeout: ms(self.active_timeout_ms),
            waiting_timeout: ms(self.waiting_timeout_ms),
            wrap_up_hold: ms(self.wrap_up_ms),
            wrap_up_timeout: ms(self.wrap_up_timeout_ms),
            // Per workstream once workstreams exist; affinity on until then.
            keep_same_agent: true,
            bot_first: false,
        }
    }

    /// The actors' persistence and lifetime settings.
    pub fn runtime(&self) -> linedesk_actors::conversation::RuntimeSettings {
        linedesk_actors::conversation::RuntimeSettings {
            snapshot_every: self.snapshot_every,
            idle_passivate: Duration::from_millis(self.idle_passivate_ms),
            timer_resolution: Duration::from_millis(self.timer_resolution_ms),
            arbiters: self.arbiters,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// `host:port`; port 0 lets the OS pick a free port.
    pub bind: String,
    /// The address LINE reaches this server at; callback URLs are built from it.
    pub public_url: String,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    pub max_body_bytes: usize,
    pub shutdown_timeout_ms: u64,
}

impl ServerSettings {
    pub fn bind_addr(&self) -> Result<SocketAddr, SettingsError> {
        self.bind.parse().map_err(|e| {
            invalid(
                "server.bind",
                format!("`{}` is not host:port ({e})", self.bind),
            )
        })
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// The URL LINE must be given as the webhook of `account`.
    pub fn callback_url(&self, account: &AccountId) -> String {
        format!(
            "{}/line/webhook/{account}",
            self.public_url.trim_end_matches('/')
        )
    }
}

/// When an acknowledged event is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync before answering LINE; concurrent requests share one flush (group commit).
    Flush,
    /// Leave flushing to sled's timer: faster, but a crash or power cut may lose the events
    /// acknowledged in the last `flush_every_ms`.
    Os,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub path: PathBuf,
    pub durability: Durability,
    pub cache_capacity_bytes: u64,
    pub flush_every_ms: u64,
    /// With `durability = "flush"`: least time between the starts of two group commits that
    /// agents' actions and other database writes wait for; 0: none.
    pub group_commit_min_interval_ms: u64,
    /// A database write unfinished after this many seconds ends the process (status 70), for
    /// its supervisor to restart it; 0: never.
    pub hang_exit_secs: u64,
    /// Reopen the database after a clean stop so that the next start need not replay the log.
    pub snapshot_on_stop: bool,
    /// Seconds a raw webhook event is kept at least; then it goes once a snapshot covers it.
    /// 0 keeps every event.
    pub journal_retention_secs: u64,
    /// Days a redelivery check is kept, counted from the event's `timestamp`; 0 keeps them all.
    pub redelivery_window_days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing` filter such as `info` or `linedesk=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

/// A LINE Official Account (one Messaging API channel) connected to linedesk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    pub id: AccountId,
    pub name: String,
    pub channel_id: String,
    /// Key of the webhook signature. `SecretString` keeps it out of `Debug` output.
    pub channel_secret: SecretString,
    pub channel_access_token: SecretString,
}

impl Settings {
    /// Loads and validates the settings: defaults, then `overlay`, then the environment.
    pub fn load(overlay: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(overlay, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests use this).
    pub fn load_from(
        overlay: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let (plain, account_secrets): (BTreeMap<_, _>, BTreeMap<_, _>) = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .partition(|(k, _)| !k.starts_with(&account_env_prefix()));

        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = overlay {
            // Parse the overlay alone first so that its errors name the file.
            Config::builder()
                .add_source(File::from(path).format(FileFormat::Toml).required(true))
                .build()
                .map_err(|source| SettingsError::File {
                    path: path.to_owned(),
                    source,
                })?;
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let settings: Settings = builder
            .add_source(
                Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    .try_parsing(true)
                    .source(Some(plain.into_iter().collect())),
            )
            .build()?
            .try_deserialize()?;
        let mut settings = settings;
        settings.apply_account_env(account_secrets)?;
        settings.validate()?;
        Ok(settings)
    }

    fn apply_account_env(&mut self, vars: BTreeMap<String, String>) -> Result<(), SettingsError> {
        let prefix = account_env_prefix();
        for (name, value) in vars {
            let rest = &name[prefix.len()..];
            let account = self
                .accounts
                .iter_mut()
                .find(|a| rest.starts_with(&format!("{}{ENV_SEPARATOR}", account_env_id(&a.id))))
                .ok_or_else(|| invalid(&name, "names no configured account"))?;
            let field = &rest[account_env_id(&account.id).len() + ENV_SEPARATOR.len()..];
            match field {
                "CHANNEL_SECRET" => account.channel_secret = value.into(),
                "CHANNEL_ACCESS_TOKEN" => account.channel_access_token = value.into(),
                "CHANNEL_ID" => account.channel_id = value,
                "NAME" => account.name = value,
                _ => return Err(invalid(
                    &name,
                    "unknown account key (CHANNEL_SECRET, CHANNEL_ACCESS_TOKEN, CHANNEL_ID, NAME)",
                )),
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), SettingsError> {
        self.server.bind_addr()?;
        let url = &self.server.public_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "server.public_url",
                "must start with http:// or https://",
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be above 0"));
        }
        let c = &self.conversation;
        for (key, value) in [
            ("conversation.snapshot_every", c.snapshot_every as u64),
            ("conversation.idle_passivate_ms", c.idle_passivate_ms),
            ("conversation.timer_resolution_ms", c.timer_resolution_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be above 0"));
            }
        }
        if self.storage.path.as_os_str().is_empty() {
            return Err(invalid("storage.path", "must not be empty"));
        }
        self.validate_routing()?;
        self.line.validate()?;
        if self.content.max_bytes == 0 {
            return Err(invalid("content.max_bytes", "must be above 0"));
        }
        for (i, m) in self.automated_messages.iter().enumerate() {
            if !self.workstreams.iter().any(|w| w.id == m.workstream) {
                return Err(invalid(
                    format!("automated_messages[{i}].workstream"),
                    format!("no workstream `{}` is configured", m.workstream),
                ));
            }
            if linedesk_actors::domain::Trigger::parse(&m.trigger).is_none() {
                let all: Vec<_> = linedesk_actors::domain::Trigger::ALL
                    .iter()
                    .map(|t| t.as_str())
                    .collect();
                return Err(invalid(
                    format!("automated_messages[{i}].trigger"),
                    format!("`{}` is not one of {}", m.trigger, all.join(", ")),
                ));
            }
        }
        for (i, a) in self.agents.iter().enumerate() {
            if a.icon_url
                .as_deref()
                .is_some_and(|u| !u.starts_with("https://"))
            {
                return Err(invalid(
                    format!("agents[{i}].icon_url"),
                    "must be an https:// URL (LINE shows only those)",
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, account) in self.accounts.iter().enumerate() {
            if !seen.insert(&account.id) {
                return Err(invalid(
                    format!("accounts[{i}].id"),
                    format!("`{}` is configured twice", account.id),
                ));
            }
            if account.channel_secret.expose_secret().is_empty() {
                return Err(invalid(
                    format!("accounts[{i}].channel_secret"),
                    "must not be empty: webhook signatures are checked with it",
                ));
            }
        }
        Ok(())
    }

    fn validate_routing(&self) -> Result<(), SettingsError> {
        let queues: HashSet<&str> = self.queues.iter().map(|q| q.id.as_str()).collect();
        if queues.len() != self.queues.len() {
            return Err(invalid("queues", "two queues share an id"));
        }
        for (i, q) in self.queues.iter().enumerate() {
            if !["highest_capacity", "round_robin", "most_idle"].contains(&q.assignment.as_str()) {
                return Err(invalid(
                    format!("queues[{i}].assignment"),
                    format!(
                        "`{}` is not highest_capacity, round_robin or most_idle",
                        q.assignment
                    ),
                ));
            }
            if let Some(o) = &q.overflow {
                let key = format!("queues[{i}].overflow");
                if o.max_waiting.is_none() && o.max_wait_ms.is_none() {
                    return Err(invalid(key, "needs max_waiting or max_wait_ms"));
                }
                if let Some(to) = &o.to_queue {
                    if to == &q.id || !queues.contains(to.as_str()) {
                        return Err(invalid(
                            format!("{key}.to_queue"),
                            format!("`{to}` is not another configured queue"),
                        ));
                    }
                }
            }
            if !["exact", "closest"].contains(&q.skill_match.as_str()) {
                return Err(invalid(
                    format!("queues[{i}].skill_match"),
                    format!("`{}` is not exact or closest", q.skill_match),
                ));
            }
        }
        let queue_exists = |key: String, id: &str| {
            if queues.contains(id) {
                Ok(())
            } else {
                Err(invalid(key, format!("no queue `{id}` is configured")))
            }
        };
        let mut workstream_accounts = HashSet::new();
        for (i, w) in self.workstreams.iter().enumerate() {
            if self.account(w.account.as_str()).is_none() {
                return Err(invalid(
                    format!("workstreams[{i}].account"),
                    format!("no account `{}` is configured", w.account),
                ));
            }
            if !workstream_accounts.insert(&w.account) {
                return Err(invalid(
                    format!("workstreams[{i}].account"),
                    format!("account `{}` already has a workstream", w.account),
                ));
            }
            queue_exists(format!("workstreams[{i}].default_queue"), &w.default_queue)?;
            if let Some(fallback) = &w.fallback_queue {
                queue_exists(format!("workstreams[{i}].fallback_queue"), fallback)?;
            }
            if let Some(hours) = &w.operating_hours {
                hours.parse(&format!("workstreams[{i}].operating_hours"))?;
            }
            if w.capacity_units == 0 {
                return Err(invalid(
                    format!("workstreams[{i}].capacity_units"),
                    "must be above 0",
                ));
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            if !self.workstreams.iter().any(|w| w.id == r.workstream) {
                return Err(invalid(
                    format!("rules[{i}].workstream"),
                    format!("no workstream `{}` is configured", r.workstream),
                ));
            }
            queue_exists(format!("rules[{i}].queue"), &r.queue)?;
            if let Some(pattern) = &r.text_regex {
                linedesk_actors::workstream::Rule::compile_regex(&r.name, pattern)
                    .map_err(|e| invalid(format!("rules[{i}].text_regex"), e.to_string()))?;
            }
            check_skills(format!("rules[{i}].skills"), &r.skills)?;
        }
        let mut agents = HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            if !agents.insert(&a.id) {
                return Err(invalid(
                    format!("agents[{i}].id"),
                    format!("`{}` is configured twice", a.id),
                ));
            }
            if a.token.expose_secret().is_empty() {
                return Err(invalid(format!("agents[{i}].token"), "must not be empty"));
            }
            for q in &a.queues {
                queue_exists(format!("agents[{i}].queues"), q)?;
            }
            check_skills(format!("agents[{i}].skills"), &a.skills)?;
        }
        let tokens: HashSet<&str> = self
            .agents
            .iter()
            .map(|a| a.token.expose_secret())
            .collect();
        if tokens.len() != self.agents.len() {
            return Err(invalid("agents", "two agents share a token"));
        }
        if self.routing.heartbeat_interval_ms == 0 {
            return Err(invalid("routing.heartbeat_interval_ms", "must be above 0"));
        }
        if self.routing.restore_chunk == 0 {
            return Err(invalid("routing.restore_chunk", "must be above 0"));
        }
        Ok(())
    }

    /// Queues as the router takes them. Call after `validate`: ids and names are checked there.
    pub fn queue_policies(&self) -> Vec<linedesk_actors::router::actor::QueuePolicy> {
        use linedesk_actors::router::{Assignment, QueueId, QueueSpec, SkillMatch};
        self.queues
            .iter()
            .filter_map(|q| {
                let id = QueueId::parse(q.id.as_str()).ok()?;
                let assignment = match q.assignment.as_str() {
                    "round_robin" => Assignment::RoundRobin,
                    "most_idle" => Assignment::MostIdle,
                    _ => Assignment::HighestCapacity,
                };
                let skill_match = match q.skill_match.as_str() {
                    "closest" => SkillMatch::Closest,
                    _ => SkillMatch::Exact,
                };
                Some(linedesk_actors::router::actor::QueuePolicy {
                    spec: QueueSpec {
                        id,
                        priority: q.priority,
                        assignment,
                        skill_match,
                    },
                    offer_timeout: Duration::from_millis(q.offer_timeout_ms),
                    auto_accept: q.auto_accept,
                    overflow: q
                        .overflow
                        .as_ref()
                        .map(|o| linedesk_actors::router::actor::OverflowPolicy {
                            max_waiting: o.max_waiting,
                            max_wait: o.max_wait_ms.map(Duration::from_millis),
                            to_queue: o.to_queue.clone(),
                        })
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Agents as the router takes them, in `agents` order.
    pub fn agent_specs(&self) -> Vec<linedesk_actors::router::AgentSpec> {
        self.agents
            .iter()
            .map(|a| linedesk_actors::router::AgentSpec {
                id: a.id.clone(),
                capacity: a.capacity,
                skills: a.skills.clone(),
                queues: a
                    .queues
                    .iter()
                    .filter_map(|q| linedesk_actors::router::QueueId::parse(q.as_str()).ok())
                    .collect(),
            })
            .collect()
    }

    /// Workstreams and rules as the conversations classify with them.
    pub fn routing_table(&self) -> linedesk_actors::workstream::RoutingTable {
        use linedesk_actors::workstream::{
            Classification, Conditions, RoutingTable, Rule, Workstream,
        };
        RoutingTable {
            workstreams: self
                .workstreams
                .iter()
                .map(|w| Workstream {
                    id: w.id.clone(),
                    account: w.account.clone(),
                    language: w.language.clone(),
                    default_queue: w.default_queue.clone(),
                    fallback_queue: w
                        .fallback_queue
                        .clone()
                        .unwrap_or_else(|| w.default_queue.clone()),
                    keep_same_agent: w.keep_same_agent,
                    capacity_units: w.capacity_units,
                    show_sender: w.sender,
                    customer_attachments: w.customer_attachments,
                    agent_attachments: w.agent_attachments,
                    // Checked in `validate`.
                    hours: w.operating_hours.as_ref().and_then(|h| h.parse("").ok()),
                })
                .collect(),
            rules: self
                .rules
                .iter()
                .map(|r| Rule {
                    name: r.name.clone(),
                    workstream: r.workstream.clone(),
                    when: Conditions {
                        account: r.account.clone(),
                        text_contains: r.text_contains.clone(),
                        // Checked in `validate`.
                        text_regex: r
                            .text_regex
                            .as_deref()
                            .and_then(|p| Rule::compile_regex(&r.name, p).ok()),
                        language: r.language.clone(),
                        contact: r.contact.clone(),
                    },
                    then: Classification {
                        queue: r.queue.clone(),
                        skills: r.skills.clone(),
                        priority: r.priority,
                    },
                })
                .collect(),
            queues: self.queues.iter().map(|q| q.id.clone()).collect(),
            queue_names: self
                .queues
                .iter()
                .map(|q| (q.id.clone(), q.name.clone().unwrap_or_else(|| q.id.clone())))
                .collect(),
            agent_names: self
                .agents
                .iter()
                .map(|a| (a.id.clone(), a.name.clone()))
                .collect(),
            automated: {
                let mut all = linedesk_actors::workstream::AutomatedMessages::default();
                for m in &self.automated_messages {
                    // Checked in `validate`.
                    if let Some(trigger) = linedesk_actors::domain::Trigger::parse(&m.trigger) {
                        let message = linedesk_actors::workstream::AutomatedMessage {
                            enabled: m.enabled,
                            texts: m.text.clone(),
                        };
                        all.insert(&m.workstream, trigger, message);
                    }
                }
                all
            },
        }
    }

    pub fn account(&self, id: &str) -> Option<&AccountSettings> {
        self.accounts.iter().find(|a| a.id.as_str() == id)
    }
}

fn check_skills(
    key: String,
    skills: &std::collections::BTreeMap<String, u8>,
) -> Result<(), SettingsError> {
    match skills.iter().find(|(_, level)| !(1..=10).contains(*level)) {
        Some((name, level)) => Err(invalid(
            key,
            format!("skill `{name}` has proficiency {level}; it must be 1-10"),
        )),
        None => Ok(()),
    }
}

fn account_env_prefix() -> String {
    format!("{ENV_PREFIX}{ENV_SEPARATOR}ACCOUNTS{ENV_SEPARATOR}")
}

fn account_env_id(id: &AccountId) -> String {
    id.as_str().to_ascii_uppercase().replace('-', "_")
}

/// Shows that a secret is set without showing any of it.
pub fn mask(secret: &SecretString) -> String {
    match secret.expose_secret().chars().count() {
        0 => "(not set)".to_owned(),
        n => format!("******** ({n} chars)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_err(overlay: Option<&Path>, pairs: &[(&str, &str)]) -> String {
        Settings::load_from(overlay, env(pairs))
            .expect_err("settings should be refused")
            .to_string()
    }

    #[test]
    fn the_embedded_defaults_load_and_carry_the_demo_account() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.storage.durability, Durability::Flush);
        assert_eq!(s.server.max_body_bytes, 1024 * 1024);
        let demo = s.account("demo").expect("demo account");
        assert!(!demo.channel_secret.expose_secret().is_empty());
        assert_eq!(
            s.server.callback_url(&demo.id),
            format!("{}/line/webhook/demo", s.server.public_url)
        );
    }

    #[test]
    fn environment_variables_override_the_defaults() {
        let s = Settings::load_from(
            None,
            env(&[
                ("LINEDESK__SERVER__BIND", "127.0.0.1:0"),
                ("LINEDESK__STORAGE__PATH", "/tmp/x"),
                ("LINEDESK__STORAGE__DURABILITY", "os"),
                ("LINEDESK__ACCOUNTS__DEMO__CHANNEL_SECRET", "from-env"),
                ("OTHER__SERVER__BIND", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:0");
        assert_eq!(s.storage.path, PathBuf::from("/tmp/x"));
        assert_eq!(s.storage.durability, Durability::Os);
        assert_eq!(
            s.account("demo").unwrap().channel_secret.expose_secret(),
            "from-env"
        );
    }

    #[test]
    fn an_overlay_file_adds_accounts_and_overrides_keys() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            r#"workstreams = []
rules = []
automated_messages = []
[server]
max_body_bytes = 2048
[[accounts]]
id = "shop-2"
name = "Shop 2"
channel_id = "1"
channel_secret = "s"
channel_access_token = "t""#
        )
        .unwrap();
        let s = Settings::load_from(Some(f.path()), env(&[])).unwrap();
        assert_eq!(s.server.max_body_bytes, 2048);
        // An array in an overlay replaces the default array.
        assert_eq!(s.accounts.len(), 1);
        assert!(s.account("shop-2").is_some());
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        let e = load_err(None, &[("LINEDESK__SERVER__MAX_BODY_BYTES", "lots")]);
        assert!(e.contains("server.max_body_bytes"), "{e}");
        let e = load_err(None, &[("LINEDESK__STORAGE__DURABILITY", "fsync")]);
        assert!(e.contains("storage.durability"), "{e}");
        let e = load_err(None, &[("LINEDESK__SERVER__BIND", "nowhere")]);
        assert!(e.contains("server.bind"), "{e}");
        let e = load_err(None, &[("LINEDESK__ACCOUNTS__NOPE__CHANNEL_SECRET", "x")]);
        assert!(
            e.contains("LINEDESK__ACCOUNTS__NOPE__CHANNEL_SECRET"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_config_file_is_refused_with_its_path_and_key() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[server]\nworkers = \"many\"").unwrap();
        let e = load_err(Some(f.path()), &[]);
        assert!(e.contains("server.workers"), "{e}");

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[server\nbind = ").unwrap();
        let e = load_err(Some(f.path()), &[]);
        assert!(e.contains(&f.path().display().to_string()), "{e}");

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[[accounts]]\nid = \"Bad Id\"\nname = \"x\"\nchannel_id = \"1\"\nchannel_secret = \"s\"\nchannel_access_token = \"t\"").unwrap();
        let e = load_err(Some(f.path()), &[]);
        assert!(e.contains("accounts"), "{e}");
    }

    #[test]
    fn routing_objects_must_refer_to_each_other() {
        let cases = [
            ("[[queues]]\nid = \"general\"\npriority = 1\nassignment = \"random\"\nskill_match = \"exact\"\noffer_timeout_ms = 1\nauto_accept = false", "queues[0].assignment"),
            ("[[rules]]\nname = \"r\"\nworkstream = \"nope\"\nqueue = \"general\"", "rules[0].workstream"),
            ("[[rules]]\nname = \"r\"\nworkstream = \"support\"\nqueue = \"general\"\ntext_regex = \"(\"", "rules[0].text_regex"),
            ("[[agents]]\nid = \"carol\"\nname = \"C\"\ntoken = \"t\"\ncapacity = 1\nqueues = [\"nowhere\"]", "agents[0].queues"),
            ("[[agents]]\nid = \"carol\"\nname = \"C\"\ntoken = \"t\"\ncapacity = 1\nqueues = []\nskills = { billing = 11 }", "agents[0].skills"),
        ];
        for (toml, key) in cases {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            writeln!(f, "{toml}").unwrap();
            let e = load_err(Some(f.path()), &[]);
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let e = load_err(Some(Path::new("/nonexistent/linedesk.toml")), &[]);
        assert!(e.contains("/nonexistent/linedesk.toml"), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        let secret = s
            .account("demo")
            .unwrap()
            .channel_secret
            .expose_secret()
            .to_owned();
        assert!(!format!("{s:?}").contains(&secret));
        assert!(!mask(&s.account("demo").unwrap().channel_secret).contains(&secret));
    }
}
