//! The command line: `linedesk serve`, `linedesk accounts` and `linedesk loadgen`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    /// Drive a linedesk on this machine as LINE and agents do, and report rates and latencies.
    Loadgen(crate::loadgen::LoadgenArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref()).context("invalid configuration")?;
    match cli.command {
        Command::Serve => serve(settings),
        Command::Accounts => {
            print_accounts(&settings, &mut std::io::stdout().lock())?;
            Ok(())
        }
        Command::Loadgen(args) => crate::loadgen::command::execute(args, &settings),
    }
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    crate::telemetry::init(&settings.log)?;
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        // The first line on stdout: scripts and tests read the bound port from it.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{}", app.address())?;
        stdout.flush()?;
        drop(stdout);
        tracing::info!(address = %app.address(), "listening");
        app.run_until_stopped().await
    })
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
