//! The command line: `linedesk serve`, `linedesk accounts`, `linedesk fake-line`,
//! `linedesk loadgen` and `linedesk demo`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use linedesk_actors::domain::AccountId;
use secrecy::ExposeSecret;

use crate::fake_line::{FakeChannel, FakeLine, FakeLineConfig, SimulatedCustomers};
use crate::settings::{mask, Settings};
use crate::startup::Application;

#[derive(Debug, Parser)]
#[command(
    name = "linedesk",
    version,
    about = "Customer service for LINE Official Accounts"
)]
pub struct Cli {
    /// Settings file layered over the defaults (environment variables LINEDESK__SECTION__KEY
    /// override both).
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Print every configured LINE account with its callback URL (secrets masked).
    Accounts,
    /// Run a fake LINE platform on loopback (for tests, the demo and load generation): LINE's
    /// Messaging API for linedesk to call, and signed webhooks toward linedesk.
    FakeLine(FakeLineArgs),
    /// Drive a linedesk on this machine as LINE and agents do, and report rates and latencies.
    Loadgen(crate::loadgen::LoadgenArgs),
    /// Run the engine with a fake LINE platform and simulated customers, and print how to join
    /// as an agent: linedesk on a laptop, no LINE account needed.
    Demo(crate::demo::DemoArgs),
}

/// Options of `linedesk fake-line`. Token and secret default to those of `--account` in the
/// settings (so `LINEDESK__ACCOUNTS__DEMO__...` overrides apply).
#[derive(Debug, Args)]
pub struct FakeLineArgs {
    /// Address to listen on; loopback only. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    /// The account the fake serves as a LINE channel.
    #[arg(long, default_value = "demo")]
    pub account: String,
    /// Channel access token linedesk must present (default: the account's).
    #[arg(long)]
    pub token: Option<String>,
    /// Channel secret the webhooks are signed with (default: the account's).
    #[arg(long)]
    pub secret: Option<String>,
    /// linedesk's base URL; webhooks go to {URL}/line/webhook/{account}. Loopback only.
    #[arg(long, value_name = "URL")]
    pub webhook_target: Option<String>,
    /// Latency added to every LINE API request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Simulated customers writing to linedesk (needs --webhook-target).
    #[arg(long, default_value_t = 0)]
    pub customers: usize,
    /// Each simulated customer writes once per interval.
    #[arg(long, default_value_t = 5000)]
    pub interval_ms: u64,
    /// Messages the simulated customers send in total.
    #[arg(long, default_value_t = 100)]
    pub max_messages: usize,
    /// The simulated customers stop after this long even if messages remain.
    #[arg(long, default_value_t = 3_600_000)]
    pub duration_ms: u64,
}

impl FakeLineArgs {
    /// The fake's configuration: one channel, from the options and the settings' account.
    pub fn config(&self, settings: &Settings) -> anyhow::Result<FakeLineConfig> {
        if !self.bind.ip().is_loopback() {
            anyhow::bail!(
                "--bind {}: the fake LINE platform only listens on loopback addresses \
                 (127.0.0.1, ::1)",
                self.bind
            );
        }
        let account = settings.account(&self.account);
        let token = match (&self.token, account) {
            (Some(token), _) => token.clone(),
            (None, Some(account)) => account.channel_access_token.expose_secret().to_owned(),
            (None, None) => anyhow::bail!(
                "--account {}: no such account in the settings; give --token and --secret",
                self.account
            ),
        };
        let secret = match (&self.secret, account) {
            (Some(secret), _) => secret.clone(),
            (None, Some(account)) => account.channel_secret.expose_secret().to_owned(),
            (None, None) => anyhow::bail!(
                "--account {}: no such account in the settings; give --secret",
                self.account
            ),
        };
        let id = AccountId::parse(self.account.clone()).context("--account")?;
        if self.customers > 0 && self.webhook_target.is_none() {
            anyhow::bail!("--customers needs --webhook-target (where linedesk listens)");
        }
        Ok(FakeLineConfig {
            bind: self.bind,
            channels: vec![FakeChannel::new(id, token, secret)],
            webhook_target: self.webhook_target.clone(),
            latency: Duration::from_millis(self.latency_ms),
            ..FakeLineConfig::default()
        })
    }

    fn customers(&self) -> SimulatedCustomers {
        SimulatedCustomers {
            account: Some(self.account.clone()),
            customers: self.customers,
            interval: Duration::from_millis(self.interval_ms),
            max_messages: self.max_messages,
            duration: Duration::from_millis(self.duration_ms),
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref()).context("invalid configuration")?;
    match cli.command {
        Command::Serve => serve(settings),
        Command::Accounts => {
            print_accounts(&settings, &mut std::io::stdout().lock())?;
            Ok(())
        }
        Command::FakeLine(args) => fake_line(settings, args),
        Command::Loadgen(args) => crate::loadgen::command::execute(args, &settings),
        Command::Demo(args) => crate::demo::run(settings, args),
    }
}

fn fake_line(settings: Settings, args: FakeLineArgs) -> anyhow::Result<()> {
    let config = args.config(&settings)?;
    crate::telemetry::init(&settings.log)?;
    actix_web::rt::System::new().block_on(async move {
        let signals = crate::signals::StopSignals::listen();
        let fake = FakeLine::start(config).context("cannot start the fake LINE platform")?;
        // The first line on stdout, as for `serve`: scripts and tests read the port from it.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", fake.base_url())?;
        stdout.flush()?;
        drop(stdout);
        if args.customers > 0 {
            let customers = args.customers();
            let driver = fake.clone();
            actix_web::rt::spawn(async move {
                let report = customers.run(&driver).await;
                println!(
                    "customers done: {} sent, {} accepted, {} refused, {} failed",
                    report.sent, report.accepted, report.refused, report.failed
                );
                tracing::info!(
                    sent = report.sent,
                    accepted = report.accepted,
                    refused = report.refused,
                    failed = report.failed,
                    "simulated customers done"
                );
            });
        }
        if !signals.received().await {
            // Nothing to wait for; serve until the process is killed.
            std::future::pending::<()>().await;
        }
        fake.stop().await;
        Ok(())
    })
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    crate::telemetry::init(&settings.log)?;
    let storage = settings.storage.clone();
    let system = actix_web::rt::System::new();
    let served = system.block_on(async move {
        let app = Application::build(settings).await?;
        // The first line on stdout: scripts and tests read the bound port from it.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{}", app.address())?;
        stdout.flush()?;
        drop(stdout);
        tracing::info!(address = %app.address(), "listening");
        let stopped = app.run_until_stopped().await;
        actix_web::rt::System::current().stop();
        stopped
    });
    // Lets the system stop its arbiters: the conversation actors' threads, which hold database
    // handles until they end.
    if let Err(e) = system.run() {
        tracing::warn!(error.message = %e, "the actor system did not stop cleanly");
    }
    if served.is_ok() && storage.snapshot_on_stop {
        match storage.snapshot_now() {
            Ok(took) => tracing::info!(
                seconds = took.as_secs_f64(),
                "database snapshot written; the next start skips the log replay"
            ),
            Err(e) => tracing::warn!(
                error.message = %e,
                "could not write the database snapshot at stop; the next start replays the log"
            ),
        }
    }
    served
}

pub fn print_accounts(settings: &Settings, out: &mut impl Write) -> std::io::Result<()> {
    if settings.accounts.is_empty() {
        writeln!(out, "no LINE accounts configured")?;
    }
    for account in &settings.accounts {
        writeln!(out, "{} ({})", account.id, account.name)?;
        writeln!(
            out,
            "  callback URL:         {}",
            settings.server.callback_url(&account.id)
        )?;
        writeln!(out, "  channel id:           {}", account.channel_id)?;
        writeln!(
            out,
            "  channel secret:       {}",
            mask(&account.channel_secret)
        )?;
        writeln!(
            out,
            "  channel access token: {}",
            mask(&account.channel_access_token)
        )?;
    }
    Ok(())
}
