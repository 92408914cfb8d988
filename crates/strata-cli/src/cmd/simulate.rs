//! `strata simulate`: a server and N clients in one process, each client with its own gRPC
//! channel over loopback — the daemons' code paths, with no shortcut around the network.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use strata_core::config::RunConfig;
use tokio::sync::{Semaphore, broadcast};

use super::RunArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Clients that train at the same time; libtorch's threads are divided among them.
    #[arg(long)]
    parallel: Option<usize>,
    /// Where the clients train: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Directory for the run's files (default: runs/<timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.run.resolve()?;
    let out = args.out.unwrap_or_else(default_out_dir);
    let outcome = simulate(config, out, args.parallel, &args.device).await?;
    println!("\n{}", strata_report::results_table(&outcome.summary, &outcome.rounds));
    println!("Run files (report.md, summary.json, metrics.jsonl, accuracy.png) are in {}", outcome.out_dir.display());
    Ok(())
}

/// Runs one simulation of `config` into `out`: a server and `config.clients` clients in this
/// process, `parallel` of them training at once (default: one per core), on `device`.
/// Ctrl-C ends the run early; the outcome's `ending` says so.
pub async fn simulate(
    config: RunConfig,
    out: PathBuf,
    parallel: Option<usize>,
    device: &str,
) -> anyhow::Result<strata_server::RunOutcome> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let parallel = parallel.unwrap_or(cores).clamp(1, config.clients as usize);
    // Divide the cores so that K clients training at once do not oversubscribe them.
    let threads = (cores / parallel).max(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind a loopback port")?;
    let server_url = format!("http://{}", listener.local_addr()?);
    tracing::info!(clients = config.clients, parallel, threads, rounds = config.rounds, method = %config.method, "simulation starting");

    let (events, _) = broadcast::channel(4096);
    let progress = tokio::spawn(crate::progress::follow(events.subscribe(), config.rounds));
    let permits = Arc::new(Semaphore::new(parallel));
    let cache = Arc::new(strata_client::DataCache::default());
    let (stop_clients, _) = broadcast::channel::<()>(1);
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..config.clients {
        let mut options = strata_client::ClientOptions::new(server_url.clone());
        options.requested_index = Some(index);
        options.device = device.to_string();
        options.threads = threads;
        options.train_permits = Some(Arc::clone(&permits));
        options.data_cache = Arc::clone(&cache);
        let mut stop = stop_clients.subscribe();
        clients.spawn(async move {
            strata_client::run(options, async move {
                let _ = stop.recv().await;
            })
            .await
        });
    }

    let mut server_options = strata_server::ServerOptions::new(config, out);
    server_options.events = Some(events);
    let outcome = strata_server::run(server_options, listener, crate::shutdown::signal()).await;
    let _ = stop_clients.send(());
    while let Some(joined) = clients.join_next().await {
        if let Ok(Err(e)) = joined {
            tracing::warn!("a client ended with an error: {e}");
        }
    }
    let _ = progress.await;
    Ok(outcome?)
}

/// `runs/<UTC timestamp>`, so that runs never overwrite each other.
pub fn default_out_dir() -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    PathBuf::from("runs").join(format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60))
}

/// Days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn days_convert_to_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_783), (2026, 11, 26));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
