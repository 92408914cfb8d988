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
    #[arg(long, conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Go on with the run in DIR from its last completed round (its settings come from
    /// DIR/config.toml; flags override them, e.g. --rounds to extend the run).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// The server's certificate (PEM, chain first): serve TLS instead of plain TCP.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM); others are refused in the handshake.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// File of accepted client tokens (`sha256:<hex>  <label>` lines from `strata token new`);
    /// every call then needs one. Re-read when it changes: delete a line to revoke a token.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Client slots one token or client certificate may hold: a client's slot is bound to the
    /// credential it joined with. Set it to N for `strata client --virtual N` hosts.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    slots_per_credential: u32,
    /// Serve Prometheus metrics (/metrics) and a health check (/healthz) over HTTP here, e.g.
    /// 0.0.0.0:9090. The gRPC port serves grpc.health.v1 either way.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// The fingerprint of the run's dataset, as `strata partition` prints it on a machine
    /// that holds the data: clients that loaded other data are refused. For a server without
    /// a copy of the data; without it, the first client to report a fingerprint fixes it.
    #[arg(long, value_name = "FINGERPRINT")]
    dataset_fingerprint: Option<String>,
    /// MiB of training uploads held at once across clients (default: two models' size, at
    /// least 256); uploads beyond it wait until earlier ones are aggregated.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    upload_budget_mib: Option<u64>,
}

pub async fn run(mut args: Args) -> anyhow::Result<()> {
    if let Some(dir) = &args.resume {
        args.run.config = Some(dir.join("config.toml"));
    }
    let config = strata_torch::backend::pin_head(args.run.resolve()?).map_err(|e| anyhow::anyhow!("{e}"))?;
    let out = match (&args.resume, args.out) {
        (Some(dir), _) => dir.clone(),
        (None, Some(out)) => out,
        (None, None) => super::simulate::default_out_dir(),
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, rounds = config.rounds, clients = config.clients, method = %config.method, "server starting");
    let mut options =
        strata_server::ServerOptions::new(config, out, std::sync::Arc::new(strata_torch::backend::TorchBackend));
    options.resume = args.resume.is_some();
    let own = own_data(&options.config, args.dataset_fingerprint.is_some()).await;
    let (own_fingerprint, sizes) = own.unzip();
    options.dataset_fingerprint = federation_fingerprint(args.dataset_fingerprint, own_fingerprint)?;
    options.share_sizes = sizes;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options.tls = Some(strata_server::ServerTls {
            cert_pem: super::read_pem(cert, "--tls-cert")?,
            key_pem: super::read_pem(key, "--tls-key")?,
            client_ca_pem: args
                .tls_client_ca
                .as_deref()
                .map(|ca| super::read_pem(ca, "--tls-client-ca"))
                .transpose()?,
        });
    }
    options.tokens = args.tokens;
    options.slots_per_credential = args.slots_per_credential;
    options.upload_budget_bytes = args.upload_budget_mib.map(|mib| mib << 20);
    if let Some(addr) = &args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        options.metrics = Some(listener);
    }
    let outcome = strata_server::run(options, listener, crate::shutdown::signal()).await?;
    println!("{}", strata_report::results_table(&outcome.summary, &outcome.rounds));
    println!("Run files are in {}", outcome.out_dir.display());
    Ok(())
}

/// The dataset fingerprint clients must match: `--dataset-fingerprint`, or else that of the
/// server's own copy of the data (both: they must agree); `None` when neither is there.
fn federation_fingerprint(told: Option<String>, own: Option<String>) -> anyhow::Result<Option<String>> {
    if let Some(told) = &told {
        let limit = strata_server::MAX_FINGERPRINT_CHARS;
        if told.is_empty() || told.chars().count() > limit || told.chars().any(char::is_control) {
            anyhow::bail!(
                "--dataset-fingerprint `{}` is not a fingerprint: 1 to {limit} characters, none of them control characters",
                told.escape_default()
            );
        }
    }
    match (told, own) {
        (Some(told), Some(own)) if told != own => anyhow::bail!(
            "--dataset-fingerprint is `{told}`, but the data this server holds is `{own}`: check the flag and --data-path"
        ),
        (told, own) => Ok(told.or(own)),
    }
}

/// The fingerprint of the run's data and each partition index's training and test samples,
/// if this machine holds a copy of the data (where the config or `--data-path` says): then
/// clients are checked against them, not taken at their word. `told`: the operator gave the
/// fingerprint (`--dataset-fingerprint`).
async fn own_data(config: &strata_core::config::RunConfig, told: bool) -> Option<(String, strata_server::ShareSizes)> {
    let config = config.clone();
    let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<(String, strata_server::ShareSizes)> {
        let dataset = strata_data::load(&config.data, config.seed)?;
        let split = strata_data::partition::for_run(&config.data, config.clients as usize, config.seed, &dataset)?;
        let sizes = strata_server::ShareSizes { train: split.train_sizes(), test: split.test_sizes() };
        Ok((dataset.fingerprint(), sizes))
    })
    .await;
    match loaded {
        Ok(Ok(known)) => Some(known),
        Ok(Err(e)) if told => {
            tracing::info!("no copy of the data on the server ({e}); clients must match --dataset-fingerprint");
            None
        }
        Ok(Err(e)) => {
            // The run warns about what this means once it starts.
            tracing::info!("no copy of the data on the server ({e}) and no --dataset-fingerprint");
            None
        }
        Err(e) => {
            tracing::warn!("loading the data panicked: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::federation_fingerprint;

    #[test]
    fn the_fingerprint_is_the_flags_or_the_datas_and_they_must_agree() {
        let fp = |s: &str| Some(s.to_string());
        assert_eq!(federation_fingerprint(fp("a/1"), None).unwrap(), fp("a/1"));
        assert_eq!(federation_fingerprint(None, fp("a/1")).unwrap(), fp("a/1"));
        assert_eq!(federation_fingerprint(fp("a/1"), fp("a/1")).unwrap(), fp("a/1"));
        assert_eq!(federation_fingerprint(None, None).unwrap(), None);
        let disagree = federation_fingerprint(fp("a/1"), fp("b/2")).unwrap_err().to_string();
        assert!(disagree.contains("`a/1`") && disagree.contains("`b/2`"), "{disagree}");
        for bad in ["", "a\nb", &"x".repeat(300)] {
            let err = federation_fingerprint(fp(bad), None).unwrap_err().to_string();
            assert!(err.contains("is not a fingerprint"), "{err}");
        }
    }
}
