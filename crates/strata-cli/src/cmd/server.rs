//! `strata server`: the aggregation server as a daemon.

use std::path::PathBuf;

use anyhow::Context;

use super::RunArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    /// Directory for the run's files (default: runs/<timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.run.resolve()?;
    let out = args.out.unwrap_or_else(super::simulate::default_out_dir);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, rounds = config.rounds, clients = config.clients, method = %config.method, "server starting");
    let outcome =
        strata_server::run(strata_server::ServerOptions::new(config, out), listener, crate::shutdown::signal()).await?;
    println!("{}", strata_report::results_table(&outcome.summary, &outcome.rounds));
    println!("Run files are in {}", outcome.out_dir.display());
    Ok(())
}
