//! Strata's client daemon: it joins a server, loads its own share of the data, and works
//! through the tasks the server gives it until the run is over.
//!
//! # Layout
//! - [`run`]: join (retrying with backoff while the server is not up), load data, then the
//!   task loop: poll, download, merge/train/evaluate on a blocking thread, upload.
//! - `task_loop`: a joined client's loop: tasks, server outages, rejoining a restarted server.
//! - [`run_population`]: many virtual clients behind one host, each materialized only for
//!   its task; `personal_store` keeps their personal state between tasks (memory, then disk).
//! - `local`: the personal model and the blocking work on it.
//! - `method`: client halves of methods (how received parameters merge, what goes back).
//! - `transfer`: chunked download and upload.
//! - `tls`: rustls settings ([`ClientTls`]); a TLS failure ends connecting instead of retrying.
//! - `auth`: the token sent as `authorization: Bearer <token>` on every call.
//! - [`DataCache`]: one copy of the data per process, shared by simulated clients.
//! - [`ClientTelemetry`]: Prometheus metrics and gRPC health of the process's clients.

pub mod attack;
mod auth;
mod backoff;
mod data_cache;
mod error;
mod example_ledger;
mod local;
pub mod method;
mod outgoing;
mod persist;
mod personal_store;
mod population;
mod secure;
mod task_loop;
mod telemetry;
mod tls;
mod transfer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_core::config::RunConfig;
use strata_proto::pb;
use tokio::sync::Semaphore;
use tokio_util::task::AbortOnDropHandle;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;
use uuid::Uuid;

pub use data_cache::{DataCache, DataLoadError};
pub use error::{ClientError, ProtocolError, SettingsError, TokenError};
pub use persist::PersistError;
pub use personal_store::{PersonalStore, StoreError, StoreStats};
pub use population::{PopulationOptions, PopulationOutcome, run_population};
pub use telemetry::ClientTelemetry;
pub use tls::{ClientTls, configure as configure_endpoint};

use crate::backoff::Backoff;
use crate::local::LocalState;
use crate::task_loop::Joined;

type Rpc = pb::federation_client::FederationClient<InterceptedService<Channel, auth::Bearer>>;

/// How a client daemon runs.
pub struct ClientOptions {
    pub server: String,
    /// The identity the client keeps across restarts.
    pub client_id: Uuid,
    /// The partition index to ask for; `None` takes the one the server assigns.
    pub requested_index: Option<u32>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Overrides the dataset directory from the server's config (the data is local).
    pub data_path: Option<PathBuf>,
    /// libtorch threads for this client's training.
    pub threads: usize,
    /// Shared by clients that must not train at the same time (`simulate --parallel K`).
    pub train_permits: Option<Arc<Semaphore>>,
    pub data_cache: Arc<DataCache>,
    /// Give up connecting after this long without reaching the server.
    pub connect_timeout: Duration,
    /// Bytes of update in each part of an upload (at most [`strata_proto::MAX_CHUNK_BYTES`]):
    /// a cut-off upload resumes from its last whole part.
    pub upload_part_bytes: usize,
    /// TLS settings for an `https://` server; `None` for `http://`.
    pub tls: Option<ClientTls>,
    /// Sent as `authorization: Bearer <token>` on every call, for a server with a tokens file.
    pub token: Option<String>,
    /// Where the client keeps its identity and personal model across restarts; `None` keeps
    /// them in memory only.
    pub state_dir: Option<PathBuf>,
    /// Where this client reports its metrics and health (shared by a process's virtual clients).
    pub telemetry: Option<Arc<ClientTelemetry>>,
    /// Makes this client a hostile one, for measuring defenses (`simulate --attack`).
    pub attack: Option<attack::Attack>,
    /// This client's own DP-SGD promise for its data: applied whatever the run's config says,
    /// unless the run asks for more noise.
    pub dp_sgd: Option<strata_core::privacy::DpSgdConfig>,
}

impl ClientOptions {
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            client_id: Uuid::new_v4(),
            requested_index: None,
            device: "auto".into(),
            data_path: None,
            threads: 1,
            train_permits: None,
            data_cache: Arc::new(DataCache::default()),
            connect_timeout: Duration::from_secs(300),
            upload_part_bytes: strata_proto::DEFAULT_CHUNK_BYTES,
            tls: None,
            token: None,
            state_dir: None,
            telemetry: None,
            attack: None,
            dp_sgd: None,
        }
    }
}

/// How the client's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOutcome {
    pub index: u32,
    pub tasks_done: u64,
    /// Whether the personal model was restored from `state_dir` at start.
    pub restored: bool,
}

/// Joins the server and works until it says the run is over, or `shutdown` resolves.
pub async fn run(mut options: ClientOptions, shutdown: impl Future<Output = ()>) -> Result<ClientOutcome, ClientError> {
    tokio::pin!(shutdown);
    // A restarted daemon is the client it was: same UUID, same index.
    let saved = match &options.state_dir {
        Some(dir) => persist::load_identity(dir)?,
        None => None,
    };
    if let Some(id) = &saved {
        if let Some(requested) = options.requested_index.filter(|&i| i != id.index) {
            return Err(SettingsError::StateIndex { saved: id.index, requested }.into());
        }
        options.client_id = id.client_id;
        options.requested_index = Some(id.index);
    }
    let rpc = tokio::select! {
        rpc = connect(&options.server, options.tls.as_ref(), options.token.as_deref(), options.connect_timeout) => rpc?,
        _ = &mut shutdown => return Err(ClientError::Stopped("before connecting")),
    };
    let join = pb::JoinRequest {
        client_id: options.client_id.to_string(),
        capabilities: None,
        requested_index: options.requested_index,
        host_id: String::new(),
        session: saved.as_ref().map(|id| id.session.clone()).unwrap_or_default(),
    };
    let reply = tokio::select! {
        r = join_with_retry(rpc.clone(), join, &options.server, options.tls.as_ref(), options.connect_timeout) => r?,
        _ = &mut shutdown => return Err(ClientError::Stopped("before joining")),
    };
    let mut config = RunConfig::from_toml(&reply.config_toml).map_err(ProtocolError::ServerConfig)?;
    if let Some(path) = &options.data_path {
        config.data.path = Some(path.clone());
    }
    config.dp_sgd = config.dp_sgd.at_least(options.dp_sgd.clone());
    let index = reply.client_index;
    let caller = task_loop::Caller { id: options.client_id, session: reply.session };
    debug!(client = index, run_id = %reply.run_id, "joined");

    // Heartbeats from now on, so that loading the data or a long training is not taken for a death.
    let _heartbeat = AbortOnDropHandle::new(tokio::spawn(heartbeats(
        rpc.clone(),
        reply.run_id.clone(),
        caller.clone(),
        Duration::from_secs(config.liveness.heartbeat_secs.max(1)),
    )));
    let (mut local, dataset_fingerprint) = load_local(&options, &config, index).await?;
    let mut restored = false;
    if let (Some(dir), Some(id)) = (&options.state_dir, &saved)
        && id.run_id == reply.run_id
        && let Some(model) = persist::load_model(dir)?
    {
        local.model.import(&model)?;
        local.example_ledger = id.example_ledger;
        restored = true;
        debug!(client = index, "personal model restored from the state directory");
    }
    let capabilities = pb::ClientCapabilities {
        device: format!("{:?}", local.model.device()),
        train_samples: local.data.train_len() as u64,
        test_samples: local.data.test_len() as u64,
        dataset_fingerprint,
        partition: config.data.split.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    // Shared with the blocking thread that trains; never locked across an await.
    let local = Arc::new(Mutex::new(local));
    let telemetry = options.telemetry.clone().unwrap_or_default();
    telemetry.connected(index, &capabilities.device).await;
    let joined = Joined {
        rpc,
        options: &options,
        config,
        run_id: reply.run_id,
        index,
        caller,
        capabilities,
        local,
        telemetry: &telemetry,
        secure: Default::default(),
        spare: None,
        residual: None,
    };
    let outcome = joined.work(&mut shutdown).await;
    telemetry.disconnected(index).await;
    let tasks_done = outcome?;
    Ok(ClientOutcome { index, tasks_done, restored })
}

async fn heartbeats(mut rpc: Rpc, run_id: String, caller: task_loop::Caller, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let beat = pb::HeartbeatRequest {
            run_id: run_id.clone(),
            client_id: caller.id.to_string(),
            session: caller.session.clone(),
        };
        // A missed beat is not an error: the server may be restarting; the task loop handles that.
        if let Err(status) = rpc.heartbeat(beat).await {
            debug!("heartbeat not delivered: {}", status.message());
        }
    }
}

/// Joins once. A join lost to a transient transport failure (a burst of connections
/// overflowing the server's accept queue resets some) is retried until `timeout`, and so is a
/// full federation (the server gives away slots of clients that joined and went silent); a
/// refusal or a TLS failure is not.
async fn join_with_retry(
    mut rpc: Rpc,
    join: pb::JoinRequest,
    server: &str,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<pb::JoinReply, ClientError> {
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match rpc.join(join.clone()).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(s)
                if (is_outage(&s) || full(&s))
                    && started.elapsed() < timeout
                    && tls.and_then(|_| tls::tls_failure(&s)).is_none() =>
            {
                let delay = backoff.next_delay();
                if full(&s) {
                    tracing::warn!("{}; retrying in {delay:?}", s.message());
                }
                debug!("join failed ({}); retrying in {delay:?}", s.message());
                tokio::time::sleep(delay).await;
            }
            Err(s) => return Err(refused(tls, server, &s)),
        }
    }
}

/// Whether a join was refused because every slot is taken (one may free up).
fn full(status: &tonic::Status) -> bool {
    strata_proto::reason::of(status) == Some(pb::ErrorReason::FederationFull)
}

/// Whether a failed call means the server is (for now) out of reach, rather than a refusal.
fn is_outage(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded)
}

/// Why a call was refused, in words: a server that requires client certificates refuses a
/// client's during the handshake, which a call sees as a transport error.
fn refused(tls: Option<&ClientTls>, server: &str, status: &tonic::Status) -> ClientError {
    if let Some(reason) = tls.and_then(|_| tls::tls_failure(status)) {
        return ClientError::Tls { server: server.to_string(), reason };
    }
    // A transport failure's message alone is "transport error": its causes say what happened.
    let mut text = status.message().to_string();
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&tls::error_chain(source));
        if tls.is_some() {
            // The server's alert can be lost when it closes the connection right after it.
            text.push_str(
                " (the connection failed after the TLS handshake: a server that requires client \
                 certificates closes it when it does not accept this client's --tls-cert)",
            );
        } else {
            text.push_str(" (if the server uses TLS, dial https:// with --tls-ca)");
        }
    }
    ClientError::Refused(text)
}

/// Connects with exponential backoff until the server answers or the connect timeout passes.
/// A TLS failure ends it at once: a certificate problem does not go away by waiting.
async fn connect(
    server: &str,
    tls: Option<&ClientTls>,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Rpc, ClientError> {
    let endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|source| SettingsError::ServerUrl { server: server.to_string(), source })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(strata_proto::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(strata_proto::CONNECTION_WINDOW_BYTES);
    let endpoint = tls::configure(endpoint, server, tls)?;
    let bearer = auth::Bearer::new(token).map_err(SettingsError::Token)?;
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(pb::federation_client::FederationClient::with_interceptor(channel, bearer)),
            Err(e) if tls::tls_failure(&e).is_some() => {
                let reason = tls::tls_failure(&e).unwrap_or_default();
                return Err(ClientError::Tls { server: server.to_string(), reason });
            }
            Err(e) if started.elapsed() < timeout => {
                let delay = backoff.next_delay();
                debug!(server, "server not reachable yet ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
            Err(source) => {
                return Err(ClientError::Unreachable {
                    server: server.to_string(),
                    seconds: timeout.as_secs(),
                    source,
                });
            }
        }
    }
}

/// Loads the data, cuts this client's share and builds its model, on a blocking thread.
/// Also returns the data's fingerprint (name, size, label hash), reported to the server.
async fn load_local(
    options: &ClientOptions,
    config: &RunConfig,
    index: u32,
) -> Result<(LocalState, String), ClientError> {
    let device = strata_torch::parse_device(&options.device)?;
    let cache = Arc::clone(&options.data_cache);
    let config = config.clone();
    let (threads, attack) = (options.threads, options.attack);
    tokio::task::spawn_blocking(move || {
        let (dataset, partition) = cache.get(&config)?;
        let model = strata_torch::LocalModel::build(&config.model, &dataset.shape, device, config.seed)?;
        Ok((local_state(&config, &dataset, &partition, index, model, threads, attack)?, dataset.fingerprint()))
    })
    .await
    .map_err(|source| ClientError::Panicked { what: "loading the data", source })?
}

/// Client `index`'s share of the data as tensors, with `model`, and its method's client half;
/// a hostile client's (`attack`) with its labels flipped if that is its attack. Blocking.
fn local_state(
    config: &RunConfig,
    dataset: &strata_data::Dataset,
    partition: &strata_data::partition::Partition,
    index: u32,
    model: strata_torch::LocalModel,
    threads: usize,
    attack: Option<attack::Attack>,
) -> Result<LocalState, ClientError> {
    let share = partition
        .clients
        .get(index as usize)
        .ok_or(ClientError::NoShare { index: index as usize, clients: partition.clients.len() })?;
    let mut data = strata_torch::ClientTensors::from_share(dataset, share, model.device())?;
    if attack.is_some_and(|a| a.flips_labels()) {
        data.train_y = data.train_y.neg() + (dataset.shape.num_classes as i64 - 1);
    }
    let method = method::build(config.method, &config.methods, &model)?;
    Ok(LocalState { model, data, method, threads, attack, example_ledger: Default::default() })
}
