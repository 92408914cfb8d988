//! `strata client`: a client daemon that joins a server and trains on its own data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};

#[derive(clap::Args)]
pub struct Args {
    /// The server's URL: https://HOST:PORT for a TLS server (with --tls-ca).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Partition index to ask for (default: the one the server assigns).
    #[arg(long)]
    client_index: Option<u32>,
    /// The client's UUID (default: a new random one). A slot is joined again only with the
    /// session its first join was given: to restart as the same client, use --state-dir.
    #[arg(long)]
    client_id: Option<uuid::Uuid>,
    /// Where to train: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Directory with the dataset's files, if not where the server's config says.
    #[arg(long)]
    data_path: Option<PathBuf>,
    /// libtorch threads for training.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds to keep trying to reach the server.
    #[arg(long, default_value_t = 300)]
    connect_timeout: u64,
    /// KiB of update in each part of an upload (4 to 4032). An upload cut off resumes from
    /// the last whole part the server holds: on a slow link that drops, smaller parts re-send
    /// less; on a fast one, the default costs least.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(4..=4032))]
    upload_part_kib: u32,
    #[command(flatten)]
    tls: super::client_tls::ClientTlsArgs,
    /// File holding this client's token (from `strata token new`), sent on every call; a file
    /// keeps it out of the process list.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Keep this client's identity, session and personal model here, so that a restarted daemon
    /// rejoins as the same client with the model it had (written after every task).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Run N virtual clients in this process, each with its own identity, partition index and
    /// gRPC channel (sharing one copy of the data; `--threads` each, at most one training per
    /// core at a time). With --state-dir, client k keeps its state in DIR/client-k.
    #[arg(long, default_value_t = 1, conflicts_with_all = ["client_index", "client_id"])]
    r#virtual: u32,
    /// Serve the --virtual clients as a population instead of N daemons: each is materialized
    /// only for its tasks (as `simulate` does), and polls through this process. Takes
    /// partition indices from --first-index on; no --state-dir.
    #[arg(long, conflicts_with = "state_dir")]
    population: bool,
    /// With --population: the partition index of the first virtual client.
    #[arg(long, default_value_t = 0, requires = "population")]
    first_index: u32,
    /// With --population: MiB of personal state kept in memory; the rest spills to disk.
    #[arg(long, default_value_t = 1024, requires = "population")]
    personal_memory: u64,
    /// Train with DP-SGD whatever the server's config says (unless it asks for more noise):
    /// this client's own promise for its data, with its own accountant. The noise multiplier z.
    #[arg(long)]
    dp_sgd_noise_multiplier: Option<f64>,
    /// With --dp-sgd-noise-multiplier: the per-sample gradient bound (default 1.0).
    #[arg(long, requires = "dp_sgd_noise_multiplier")]
    dp_sgd_clip: Option<f64>,
    /// With --dp-sgd-noise-multiplier: δ of the ε the client reports (default 1e-5).
    #[arg(long, requires = "dp_sgd_noise_multiplier")]
    dp_sgd_delta: Option<f64>,
    /// Serve Prometheus metrics (/metrics, labelled by client index) and /healthz over HTTP here.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Serve the gRPC health service (grpc.health.v1) here: SERVING while every client of this
    /// process is connected to the server.
    #[arg(long, value_name = "ADDR")]
    health_listen: Option<String>,
}

impl Args {
    /// The client's own DP-SGD settings, checked.
    fn dp_sgd(&self) -> anyhow::Result<Option<strata_core::privacy::DpSgdConfig>> {
        let Some(z) = self.dp_sgd_noise_multiplier else { return Ok(None) };
        let defaults = strata_core::privacy::DpSgdConfig::default();
        let own = strata_core::privacy::DpSgdConfig {
            noise_multiplier: Some(z),
            clipping_norm: self.dp_sgd_clip.unwrap_or(defaults.clipping_norm),
            delta: self.dp_sgd_delta.unwrap_or(defaults.delta),
        };
        own.validate().map_err(|e| anyhow::anyhow!("--{}", e.replace("dp_sgd.", "dp-sgd-").replace('_', "-")))?;
        Ok(Some(own))
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dp_sgd = args.dp_sgd()?;
    let mut options = strata_client::ClientOptions::new(args.server);
    options.dp_sgd = dp_sgd;
    options.client_id = args.client_id.unwrap_or_else(uuid::Uuid::new_v4);
    options.requested_index = args.client_index;
    options.device = args.device;
    options.data_path = args.data_path;
    options.threads = args.threads.max(1);
    options.connect_timeout = std::time::Duration::from_secs(args.connect_timeout);
    options.upload_part_bytes = args.upload_part_kib as usize * 1024;
    options.state_dir = args.state_dir;
    options.tls = args.tls.load()?;
    if let Some(path) = &args.token_file {
        options.token = Some(read_token(path)?);
    }
    let health = match &args.health_listen {
        Some(addr) => Some(strata_telemetry::health::spawn(addr).await.map_err(anyhow::Error::msg)?.0),
        None => None,
    };
    let telemetry = Arc::new(strata_client::ClientTelemetry::new(health));
    if let Some(addr) = &args.metrics_listen {
        // Served for the life of the process.
        strata_telemetry::http::spawn(addr, telemetry.clone(), std::future::pending())
            .await
            .map_err(anyhow::Error::msg)?;
    }
    options.telemetry = Some(telemetry);
    if args.population {
        return run_population(options, args.r#virtual, args.first_index, args.personal_memory).await;
    }
    if args.r#virtual <= 1 {
        let outcome = strata_client::run(options, crate::shutdown::signal()).await?;
        tracing::info!(client = outcome.index, tasks = outcome.tasks_done, "client done");
        return Ok(());
    }
    run_virtual(options, args.r#virtual).await
}

/// N clients in one process, like `simulate`'s but against any server: each a full daemon.
async fn run_virtual(base: strata_client::ClientOptions, n: u32) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let permits = Arc::new(tokio::sync::Semaphore::new((cores / base.threads).max(1)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut clients = tokio::task::JoinSet::new();
    for k in 0..n {
        let mut options = strata_client::ClientOptions::new(base.server.clone());
        options.device = base.device.clone();
        options.data_path = base.data_path.clone();
        options.threads = base.threads;
        options.connect_timeout = base.connect_timeout;
        options.upload_part_bytes = base.upload_part_bytes;
        options.tls = base.tls.clone();
        options.dp_sgd = base.dp_sgd.clone();
        options.token = base.token.clone();
        options.state_dir = base.state_dir.as_ref().map(|d| d.join(format!("client-{k}")));
        options.telemetry = base.telemetry.clone();
        options.data_cache = Arc::clone(&base.data_cache);
        options.train_permits = Some(Arc::clone(&permits));
        let mut stop = stop_rx.clone();
        clients.spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            (k, strata_client::run(options, stopped).await)
        });
    }
    tracing::info!(clients = n, "virtual clients started");
    let mut failed = 0;
    let mut signal = std::pin::pin!(crate::shutdown::signal());
    let mut stopping = false;
    loop {
        tokio::select! {
            next = clients.join_next() => match next {
                None => break,
                Some(Ok((_, Ok(outcome)))) => tracing::info!(client = outcome.index, tasks = outcome.tasks_done, "client done"),
                Some(Ok((k, Err(e)))) => {
                    failed += 1;
                    tracing::error!(virtual_client = k, "client failed: {e}");
                }
                Some(Err(e)) => {
                    failed += 1;
                    tracing::error!("client task panicked: {e}");
                }
            },
            _ = &mut signal, if !stopping => {
                stopping = true;
                let _ = stop_tx.send(true);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {n} virtual clients failed");
    }
    Ok(())
}

/// `--virtual N --population`: one host for N virtual clients against any server.
async fn run_population(
    base: strata_client::ClientOptions,
    clients: u32,
    first_index: u32,
    personal_memory_mib: u64,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let mut options = strata_client::PopulationOptions::new(base.server, clients);
    options.first_index = first_index;
    options.device = base.device;
    options.data_path = base.data_path;
    options.threads = base.threads;
    options.parallel = (cores / base.threads).max(1);
    options.connect_timeout = base.connect_timeout;
    options.tls = base.tls;
    options.token = base.token;
    options.dp_sgd = base.dp_sgd;
    options.personal_memory_bytes = personal_memory_mib << 20;
    let outcome = strata_client::run_population(options, crate::shutdown::signal()).await?;
    tracing::info!(
        clients = outcome.joined,
        join_seconds = outcome.join_seconds,
        tasks = outcome.tasks_done,
        failed = outcome.tasks_failed,
        "population done"
    );
    Ok(())
}

/// The token in `path` (surrounding whitespace ignored); warns if others may read it.
fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --token-file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("--token-file {} is empty", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!("{} can be read by other users (mode {:o}): chmod 600 it", path.display(), mode & 0o777);
        }
    }
    Ok(token.to_string())
}
