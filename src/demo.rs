//! `linedesk demo`: the engine, a fake LINE platform in its place, and a few simulated
//! customers writing in, in one process; it prints how to join as an agent.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use secrecy::ExposeSecret;

use crate::fake_line::{FakeLine, FakeLineConfig, SimulatedCustomers};
use crate::settings::Settings;
use crate::startup::Application;

/// Options of `linedesk demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Simulated customers writing to the demo account.
    #[arg(long, default_value_t = 3)]
    pub customers: usize,
    /// Each simulated customer writes once per interval.
    #[arg(long, default_value_t = 20_000)]
    pub interval_ms: u64,
    /// Messages the simulated customers send in total (then they stop; the desk keeps running).
    #[arg(long, default_value_t = 30)]
    pub max_messages: usize,
}

pub fn run(mut settings: Settings, args: DemoArgs) -> anyhow::Result<()> {
    crate::telemetry::init(&settings.log)?;
    actix_web::rt::System::new().block_on(async move {
        let line = FakeLine::start(FakeLineConfig::from_settings(&settings))
            .context("cannot start the fake LINE platform")?;
        // LINE is the fake one: every reply, push, profile and download goes to it.
        settings.line.api_base = line.base_url();
        settings.line.data_api_base = line.base_url();
        let app = Application::build(settings.clone()).await?;
        let address = format!("http://{}", app.address());
        line.set_webhook_target(Some(address.clone()))
            .context("the fake LINE platform cannot reach linedesk")?;
        print_welcome(&settings, &address, &line.base_url(), &args)?;
        let customers = SimulatedCustomers {
            account: settings.accounts.first().map(|a| a.id.to_string()),
            customers: args.customers,
            interval: Duration::from_millis(args.interval_ms),
            max_messages: args.max_messages,
            duration: Duration::from_secs(24 * 3600),
        };
        let driver = line.clone();
        actix_web::rt::spawn(async move {
            let report = customers.run(&driver).await;
            tracing::info!(
                sent = report.sent,
                accepted = report.accepted,
                "simulated customers are done"
            );
        });
        let stopped = app.run_until_stopped().await;
        line.stop().await;
        stopped
    })
}

fn print_welcome(
    settings: &Settings,
    address: &str,
    line: &str,
    args: &DemoArgs,
) -> anyhow::Result<()> {
    let ws = address.replacen("http", "ws", 1);
    let mut out = std::io::stdout().lock();
    // The first line, as for `serve`: scripts read the address from it.
    writeln!(out, "listening on {address}")?;
    writeln!(out)?;
    writeln!(
        out,
        "linedesk demo: {} simulated customers write to account `{}` every {} s ({} messages in all).",
        args.customers,
        settings.accounts.first().map_or("-", |a| a.id.as_str()),
        args.interval_ms / 1000,
        args.max_messages
    )?;
    writeln!(
        out,
        "A fake LINE platform at {line} plays LINE: it receives every reply and push."
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Join as an agent (any websocket client; frames in docs/agent-protocol.md):"
    )?;
    for agent in &settings.agents {
        writeln!(
            out,
            "  {:<8} websocat '{ws}/agent/ws?token={}'",
            agent.name,
            agent.token.expose_secret()
        )?;
    }
    writeln!(out, "then send, for example:")?;
    writeln!(
        out,
        r#"  {{"type": "accept", "conversation_id": "<from the offer>"}}"#
    )?;
    writeln!(
        out,
        r#"  {{"type": "send", "conversation_id": "<id>", "client_msg_id": "m1", "text": "How can I help?"}}"#
    )?;
    writeln!(out)?;
    writeln!(out, "Watch it:")?;
    writeln!(
        out,
        "  curl -H 'Authorization: Bearer {}' {address}/api/conversations",
        settings.admin.token.expose_secret()
    )?;
    writeln!(
        out,
        "  curl {line}/_fake/deliveries      # what reached the customers' LINE"
    )?;
    writeln!(
        out,
        r#"  curl -X POST {line}/_fake/customers/U00000000000000000000000000000042/messages -H 'content-type: application/json' -d '{{"text": "hello"}}'"#
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Ctrl-C stops it (state stays in {}).",
        settings.storage.path.display()
    )?;
    out.flush()?;
    Ok(())
}
