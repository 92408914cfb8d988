//! `strata client`: a client daemon that joins a server and trains on its own data.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The server's URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Partition index to ask for (default: the one the server assigns).
    #[arg(long)]
    client_index: Option<u32>,
    /// Identity to keep across restarts (default: a new random UUID).
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
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut options = strata_client::ClientOptions::new(args.server);
    options.client_id = args.client_id.unwrap_or_else(uuid::Uuid::new_v4);
    options.requested_index = args.client_index;
    options.device = args.device;
    options.data_path = args.data_path;
    options.threads = args.threads.max(1);
    options.connect_timeout = std::time::Duration::from_secs(args.connect_timeout);
    let outcome = strata_client::run(options, crate::shutdown::signal()).await?;
    tracing::info!(client = outcome.index, tasks = outcome.tasks_done, "client done");
    Ok(())
}
