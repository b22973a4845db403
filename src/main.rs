use clap::Parser;

fn main() -> anyhow::Result<()> {
    linedesk::cli::run(linedesk::cli::Cli::parse())
}
