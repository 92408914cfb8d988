//! `strata simulate`: a server and N clients in one process, talking gRPC over loopback.
//!
//! By default the clients are a population of virtual clients behind one host
//! (`strata_client::run_population`): each joins and works through the same gRPC service as a
//! daemon, but between its tasks it is only an identity and its personal state, so a round
//! costs what its cohort costs. `--daemons` runs each client as a whole daemon instead.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use strata_core::config::RunConfig;
use tokio::sync::{Semaphore, broadcast};

use strata_client::attack::AttackSpec;

use crate::attack_record::{AttackRecord, read_client_rows};

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
    /// Run every client as a whole daemon for the whole run (its own model, channel and
    /// polls), as `strata client` does, instead of a population of virtual clients.
    #[arg(long)]
    daemons: bool,
    /// MiB of clients' personal state kept in memory between their tasks; past it, the least
    /// recently used spill to disk.
    #[arg(long, default_value_t = 1024)]
    personal_memory: u64,
    /// Where spilled personal state goes (kept after the run); default: a temporary directory.
    #[arg(long)]
    personal_dir: Option<PathBuf>,
    /// Makes a share of the clients hostile, to measure defenses: KIND:FRACTION with KIND one
    /// of sign-flip, scale:LAMBDA, noise:SIGMA, free-rider, label-flip (e.g. scale:100:0.1).
    /// The clients are drawn by the run's seed and listed in attack.json.
    #[arg(long)]
    attack: Option<AttackSpec>,
}

/// How a simulation holds its clients.
#[derive(Clone, Debug)]
pub enum Clients {
    /// Virtual clients materialized for their tasks, with this much personal state in memory.
    Population { personal_memory_bytes: u64, personal_dir: Option<PathBuf> },
    /// A whole daemon per client.
    Daemons,
}

impl Default for Clients {
    fn default() -> Self {
        Clients::Population { personal_memory_bytes: 1 << 30, personal_dir: None }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.run.resolve()?;
    let out = args.out.unwrap_or_else(default_out_dir);
    let clients = if args.daemons {
        Clients::Daemons
    } else {
        Clients::Population { personal_memory_bytes: args.personal_memory << 20, personal_dir: args.personal_dir }
    };
    let outcome = simulate(config, out, args.parallel, &args.device, clients, args.attack).await?;
    println!("\n{}", strata_report::results_table(&outcome.summary, &outcome.rounds));
    if let Ok(Some(record)) = AttackRecord::read(&outcome.out_dir) {
        println!("{}", record.describe());
    }
    println!("Run files (report.md, summary.json, metrics.jsonl, accuracy.png) are in {}", outcome.out_dir.display());
    Ok(())
}

/// Runs one simulation of `config` into `out`: a server and `config.clients` clients in this
/// process, `parallel` of them training at once (default: one per core), on `device`.
/// With `attack`, its share of the clients is hostile. Ctrl-C ends the run early; the
/// outcome's `ending` says so.
pub async fn simulate(
    config: RunConfig,
    out: PathBuf,
    parallel: Option<usize>,
    device: &str,
    clients: Clients,
    attack: Option<AttackSpec>,
) -> anyhow::Result<strata_server::RunOutcome> {
    let config = strata_torch::backend::pin_head(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let parallel = parallel.unwrap_or(cores).clamp(1, config.clients as usize);
    // Divide the cores so that K clients training at once do not oversubscribe them.
    let threads = (cores / parallel).max(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind a loopback port")?;
    let server_url = format!("http://{}", listener.local_addr()?);
    tracing::info!(clients = config.clients, parallel, threads, rounds = config.rounds, method = %config.method, "simulation starting");

    // The server holds the same data as the clients (one copy, in this process), so it knows
    // the dataset's fingerprint and each client's sample counts instead of taking the
    // clients' word for them.
    let cache = Arc::new(strata_client::DataCache::default());
    let (fingerprint, share_sizes) = {
        let (cache, config) = (Arc::clone(&cache), config.clone());
        tokio::task::spawn_blocking(move || {
            cache.get(&config).map(|(dataset, partition)| {
                let sizes = strata_server::ShareSizes { train: partition.train_sizes(), test: partition.test_sizes() };
                (dataset.fingerprint(), sizes)
            })
        })
        .await
        .context("loading the data panicked")?
        .context("cannot load the run's data")?
    };

    let hostile = attack.map(|a| a.hostile(config.clients, config.seed)).unwrap_or_default();
    if let Some(a) = attack {
        tracing::warn!(attack = %a.attack, ?hostile, "hostile clients in this simulation");
    }
    let attack_of = |index: u32| attack.filter(|_| hostile.contains(&index)).map(|a| a.attack);

    let (events, _) = broadcast::channel(4096);
    let progress = tokio::spawn(crate::progress::follow(events.subscribe(), config.rounds));
    let (stop_clients, _) = broadcast::channel::<()>(1);
    let mut tasks = tokio::task::JoinSet::new();
    match clients {
        Clients::Population { personal_memory_bytes, personal_dir } => {
            let mut options = strata_client::PopulationOptions::new(server_url.clone(), config.clients);
            options.device = device.to_string();
            options.threads = threads;
            options.parallel = parallel;
            options.personal_memory_bytes = personal_memory_bytes;
            options.personal_dir = personal_dir;
            options.data_cache = Arc::clone(&cache);
            options.attacks = hostile.iter().filter_map(|&i| Some((i, attack_of(i)?))).collect();
            let mut stop = stop_clients.subscribe();
            tasks.spawn(async move {
                let outcome = strata_client::run_population(options, async move {
                    let _ = stop.recv().await;
                })
                .await?;
                Ok(Some(outcome))
            });
        }
        Clients::Daemons => {
            let permits = Arc::new(Semaphore::new(parallel));
            for index in 0..config.clients {
                let mut options = strata_client::ClientOptions::new(server_url.clone());
                options.requested_index = Some(index);
                options.device = device.to_string();
                options.threads = threads;
                options.train_permits = Some(Arc::clone(&permits));
                options.data_cache = Arc::clone(&cache);
                options.attack = attack_of(index);
                let mut stop = stop_clients.subscribe();
                tasks.spawn(async move {
                    strata_client::run(options, async move {
                        let _ = stop.recv().await;
                    })
                    .await
                    .map(|_| None)
                });
            }
        }
    }

    let mut server_options =
        strata_server::ServerOptions::new(config, out, Arc::new(strata_torch::backend::TorchBackend));
    server_options.events = Some(events);
    server_options.dataset_fingerprint = Some(fingerprint);
    server_options.share_sizes = Some(share_sizes);
    let outcome = strata_server::run(server_options, listener, crate::shutdown::signal()).await;
    let _ = stop_clients.send(());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Err(e)) => tracing::warn!("a client ended with an error: {e}"),
            Ok(Ok(Some(population))) => {
                if let Ok(outcome) = &outcome {
                    write_population(&outcome.out_dir, &population);
                }
            }
            _ => {}
        }
    }
    let _ = progress.await;
    if let (Some(a), Ok(outcome)) = (attack, &outcome) {
        write_attack(&outcome.out_dir, &a, hostile);
    }
    Ok(outcome?)
}

/// What the population did, beside the run's records (`population.json`): join time,
/// tasks, and where the clients' personal state lived.
fn write_population(dir: &std::path::Path, p: &strata_client::PopulationOutcome) {
    let s = &p.personal;
    let json = serde_json::json!({
        "clients": p.joined,
        "join_seconds": p.join_seconds,
        "tasks_done": p.tasks_done,
        "tasks_failed": p.tasks_failed,
        "first_failures": p.failures,
        "personal_state": {
            "in_memory": s.in_memory,
            "memory_bytes": s.memory_bytes,
            "peak_memory_bytes": s.peak_memory_bytes,
            "on_disk": s.on_disk,
            "disk_bytes": s.disk_bytes,
            "spilled": s.spilled,
            "reloaded": s.reloaded,
        },
    });
    tracing::info!(%json, "population finished");
    if let Err(e) = std::fs::write(dir.join("population.json"), format!("{json:#}\n")) {
        tracing::warn!("cannot write population.json: {e}");
    }
}

/// Which clients were hostile and how, and how the others fared (`attack.json`), beside the
/// run's records.
fn write_attack(dir: &std::path::Path, attack: &AttackSpec, hostile: Vec<u32>) {
    let honest_clients = match read_client_rows(dir) {
        Ok(rows) => strata_report::honest_accuracy(&rows, &hostile),
        Err(e) => {
            tracing::warn!("the honest clients' accuracy is left out of attack.json: {e:#}");
            None
        }
    };
    let record = AttackRecord {
        attack: attack.attack.to_string(),
        fraction: attack.fraction,
        hostile_clients: hostile,
        honest_clients,
    };
    if let Err(e) = record.write(dir) {
        tracing::warn!("{e:#}");
    }
}

/// `runs/<UTC timestamp>`, so that runs never overwrite each other.
pub fn default_out_dir() -> PathBuf {
    out_dir_at(time::OffsetDateTime::now_utc())
}

/// `runs/YYYYMMDD-HHMMSS` for `at` (in UTC).
fn out_dir_at(at: time::OffsetDateTime) -> PathBuf {
    let t = at.to_offset(time::UtcOffset::UTC);
    let (month, day) = (u8::from(t.month()), t.day());
    let (hour, minute, second) = t.to_hms();
    PathBuf::from("runs").join(format!("{:04}{month:02}{day:02}-{hour:02}{minute:02}{second:02}", t.year()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use time::OffsetDateTime;

    #[test]
    fn run_directories_are_named_by_utc_date_and_time() {
        let at = |secs| super::out_dir_at(OffsetDateTime::from_unix_timestamp(secs).unwrap());
        assert_eq!(at(0), Path::new("runs/19700101-000000"));
        assert_eq!(at(20_783 * 86_400 + 3_723), Path::new("runs/20261126-010203"));
        assert_eq!(at(11_016 * 86_400 + 86_399), Path::new("runs/20000229-235959"));
        let east =
            OffsetDateTime::from_unix_timestamp(0).unwrap().to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(super::out_dir_at(east), Path::new("runs/19700101-000000"), "named in UTC whatever the offset");
    }
}
