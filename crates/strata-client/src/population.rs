//! A population of virtual clients behind one host: the way a simulation holds many more
//! clients than it could run as daemons.
//!
//! Every virtual client joins under its own UUID and index and does its tasks through the
//! same gRPC calls as a daemon (download, upload), but it polls through its host
//! (`PullHostTasks`), whose polls also keep it alive. Between tasks a virtual client is its
//! identity and, for methods with personal state, that state in a [`PersonalStore`]: no
//! model, tensors or open call. For a task it is materialized (its share of the data as
//! tensors, its model restored, its method's client half), does the task, and is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use strata_core::compression::Compression;
use strata_core::config::RunConfig;
use strata_core::tensor::TensorSet;
use strata_data::Dataset;
use strata_data::partition::Partition;
use strata_proto::pb;
use strata_torch::LocalModel;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::example_ledger::ExampleLedger;
use crate::outgoing::{Outgoing, upload_seed};
use crate::personal_store::{PersonalStore, StoreStats};
use crate::secure::SecureRounds;
use crate::task_loop::{
    Caller, download_decoding, download_request, job_for, mask_output, mask_statistics, task_deadline, upload_answer,
    upload_masked, upload_output, upload_stats,
};
use crate::{
    ClientError, ClientTls, DataCache, ProtocolError, Rpc, SettingsError, connect, is_outage, join_with_retry,
    local_state, transfer,
};

/// How a population runs.
pub struct PopulationOptions {
    pub server: String,
    /// Virtual clients, indices `first_index..first_index + clients`.
    pub clients: u32,
    /// The partition index of the first virtual client (several hosts can share a federation).
    pub first_index: u32,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Overrides the dataset directory from the server's config (the data is local).
    pub data_path: Option<PathBuf>,
    /// libtorch threads of each materialized client's work.
    pub threads: usize,
    /// Clients that train (or evaluate) at once; as many more may download or upload meanwhile.
    pub parallel: usize,
    pub data_cache: Arc<DataCache>,
    pub connect_timeout: Duration,
    pub tls: Option<ClientTls>,
    pub token: Option<String>,
    /// Bytes of personal state kept in memory; past it, state spills to `personal_dir`.
    pub personal_memory_bytes: u64,
    /// Where spilled personal state goes; `None` takes a temporary directory removed at the end.
    pub personal_dir: Option<PathBuf>,
    /// gRPC connections the virtual clients share.
    pub channels: usize,
    /// Joins in flight at once.
    pub joins_in_flight: usize,
    /// Hostile clients by index and what they do to their uploads (`simulate --attack`).
    pub attacks: std::collections::BTreeMap<u32, crate::attack::Attack>,
    /// The clients' own DP-SGD promise ([`crate::ClientOptions::dp_sgd`]).
    pub dp_sgd: Option<strata_core::privacy::DpSgdConfig>,
}

impl PopulationOptions {
    pub fn new(server: impl Into<String>, clients: u32) -> Self {
        Self {
            server: server.into(),
            clients,
            first_index: 0,
            device: "auto".into(),
            data_path: None,
            threads: 1,
            parallel: 1,
            data_cache: Arc::new(DataCache::default()),
            connect_timeout: Duration::from_secs(300),
            tls: None,
            token: None,
            personal_memory_bytes: 1 << 30,
            personal_dir: None,
            channels: 4,
            joins_in_flight: 256,
            attacks: Default::default(),
            dp_sgd: None,
        }
    }
}

/// How a population's run went.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PopulationOutcome {
    pub joined: u32,
    pub join_seconds: f64,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    /// Why tasks failed: the first few reasons, each with its client's index.
    pub failures: Vec<String>,
    /// The most clients materialized (holding a model and data tensors) at once.
    pub peak_materialized: usize,
    pub personal: StoreStats,
}

/// What every task of the population works with.
struct Shared {
    config: RunConfig,
    dataset: Arc<Dataset>,
    partition: Arc<Partition>,
    device: tch::Device,
    threads: usize,
    store: PersonalStore,
    /// What top-k compression left out of each client's uploads (error feedback), kept like
    /// personal state; only with `[compression] up = "topk:…"`.
    residuals: Option<PersonalStore>,
    /// Each client's UUID by position (index − `first_index`), and its index by UUID: ids are
    /// drawn at random, so they are looked up, not computed.
    ids: Vec<Uuid>,
    index_of: HashMap<Uuid, u32>,
    /// Each client's session secret by position, set when its join is answered.
    sessions: Vec<OnceLock<String>>,
    first_index: u32,
    /// Clients materialized at once (downloading, working or uploading).
    live: Semaphore,
    /// Clients working (training or evaluating) at once.
    working: Semaphore,
    materialized: AtomicUsize,
    peak_materialized: AtomicUsize,
    /// The run's initial model (what a daemon starts from), and models no client holds right
    /// now: a materialized client takes one and overwrites all of it, which costs a copy
    /// where building one costs a seeded initialization.
    initial: TensorSet,
    spare_models: Mutex<Vec<LocalModel>>,
    /// Downloads done with, whose memory later downloads are assembled into (at most one per
    /// client live at once): fresh memory costs more than the copy on a virtual machine.
    spare_downloads: Mutex<Vec<TensorSet>>,
    /// How many clients can be live at once (`live`'s permits).
    live_limit: usize,
    /// Whether the method's personal model outlives a download; when it does not (FedAvg,
    /// FedProx), every task's parameters replace the whole model and nothing needs restoring.
    keeps_personal_state: bool,
    attacks: std::collections::BTreeMap<u32, crate::attack::Attack>,
    /// What DP-SGD has spent of each virtual client's data, for those that trained.
    example_ledgers: Mutex<HashMap<u32, ExampleLedger>>,
    /// Each virtual client's part in the secure-aggregation round under way: only the round's
    /// cohort has one, and only until its unmask.
    secure: Mutex<HashMap<u32, SecureRounds>>,
}

/// Joins `options.clients` virtual clients and serves their tasks until the server says the
/// run is over, or `shutdown` resolves.
pub async fn run_population(
    options: PopulationOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<PopulationOutcome, ClientError> {
    tokio::pin!(shutdown);
    if options.clients == 0 {
        return Err(SettingsError::NoClients.into());
    }
    let connecting = async {
        let mut channels = Vec::new();
        for _ in 0..options.channels.max(1) {
            channels.push(
                connect(&options.server, options.tls.as_ref(), options.token.as_deref(), options.connect_timeout)
                    .await?,
            );
        }
        Ok::<_, ClientError>(channels)
    };
    let channels = tokio::select! {
        c = connecting => c?,
        _ = &mut shutdown => return Err(ClientError::Stopped("before connecting")),
    };
    let host = Uuid::new_v4();
    let ids: Vec<Uuid> = (0..options.clients).map(|_| Uuid::new_v4()).collect();
    let started = Instant::now();

    // The first join brings the run's config, which says what data to load.
    let first = join_request(host, options.first_index, ids[0], None, "");
    let reply = tokio::select! {
        r = join_with_retry(channels[0].clone(), first, &options.server, options.tls.as_ref(), options.connect_timeout) => r?,
        _ = &mut shutdown => return Err(ClientError::Stopped("before joining")),
    };
    let mut config = RunConfig::from_toml(&reply.config_toml).map_err(ProtocolError::ServerConfig)?;
    if let Some(path) = &options.data_path {
        config.data.path = Some(path.clone());
    }
    config.dp_sgd = config.dp_sgd.at_least(options.dp_sgd.clone());
    let last = u64::from(options.first_index) + u64::from(options.clients);
    if u64::from(config.clients) < last {
        return Err(SettingsError::PopulationRange { clients: config.clients, first: options.first_index, last }.into());
    }
    let cache = Arc::clone(&options.data_cache);
    let loading = config.clone();
    let (dataset, partition) = tokio::task::spawn_blocking(move || cache.get(&loading))
        .await
        .map_err(|source| ClientError::Panicked { what: "loading the data", source })??;
    let device = strata_torch::parse_device(&options.device)?;
    // A temporary directory lives (and is removed) with `_removed_at_end`.
    let (dir, _removed_at_end) = match &options.personal_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp =
                tempfile::Builder::new().prefix("strata-personal-").tempdir().map_err(SettingsError::PersonalDir)?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let store = PersonalStore::new(options.personal_memory_bytes, &dir)?;
    let residuals = match config.compression.up {
        Compression::TopK { .. } => Some(PersonalStore::new(options.personal_memory_bytes, &dir.join("residuals"))?),
        _ => None,
    };
    let parallel = options.parallel.max(1);
    let built = config.clone();
    let shape = dataset.shape.clone();
    let (initial, keeps_personal_state) = tokio::task::spawn_blocking(move || {
        let model = LocalModel::build(&built.model, &shape, device, built.seed)?;
        let method = crate::method::build(built.method, &built.methods, &model)?;
        Ok::<_, ClientError>((model.export(), method.keeps_personal_state()))
    })
    .await
    .map_err(|source| ClientError::Panicked { what: "building the model", source })??;
    let shared = Arc::new(Shared {
        config,
        dataset,
        partition,
        device,
        threads: options.threads,
        store,
        residuals,
        index_of: ids.iter().enumerate().map(|(i, id)| (*id, options.first_index + i as u32)).collect(),
        sessions: (0..ids.len()).map(|_| OnceLock::new()).collect(),
        first_index: options.first_index,
        ids,
        // Room for as many clients downloading or uploading as working, and two more, so that
        // a worker finds its next client's parameters already there.
        live: Semaphore::new(2 * parallel + 2),
        live_limit: 2 * parallel + 2,
        spare_downloads: Mutex::new(Vec::new()),
        working: Semaphore::new(parallel),
        materialized: AtomicUsize::new(0),
        peak_materialized: AtomicUsize::new(0),
        initial,
        spare_models: Mutex::new(Vec::new()),
        keeps_personal_state,
        attacks: options.attacks.clone(),
        example_ledgers: Mutex::new(HashMap::new()),
        secure: Mutex::new(HashMap::new()),
    });
    shared.keep_session(0, reply.session.clone());

    let joining = join_all(&channels, &shared, host, &options, &reply.run_id);
    tokio::select! {
        r = joining => r?,
        _ = &mut shutdown => return Err(ClientError::Stopped("while joining")),
    }
    let join_seconds = started.elapsed().as_secs_f64();
    debug!(clients = options.clients, seconds = join_seconds, "population joined");

    let tally = serve(&channels, &shared, host, &reply.run_id, &options, &mut shutdown).await?;
    Ok(PopulationOutcome {
        joined: options.clients,
        join_seconds,
        tasks_done: tally.done,
        tasks_failed: tally.failed,
        failures: tally.reasons,
        peak_materialized: shared.peak_materialized.load(Ordering::Relaxed),
        personal: shared.store.stats(),
    })
}

/// Joins every virtual client with its capabilities, `joins_in_flight` at a time over the
/// shared channels.
async fn join_all(
    channels: &[Rpc],
    shared: &Arc<Shared>,
    host: Uuid,
    options: &PopulationOptions,
    run_id: &str,
) -> Result<(), ClientError> {
    let fingerprint = shared.dataset.fingerprint();
    let device = format!("{:?}", shared.device);
    let in_flight = Arc::new(Semaphore::new(options.joins_in_flight.max(1)));
    let dial = Arc::new((options.server.clone(), options.tls.clone(), options.connect_timeout));
    let mut joins = JoinSet::new();
    for (position, id) in shared.ids.iter().enumerate() {
        let index = options.first_index as usize + position;
        let share = shared
            .partition
            .clients
            .get(index)
            .ok_or(ClientError::NoShare { index, clients: shared.partition.clients.len() })?;
        let capabilities = pb::ClientCapabilities {
            device: device.clone(),
            train_samples: share.train.len() as u64,
            test_samples: share.test.len() as u64,
            dataset_fingerprint: fingerprint.clone(),
            partition: shared.config.data.split.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let join = join_request(host, index as u32, *id, Some(capabilities), shared.session(position));
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .map_err(|source| ClientError::Closed { what: "joins", source })?;
        let rpc = channels[position % channels.len()].clone();
        let dial = Arc::clone(&dial);
        joins.spawn(async move {
            let _permit = permit;
            join_with_retry(rpc, join, &dial.0, dial.1.as_ref(), dial.2).await
        });
        while let Some(joined) = joins.try_join_next() {
            check_join(joined, run_id, shared)?;
        }
    }
    while let Some(joined) = joins.join_next().await {
        check_join(joined, run_id, shared)?;
    }
    Ok(())
}

fn check_join(
    joined: Result<Result<pb::JoinReply, ClientError>, tokio::task::JoinError>,
    run_id: &str,
    shared: &Shared,
) -> Result<(), ClientError> {
    let reply = joined.map_err(|source| ClientError::Panicked { what: "a join", source })??;
    if reply.run_id != run_id {
        return Err(ClientError::RunChanged { now: reply.run_id, joined: run_id.to_string() });
    }
    shared.keep_session(shared.position(reply.client_index), reply.session);
    Ok(())
}

/// The host's loop: polls for its clients' tasks and runs each on a materialized client,
/// until the server says the run is over. Returns the tasks done and failed.
async fn serve(
    channels: &[Rpc],
    shared: &Arc<Shared>,
    host: Uuid,
    run_id: &str,
    options: &PopulationOptions,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Tally, ClientError> {
    let mut rpc = channels[0].clone();
    // Polls are the population's heartbeat: answer well within the server's patience.
    let wait_ms = (shared.config.liveness.heartbeat_secs.max(1) * 1000).min(10_000) as u32;
    let mut running = JoinSet::new();
    let mut tally = Tally::default();
    let mut outage: Option<(tokio::time::Instant, Backoff)> = None;
    let mut next_channel = 0usize;
    loop {
        while let Some(finished) = running.try_join_next() {
            tally.count(finished);
        }
        // The first virtual client vouches for the host with its session.
        let poll = pb::HostPollRequest {
            run_id: run_id.to_string(),
            host_id: host.to_string(),
            wait_ms,
            max_tasks: 1000,
            client_id: shared.ids[0].to_string(),
            session: shared.session(0).to_string(),
        };
        let polled = tokio::select! {
            p = rpc.pull_host_tasks(poll) => p,
            _ = &mut *shutdown => break,
        };
        let reply = match polled {
            Ok(reply) => {
                outage = None;
                reply.into_inner()
            }
            Err(status) if is_outage(&status) => {
                let (since, backoff) = outage.get_or_insert_with(|| (tokio::time::Instant::now(), Backoff::new()));
                if since.elapsed() > options.connect_timeout {
                    return Err(ClientError::Rpc(status));
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(status) => return Err(ClientError::Rpc(status)),
        };
        let mut tasks = Vec::with_capacity(reply.tasks.len());
        for host_task in reply.tasks {
            let (Ok(id), Some(task)) = (Uuid::parse_str(&host_task.client_id), host_task.task) else {
                warn!("ignoring a host task without a valid client id or task");
                continue;
            };
            let Some(&index) = shared.index_of.get(&id) else {
                warn!(%id, "ignoring a task for a client this host does not serve");
                continue;
            };
            tasks.push((index, id, task));
        }
        // Largest work first: on unequal clients (a Dirichlet split) the round then ends with
        // small tasks on every worker instead of one big task on one while the others idle.
        tasks.sort_by_key(|(index, _, _)| std::cmp::Reverse(shared.work(*index)));
        for (index, id, task) in tasks {
            let channel = channels[next_channel % channels.len()].clone();
            next_channel += 1;
            // Joins are idempotent: joining again says the client is still served by this host.
            let again = join_request(host, index, id, None, shared.session(shared.position(index)));
            let shared = Arc::clone(shared);
            running.spawn(async move {
                let mut rpc = channel.clone();
                let result = run_task(shared, channel, index, id, task).await.map_err(|e| (index, e));
                if result.is_err() {
                    // The server stops picking a client that missed a deadline until it is heard
                    // from again: the host says this one is still here.
                    if let Err(status) = rpc.join(again).await {
                        warn!(client = index, "cannot rejoin after a failed task: {}", status.message());
                    }
                }
                result
            });
        }
        if reply.finished {
            break;
        }
    }
    while let Some(finished) = running.join_next().await {
        tally.count(finished);
    }
    Ok(tally)
}

/// Virtual client `id`'s join at `index` through `host`, with its session once it has one.
fn join_request(
    host: Uuid,
    index: u32,
    id: Uuid,
    capabilities: Option<pb::ClientCapabilities>,
    session: &str,
) -> pb::JoinRequest {
    pb::JoinRequest {
        client_id: id.to_string(),
        capabilities,
        requested_index: Some(index),
        host_id: host.to_string(),
        session: session.to_string(),
    }
}

/// The population's tasks: how many ended well, how many failed, and the first reasons why.
#[derive(Debug, Default)]
struct Tally {
    done: u64,
    failed: u64,
    reasons: Vec<String>,
}

impl Tally {
    /// Reasons kept: enough to diagnose, bounded whatever the population's size.
    const REASONS_KEPT: usize = 8;

    fn count(&mut self, finished: Result<Result<(), (u32, ClientError)>, tokio::task::JoinError>) {
        let reason = match finished {
            Ok(Ok(())) => {
                self.done += 1;
                return;
            }
            Ok(Err((index, e))) => format!("client {index}: {e}"),
            Err(e) => format!("a task panicked: {e}"),
        };
        warn!("a virtual client's task failed: {reason}");
        self.failed += 1;
        if self.reasons.len() < Self::REASONS_KEPT {
            self.reasons.push(reason);
        }
    }
}

/// One task of one virtual client: materialize, download, work, keep its state, upload.
async fn run_task(shared: Arc<Shared>, mut rpc: Rpc, index: u32, id: Uuid, task: pb::Task) -> Result<(), ClientError> {
    let caller = Caller { id, session: shared.session(shared.position(index)).to_string() };
    let kind = pb::TaskKind::try_from(task.kind).unwrap_or(pb::TaskKind::Unspecified);
    if matches!(kind, pb::TaskKind::SecaggSetup | pb::TaskKind::SecaggShareKeys | pb::TaskKind::SecaggUnmask) {
        let answer = shared.with_secure(index, |secure| secure.answer(index, kind, &task))?;
        return upload_answer(&mut rpc, task, &caller, answer).await;
    }
    if !matches!(kind, pb::TaskKind::Train | pb::TaskKind::Evaluate | pb::TaskKind::FeatureStats) {
        return Ok(());
    }
    let closed = |source| ClientError::Closed { what: "the population", source };
    let _live = shared.live.acquire().await.map_err(closed)?;
    let spare = shared.spare_downloads.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let decoding = download_decoding(&shared.config);
    let until = task_deadline(&task);
    let (received, _bytes) =
        transfer::download(&mut rpc, download_request(&task, &caller), spare, decoding, until).await?;
    let _working = shared.working.acquire().await.map_err(closed)?;
    let worker = Arc::clone(&shared);
    if kind == pb::TaskKind::FeatureStats {
        let masking = task.secagg.is_some().then(|| task.clone());
        let (stats, masked) = tokio::task::spawn_blocking(move || {
            let mut client = worker.materialize(index)?;
            let stats = client.state().feature_stats(&received)?;
            let masked = match masking {
                Some(task) => Some(worker.with_secure(index, |secure| mask_statistics(secure, &task, &stats))?),
                None => None,
            };
            Ok::<_, ClientError>((stats, masked))
        })
        .await
        .map_err(|source| ClientError::Panicked { what: "feature statistics", source })??;
        drop(_working);
        if let Some(masked) = masked {
            return upload_masked(&mut rpc, task, &caller, crate::local::JobOutput::statistics(&stats), masked).await;
        }
        return upload_stats(&mut rpc, task, &caller, stats, until).await;
    }
    let training = kind == pb::TaskKind::Train;
    // A masked update is the change from what was received: keep it to subtract. The
    // masking is CPU work too: done on the blocking thread, off the runtime's.
    let masking = (training && task.secagg.is_some()).then(|| (received.clone(), task.clone()));
    let job = job_for(&task, &shared.config, index, received, training)?;
    let seed = upload_seed(&shared.config, index, task.round);
    let (mut output, masked, outgoing) = tokio::task::spawn_blocking(move || {
        let mut client = worker.materialize(index)?;
        let state = client.state();
        state.example_ledger = worker.example_ledger(index);
        let mut output = state.run(job)?;
        worker.keep_example_ledger(index, state.example_ledger);
        if worker.keeps_personal_state {
            worker.store.put(index, state.model.export())?;
        }
        let (masked, outgoing) = match masking {
            Some((reference, task)) => {
                (Some(worker.with_secure(index, |secure| mask_output(secure, &task, &reference, &mut output))?), None)
            }
            None => (None, Some(worker.prepare_upload(index, &mut output, seed)?)),
        };
        Ok::<_, ClientError>((output, masked, outgoing))
    })
    .await
    .map_err(|source| ClientError::Panicked { what: "training", source })??;
    drop(_working);
    if let Some(done) = output.received.take() {
        shared.keep_spare_download(done);
    }
    match (masked, outgoing) {
        (Some(masked), _) => upload_masked(&mut rpc, task, &caller, output, masked).await,
        (None, Some(outgoing)) => {
            let (encoded, reclaim) = outgoing.into_parts();
            upload_output(&mut rpc, task, &caller, output, encoded, strata_proto::DEFAULT_CHUNK_BYTES, until).await?;
            if let Some(done) = reclaim.take() {
                shared.keep_spare_download(done);
            }
            Ok(())
        }
        (None, None) => unreachable!("an upload that is not masked is prepared on the worker"),
    }
}

impl Shared {
    /// Keeps a download done with for a later one to be assembled into, up to one per live client.
    fn keep_spare_download(&self, done: TensorSet) {
        let mut spares = self.spare_downloads.lock().unwrap_or_else(|e| e.into_inner());
        if spares.len() < self.live_limit {
            spares.push(done);
        }
    }

    /// Client `index`'s upload under the run's compression, with its error feedback.
    fn prepare_upload(
        &self,
        index: u32,
        output: &mut crate::local::JobOutput,
        seed: u64,
    ) -> Result<Outgoing, ClientError> {
        let compression = self.config.compression.up;
        // An evaluation uploads nothing: its client's error feedback stays where it is.
        let Some(store) = self.residuals.as_ref().filter(|_| output.upload.is_some()) else {
            return Ok(Outgoing::prepare(output, compression, &mut None, seed));
        };
        let mut residual = store.get(index)?;
        let outgoing = Outgoing::prepare(output, compression, &mut residual, seed);
        if let Some(residual) = residual {
            store.put(index, residual)?;
        }
        Ok(outgoing)
    }

    /// Runs `step` on virtual client `index`'s secure-aggregation state, kept only while a
    /// protocol run is under way.
    fn with_secure<T, E>(&self, index: u32, step: impl FnOnce(&mut SecureRounds) -> Result<T, E>) -> Result<T, E> {
        let lock = || self.secure.lock().unwrap_or_else(|e| e.into_inner());
        // Out of the map while it works (masking takes milliseconds): other clients go on.
        let mut secure = lock().remove(&index).unwrap_or_default();
        let result = step(&mut secure);
        if secure.is_active() {
            lock().insert(index, secure);
        }
        result
    }

    /// What DP-SGD has spent of virtual client `index`'s data (nothing yet: the default).
    fn example_ledger(&self, index: u32) -> ExampleLedger {
        self.example_ledgers.lock().unwrap_or_else(|e| e.into_inner()).get(&index).copied().unwrap_or_default()
    }

    /// Keeps a virtual client's DP-SGD ledger between its tasks (only clients that spent any
    /// have an entry: the map grows with the clients that train, not the population).
    fn keep_example_ledger(&self, index: u32, ledger: ExampleLedger) {
        if ledger.steps > 0 {
            self.example_ledgers.lock().unwrap_or_else(|e| e.into_inner()).insert(index, ledger);
        }
    }

    /// A client's position in `ids` from its index (out of range for an index it does not serve).
    fn position(&self, index: u32) -> usize {
        index.wrapping_sub(self.first_index) as usize
    }

    /// The session of the client at `position`; empty until its join is answered.
    fn session(&self, position: usize) -> &str {
        self.sessions.get(position).and_then(OnceLock::get).map_or("", String::as_str)
    }

    /// Keeps the session a join returned (the first answer; later joins return the same).
    fn keep_session(&self, position: usize, session: String) {
        if let Some(slot) = self.sessions.get(position) {
            let _ = slot.set(session);
        }
    }

    /// How much data client `index` works on: its samples.
    fn work(&self, index: u32) -> usize {
        self.partition.clients.get(index as usize).map_or(0, |c| c.train.len() + c.test.len())
    }

    /// Client `index` as it stood after its last task (or as the run starts), counted as
    /// materialized until the returned guard drops. Blocking.
    fn materialize(&self, index: u32) -> Result<Materialized<'_>, ClientError> {
        let live = self.materialized.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_materialized.fetch_max(live, Ordering::Relaxed);
        let counted = Counted(&self.materialized);
        let spare = self.spare_models.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut model = match spare {
            Some(model) => model,
            None => LocalModel::build(&self.config.model, &self.dataset.shape, self.device, self.config.seed)?,
        };
        // Every tensor is overwritten: with the client's own state, or the initial model, or
        // (for a method without personal state) with the parameters the task brings.
        if self.keeps_personal_state {
            model.import(&self.initial)?;
            if let Some(saved) = self.store.get(index)? {
                model.import(&saved)?;
            }
        }
        let attack = self.attacks.get(&index).copied();
        let state = local_state(&self.config, &self.dataset, &self.partition, index, model, self.threads, attack)?;
        Ok(Materialized { state: Some(state), shared: self, _counted: counted })
    }
}

/// A materialized client: its state, dropped (and uncounted) with it; its model goes back to
/// the spares.
struct Materialized<'a> {
    state: Option<crate::local::LocalState>,
    shared: &'a Shared,
    _counted: Counted<'a>,
}

impl Materialized<'_> {
    fn state(&mut self) -> &mut crate::local::LocalState {
        self.state.as_mut().expect("present until dropped")
    }
}

impl Drop for Materialized<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.shared.spare_models.lock().unwrap_or_else(|e| e.into_inner()).push(state.model);
        }
    }
}

struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
