//! Strata's coordinator: it admits clients, runs the rounds, aggregates through a
//! [`Strategy`](strategy::Strategy), and writes the run's records.
//!
//! # Layout
//! - [`run`]: has the backend ([`ModelBackend`]) build the initial model, serves gRPC on a
//!   listener the caller bound, and runs the round loop until the run completes or `shutdown`
//!   resolves.
//! - `service`: the gRPC handlers (join, poll, download, upload).
//! - `round`: the round loop, the only code that waits on clients.
//! - `registry`: clients by UUID, their index and mailbox.
//! - `gate`: the open round, as the handlers see it (who may send what).
//! - `validate`: the only place a [`ValidUpdate`](validate::ValidUpdate) is made.
//! - [`strategy`]: the server halves of methods, IO-free.
//! - `output`: the run's files.
//! - [`events`]: what observers (progress bars, tests) hear.
//! - `tls`: rustls settings ([`ServerTls`]) and the warning for plain TCP off loopback.
//! - `unimplemented`: an `UNIMPLEMENTED` reply says what the server serves, not nothing.
//! - [`auth`]: the interceptor that checks client tokens against the tokens file.
//! - `metrics`: the Prometheus metrics (`ServerOptions::metrics`); the gRPC port also serves
//!   `grpc.health.v1`, SERVING while the run goes on.

mod assignment;
pub mod auth;
mod budget;
mod calibration_phase;
pub mod ccvr;
pub mod client_info;
pub mod events;
mod gate;
mod metrics;
mod output;
mod privacy;
mod registry;
mod round;
mod secure_round;
mod service;
mod state;
pub mod strategy;
#[cfg(test)]
mod test_backend;
mod tls;
mod unimplemented;
pub mod validate;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_core::config::RunConfig;
use strata_proto::assemble::AssemblyLimits;
use strata_proto::pb::federation_server::FederationServer;
use strata_report::RunSummary;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

pub use events::ServerEvent;
pub use registry::{MAX_FINGERPRINT_CHARS, ShareSizes};
pub use round::Ending;
pub use state::StateError;
pub use strata_core::backend::{BackendError, HeadTraining, LinearHead, ModelBackend};
pub use tls::{ServerTls, TlsError};

/// What a server needs besides its listener.
pub struct ServerOptions {
    pub config: RunConfig,
    /// Where the run's files go.
    pub out_dir: PathBuf,
    /// Builds the initial model and retrains the classifier for calibration: the server links
    /// no tensor library (the `strata` binary gives it `strata_torch::backend::TorchBackend`).
    pub backend: Arc<dyn ModelBackend>,
    /// Size of parameter slices on the wire (clamped to the protocol's maximum).
    pub chunk_bytes: usize,
    /// Observers of the run; `None` creates a channel nobody listens to.
    pub events: Option<broadcast::Sender<ServerEvent>>,
    /// Go on with the run saved in `out_dir` (its `state/`) instead of starting one.
    pub resume: bool,
    /// TLS on every connection (and mutual TLS with a client CA); `None` serves plain TCP.
    pub tls: Option<ServerTls>,
    /// A tokens file (`<sha256-hex>  <label>` lines): every call then needs one of its tokens.
    /// It is re-read when it changes, so deleting a line revokes that token without a restart.
    pub tokens: Option<PathBuf>,
    /// Client slots one credential (a token, or else a client certificate) may hold; a slot is
    /// bound to the credential it was joined with. Without tokens or client certificates,
    /// slots are bound to sessions only.
    pub slots_per_credential: u32,
    /// Serve Prometheus metrics (`/metrics`) and `/healthz` over HTTP here while the run goes on.
    pub metrics: Option<TcpListener>,
    /// The fingerprint of the dataset every client must hold (`strata_data::Dataset::fingerprint`),
    /// from the operator's own copy of the data or given by the operator. `None`: the first
    /// client to report one fixes it, so a client that joins first with a made-up one locks
    /// out every honest client.
    pub dataset_fingerprint: Option<String>,
    /// Each partition index's training and test samples, from the operator's own partition
    /// of the data: a client must report exactly its index's counts (its weight in an
    /// average, its accuracy's weight in the records). `None`: at most
    /// `max_samples_per_client` from the config, if set.
    pub share_sizes: Option<ShareSizes>,
    /// Bytes of training uploads the server holds at once (default: two models, at least
    /// 256 MiB); uploads beyond it wait for earlier ones to be aggregated.
    pub upload_budget_bytes: Option<u64>,
}

impl ServerOptions {
    pub fn new(config: RunConfig, out_dir: PathBuf, backend: Arc<dyn ModelBackend>) -> Self {
        Self {
            config,
            out_dir,
            backend,
            chunk_bytes: strata_proto::DEFAULT_CHUNK_BYTES,
            events: None,
            resume: false,
            tls: None,
            tokens: None,
            slots_per_credential: 1,
            metrics: None,
            dataset_fingerprint: None,
            share_sizes: None,
            upload_budget_bytes: None,
        }
    }
}

/// How often the server pings an idle-looking connection, and how long it waits for the answer.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How a run went.
#[derive(Debug)]
pub struct RunOutcome {
    pub ending: Ending,
    pub summary: RunSummary,
    pub rounds: Vec<strata_core::records::RoundRecord>,
    pub out_dir: PathBuf,
}

/// Why a run could not start or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] strata_core::config_error::ConfigError),
    /// The TLS files do not hold what they should, or rustls refuses them.
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Tokens(#[from] strata_security::token_store::TokenFileError),
    #[error("cannot resume: {0}")]
    Resume(#[from] StateError),
    #[error("cannot resume: {0}")]
    Restore(#[from] strategy::RestoreError),
    /// The model backend could not build the initial model.
    #[error("{0}")]
    Model(strata_core::backend::BackendError),
    /// A task the run depends on panicked or was cancelled (a bug, reported rather than hidden).
    #[error("{what} failed: {source}")]
    Task { what: &'static str, source: tokio::task::JoinError },
    /// Too few clients joined before `liveness.start_deadline_secs`; the run's files say so.
    #[error(
        "only {joined} of the {needed} clients the run needs (min_clients) joined within {waited} s (liveness.start_deadline_secs)"
    )]
    NeverStarted { joined: usize, needed: usize, waited: u64 },
    #[error("cannot write {path}: {source}")]
    Output { path: PathBuf, source: std::io::Error },
    #[error("cannot write the run's report: {0}")]
    Report(#[from] strata_report::ReportError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Runs one federated run to completion on `listener`.
///
/// The caller owns the port (tests bind `127.0.0.1:0`) and decides when to stop: when
/// `shutdown` resolves, the run ends after writing what it has.
pub async fn run(
    options: ServerOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunOutcome, ServerError> {
    let started = Instant::now();
    let config = options.config;
    config.validate()?;
    // Security settings are checked before the model is built, so a typo fails at once.
    let tls = options.tls.as_ref().map(ServerTls::to_tonic).transpose()?;
    let tokens = match &options.tokens {
        Some(path) => Some(Arc::new(strata_security::TokenStore::open(path)?)),
        None => None,
    };
    let (model_spec, initial) = initial_model(&config, Arc::clone(&options.backend)).await?;
    if config.dp_sgd.is_on()
        && let Some(name) = model_spec.iter().map(|s| &s.name).find(|n| n.ends_with("running_mean"))
    {
        return Err(ServerError::Config(strata_core::config_error::ConfigError::Invalid(format!(
            "dp_sgd: model `{}` has batch normalization (`{name}`), which mixes the samples of a batch, so \
             per-sample clipping does not bound one sample's influence; use a model without it",
            config.model.name
        ))));
    }
    let private = privacy::settings(&config)
        .map_err(|e| ServerError::Config(strata_core::config_error::ConfigError::Invalid(e)))?;
    let parts = strata_core::parts::ModelParts::resolve(
        config.model.head.as_deref(),
        config.model.torchscript_path().is_some(),
        &model_spec,
        None,
    )
    .map_err(|e| {
        ServerError::Config(strata_core::config_error::ConfigError::Invalid(format!(
            "model `{}`: {e}",
            config.model.name
        )))
    })?;
    let mut strategy =
        strategy::build(config.method, &parts, initial, &config.methods, &config.defense, private.clone());
    for (key, value) in strategy.summary() {
        info!(key, %value, "strategy setting");
    }
    let samples = match (options.share_sizes, config.max_samples_per_client) {
        (Some(known), _) => registry::SampleBounds::Known(Arc::new(known)),
        (None, Some(max)) => registry::SampleBounds::AtMost(max),
        (None, None) => registry::SampleBounds::Unbounded,
    };
    let (output, registry, run_id, start_round) = if options.resume {
        let (saved, snapshot) = state::load(&options.out_dir)?;
        strategy.restore(snapshot)?;
        let clients: Vec<_> = saved.clients.iter().map(state::SavedClient::identity).collect();
        if let (Some(known), Some(saved)) = (&options.dataset_fingerprint, &saved.fingerprint)
            && known != saved
        {
            warn!(%known, %saved, "the saved run trained on other data than the server's now; clients must match the server's");
        }
        let fingerprint = options.dataset_fingerprint.clone().or(saved.fingerprint.clone());
        let registry = registry::Registry::resumed(config.clients, &clients, fingerprint)
            .with_patience(Duration::from_secs(config.liveness.offline_after_secs))
            .with_sample_bounds(samples)
            .with_slots_per_credential(options.slots_per_credential);
        info!(run_id = %saved.run_id, next_round = saved.next_round, clients = clients.len(), "resuming");
        (output::RunOutput::resume(&options.out_dir, saved.next_round)?, registry, saved.run_id, saved.next_round)
    } else {
        let output = output::RunOutput::create(&options.out_dir, &config)?;
        if options.dataset_fingerprint.is_none() {
            warn!(
                "the server has no copy of the data: the first client to join fixes the dataset every client must hold"
            );
        }
        let registry = registry::Registry::new(config.clients)
            .with_patience(Duration::from_secs(config.liveness.offline_after_secs))
            .with_fingerprint(options.dataset_fingerprint.clone())
            .with_sample_bounds(samples)
            .with_slots_per_credential(options.slots_per_credential);
        (output, registry, uuid::Uuid::new_v4().to_string(), 0)
    };
    let gate = Arc::new(gate::RoundGate::default());
    let events = options.events.unwrap_or_else(|| broadcast::channel(1024).0);
    // Stops the metrics listener when the run ends.
    let (metrics_stop, metrics_stopped) = oneshot::channel::<()>();
    if let Some(listener) = options.metrics {
        let patience = Duration::from_secs(config.liveness.offline_after_secs);
        let source = metrics::ServerMetrics::new(registry.clone(), patience, config.clients);
        tokio::spawn(Arc::clone(&source).follow(events.subscribe()));
        info!(addr = ?listener.local_addr().ok(), "metrics at /metrics, health at /healthz");
        tokio::spawn(async move {
            let stopped = async {
                let _ = metrics_stopped.await;
            };
            if let Err(e) = strata_telemetry::http::serve(listener, source, stopped).await {
                tracing::warn!("metrics endpoint stopped: {e}");
            }
        });
    }
    // Room for one report per client: the loop drains them as they come.
    let (report_tx, report_rx) = mpsc::channel(config.clients as usize + 1);
    let model_bytes = (model_spec.iter().map(|s| s.numel()).sum::<usize>() * 4) as u64;
    let service = service::FederationService {
        run_id: run_id.clone(),
        config_toml: config.to_toml(),
        registry: registry.clone(),
        gate: Arc::clone(&gate),
        reports: report_tx,
        events: events.clone(),
        chunk_bytes: options.chunk_bytes,
        limits: AssemblyLimits { max_total_bytes: model_bytes },
        max_abs_value: config.defense.max_abs_value,
        upload_budget: options
            .upload_budget_bytes
            .map_or_else(|| budget::UploadBudget::for_model(model_bytes), budget::UploadBudget::new),
        max_poll_wait: Duration::from_secs(30),
        compression: config.compression,
        seed: config.seed,
        parked: Default::default(),
    };
    let addr = listener.local_addr().ok();
    if let Some(warning) = addr.and_then(|a| tls::plaintext_warning(a, tls.is_some())) {
        tracing::warn!("{warning}");
    }
    let mutual = options.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some());
    if let Some(warning) = addr.and_then(|a| auth::open_door_warning(a, tokens.is_some(), mutual)) {
        tracing::warn!("{warning}");
    }
    info!(?addr, run_id = %service.run_id, tls = tls.is_some(), mutual, tokens = tokens.is_some(), "serving");

    // HTTP/2's default 64 KiB windows make a model download a long exchange of window updates.
    let mut builder = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(unimplemented::explain::<tonic::body::Body>))
        .tcp_nodelay(true)
        // A client whose link died mid-upload sends nothing more, and a server that only
        // receives never learns: pings find such connections, so their uploads are kept for
        // resuming. The timeout is long, as a ping's answer queues behind a slow link's data.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(strata_proto::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(strata_proto::CONNECTION_WINDOW_BYTES);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| TlsError::Rustls(chain(&e)))?;
    }
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // Health checks need no token (probes carry none); with mutual TLS they still need a certificate.
    let (health, health_service) = strata_telemetry::health::service().await;
    let server = builder
        .add_service(health_service)
        .add_service(FederationServer::with_interceptor(service, auth::TokenCheck::new(tokens)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    // Dropping `run` (a crash test aborting it, a caller giving up) takes the listener down too.
    let server = AbortOnDropHandle::new(tokio::spawn(server));

    let rounds = round::RoundLoop {
        config: config.clone(),
        registry,
        gate,
        reports: report_rx,
        strategy,
        model_spec,
        parts,
        backend: options.backend,
        events,
        output,
        run_id,
        start_round,
        clients_saved: None,
        session: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
        // Every training round before a resumed run's first released a noised model.
        privacy: private.as_ref().map(|s| privacy::PrivacyLedger::new(s, config.fraction, start_round)),
        aggregation_time: Duration::ZERO,
        saving: None,
    };
    strata_telemetry::health::set(&health, strata_telemetry::health::ServingStatus::Serving).await;
    let (ending, output) = rounds.run(shutdown).await;
    strata_telemetry::health::set(&health, strata_telemetry::health::ServingStatus::NotServing).await;
    let _ = stop_tx.send(());
    let _ = metrics_stop.send(());
    // Serving ends once open calls finish; long polls answer within their wait.
    match tokio::time::timeout(Duration::from_secs(35), server).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => return Err(ServerError::Task { what: "the gRPC server task", source: join }),
        Err(_) => tracing::warn!("gRPC server did not stop in time; aborting it"),
    }
    let summary = output.finish(&config, started.elapsed().as_secs_f64())?;
    info!(dir = %output.dir().display(), ?ending, "run outputs written");
    if let Ending::NeverStarted { joined, needed } = ending {
        let waited = config.liveness.start_deadline_secs.unwrap_or_default();
        return Err(ServerError::NeverStarted { joined, needed, waited });
    }
    Ok(RunOutcome { ending, summary, rounds: output.rounds().to_vec(), out_dir: output.dir().to_path_buf() })
}

/// An error and its causes on one line (tonic's own message alone says "transport error").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

/// Has the operator's backend build the method's starting point from the seed, so the server
/// knows the model's spec (what every upload is checked against) without trusting any client
/// for it. Off the runtime's threads: the backend may run libtorch.
async fn initial_model(
    config: &RunConfig,
    backend: Arc<dyn ModelBackend>,
) -> Result<(Vec<strata_core::tensor::TensorSpec>, strata_core::tensor::TensorSet), ServerError> {
    let config = config.clone();
    let built = tokio::task::spawn_blocking(move || backend.initial_model(&config))
        .await
        .map_err(|source| ServerError::Task { what: "model initialization", source })?
        .map_err(ServerError::Model)?;
    Ok((built.specs(), built))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use strata_core::backend::{BackendError, HeadTraining, LinearHead};
    use strata_core::tensor::TensorSet;

    use super::*;
    use crate::test_backend::PlainBackend;

    struct NoModel;

    impl ModelBackend for NoModel {
        fn initial_model(&self, config: &RunConfig) -> Result<TensorSet, BackendError> {
            Err(format!("no model `{}` here", config.model.name).into())
        }
        fn retrain_head(
            &self,
            _: &LinearHead,
            _: &[f32],
            _: &[i64],
            _: HeadTraining,
        ) -> Result<LinearHead, BackendError> {
            Err("unused".into())
        }
    }

    /// The backend's failure to build the model is the run's, before anything is served or
    /// written; with a model, the run serves until told to stop.
    #[tokio::test]
    async fn the_run_starts_from_the_backends_model_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let config = RunConfig::reference_fmnist();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = ServerOptions::new(config.clone(), dir.path().join("failed"), Arc::new(NoModel));
        match run(options, listener, std::future::pending()).await {
            Err(ServerError::Model(e)) => assert!(e.to_string().contains("no model `cnn` here"), "{e}"),
            other => panic!("expected the backend's error, got {other:?}"),
        }
        assert!(!dir.path().join("failed").exists());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = ServerOptions::new(config, dir.path().join("run"), Arc::new(PlainBackend));
        let outcome = run(options, listener, std::future::ready(())).await.unwrap();
        assert_eq!(outcome.ending, Ending::Interrupted);
        assert!(dir.path().join("run/config.toml").exists());
    }
}
