//! The `linedesk loadgen` command line: a run (`linedesk loadgen --target URL ...`) or the
//! agents overlay for the server (`linedesk loadgen agents-config --agents N`).

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use secrecy::SecretString;

use super::{agents_config, run, Load, Options};
use crate::settings::Settings;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LoadgenArgs {
    #[command(subcommand)]
    pub command: Option<LoadgenCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum LoadgenCommand {
    /// Print a settings overlay with the load generator's agents (tokens loadgen-agent-{i}), for
    /// `linedesk serve --config FILE`.
    AgentsConfig(AgentsConfigArgs),
}

#[derive(Debug, Args)]
pub struct AgentsConfigArgs {
    /// How many agents.
    #[arg(long)]
    pub agents: u32,
    /// Capacity units of each agent (a conversation takes its workstream's units, 1 by default).
    /// Conversations beyond agents × capacity wait in their queue and their messages go unseen.
    #[arg(long, default_value_t = 100)]
    pub capacity: u32,
    /// Queues the agents take conversations from.
    #[arg(long, value_delimiter = ',', default_value = "general,billing")]
    pub queues: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Base URL of the linedesk to drive; loopback addresses only.
    #[arg(long, value_name = "URL", required = true)]
    pub target: Option<String>,
    /// The account whose callback URL receives the webhooks.
    #[arg(long, default_value = "demo")]
    pub account: String,
    /// Channel secret to sign with; by default the account's, from the settings (so --config
    /// and LINEDESK__ACCOUNTS__{ID}__CHANNEL_SECRET apply).
    #[arg(long)]
    pub secret: Option<String>,
    /// Distinct LINE users writing (each gets a conversation).
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
    /// Text events per webhook request.
    #[arg(long, default_value_t = 1)]
    pub events_per_request: u32,
    /// Open loop: webhook requests per second, latency counted from each one's intended send
    /// time. Without it: closed loop, each connection sending when its last request is answered.
    #[arg(long)]
    pub rate: Option<f64>,
    /// HTTP connections for webhooks.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of load (measured phase).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// At most this many webhook requests in the measured phase.
    #[arg(long)]
    pub max_requests: Option<u64>,
    /// Before measuring, every user writes once and the agents answer (unmeasured), so that the
    /// measured messages go to conversations agents already hold.
    #[arg(long)]
    pub warmup: bool,
    /// Websocket agents (tokens loadgen-agent-0..N-1; see `agents-config`).
    #[arg(long, default_value_t = 0)]
    pub agents: u32,
    /// Milliseconds an agent waits before answering a customer message.
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
    /// Per webhook request, and for agents to connect.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// After the load, at most this long to wait for messages to reach agents and for acks.
    #[arg(long, default_value_t = 5_000)]
    pub drain_ms: u64,
    /// One JSON object on stdout at the end instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Embed a fake LINE platform listening here (loopback, e.g. 127.0.0.1:9100) for the
    /// account (its access token and secret from the settings), and measure agent send → LINE.
    /// Start the server with LINEDESK__LINE__API_BASE and LINEDESK__LINE__DATA_API_BASE set to
    /// http://ADDRESS.
    #[arg(long, value_name = "ADDRESS")]
    pub line_bind: Option<std::net::SocketAddr>,
}

impl RunArgs {
    /// The run's options; the secret comes from `--secret` or the account in `settings`.
    pub fn options(&self, settings: &Settings) -> anyhow::Result<Options> {
        let secret: SecretString = match &self.secret {
            Some(secret) => secret.clone().into(),
            None => settings
                .account(&self.account)
                .with_context(|| {
                    format!(
                        "account `{}` is not in the settings: pass --secret or --config",
                        self.account
                    )
                })?
                .channel_secret
                .clone(),
        };
        anyhow::ensure!(
            self.duration.is_finite() && self.duration > 0.0,
            "--duration must be a number of seconds above 0"
        );
        let mut options = Options::new(self.target.clone().unwrap_or_default(), secret);
        options.account = self.account.clone();
        options.users = self.users;
        options.events_per_request = self.events_per_request;
        options.load = match self.rate {
            Some(rate) => Load::Open { rate },
            None => Load::Closed,
        };
        options.connections = self.connections;
        options.duration = Duration::from_secs_f64(self.duration);
        options.max_requests = self.max_requests;
        options.warmup = self.warmup;
        options.agents = self.agents;
        options.think = Duration::from_millis(self.think_ms);
        options.timeout = Duration::from_millis(self.timeout_ms);
        options.drain = Duration::from_millis(self.drain_ms);
        options.progress = !self.quiet;
        Ok(options)
    }
}

/// Runs `linedesk loadgen`.
pub fn execute(args: LoadgenArgs, settings: &Settings) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if let Some(LoadgenCommand::AgentsConfig(a)) = args.command {
        anyhow::ensure!(a.agents > 0, "--agents must be at least 1");
        write!(stdout, "{}", agents_config(a.agents, a.capacity, &a.queues))?;
        return Ok(());
    }
    let mut options = args.run.options(settings)?;
    let line_account = match args.run.line_bind {
        Some(_) => Some(settings.account(&args.run.account).with_context(|| {
            format!(
                "--line-bind needs account `{}` in the settings (its access token)",
                args.run.account
            )
        })?),
        None => None,
    };
    let report = actix_web::rt::System::new().block_on(async move {
        if let (Some(bind), Some(account)) = (args.run.line_bind, line_account) {
            let line = super::embedded_line(bind, account)
                .with_context(|| format!("the fake LINE platform can't listen on {bind}"))?;
            options.line = Some(line);
        }
        run(options).await.context("loadgen could not run")
    })?;
    if args.run.json {
        writeln!(stdout, "{}", report.to_json())?;
    } else {
        write!(stdout, "{report}")?;
    }
    Ok(())
}
