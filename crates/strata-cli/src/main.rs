//! The `strata` binary: parses the command line and hands off to the libraries.

mod attack_record;
mod bench;
mod cmd;
mod progress;
mod shutdown;

use clap::Parser;

#[derive(Parser)]
#[command(name = "strata", version, about = "Federated learning on libtorch: server, clients, simulation.")]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: cmd::LogFormat,
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cmd::init_tracing(cli.log_format, cli.command.quiet_by_default());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(cmd::run(cli.command))
}
