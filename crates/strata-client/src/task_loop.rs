//! The loop of a client that has joined a run: poll for a task, do it, report it; wait out
//! server outages and rejoin a restarted server; until the server says the run is over.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use strata_core::config::RunConfig;
use strata_core::selection::Selector;
use strata_core::tensor::TensorSet;
use strata_proto::{Decoding, Encoded, pb, reason, scalar};
use strata_torch::{DpSgd, TorchError};
use tracing::{debug, warn};

use crate::backoff::Backoff;
use uuid::Uuid;

use crate::local::{Job, JobOutput, LocalState};
use crate::outgoing::{Outgoing, upload_seed};
use crate::secure::SecureRounds;
use crate::transfer::FeatureStats;
use crate::{ClientError, ClientOptions, ClientTelemetry, Rpc, is_outage, persist, transfer};
use strata_proto::secagg::Answer;

/// A client that has joined a run: what its task loop works with.
pub(crate) struct Joined<'a> {
    pub rpc: Rpc,
    pub options: &'a ClientOptions,
    pub config: RunConfig,
    pub run_id: String,
    pub index: u32,
    /// Who this client's calls speak for.
    pub caller: Caller,
    /// Sent again when rejoining a restarted server.
    pub capabilities: pb::ClientCapabilities,
    /// Shared with the blocking thread that trains; never locked across an await.
    pub local: Arc<Mutex<LocalState>>,
    pub telemetry: &'a ClientTelemetry,
    /// This client's part in the secure-aggregation round under way, if any.
    pub secure: SecureRounds,
    /// The last model received, done with: the next download is assembled into its memory.
    pub spare: Option<TensorSet>,
    /// What top-k compression left out of this client's uploads so far (error feedback).
    pub residual: Option<TensorSet>,
}

impl Joined<'_> {
    /// Polls, does each task, and waits out server outages, until the run is over or
    /// `shutdown` resolves. Returns the number of tasks done.
    pub async fn work(mut self, mut shutdown: &mut (impl Future<Output = ()> + Unpin)) -> Result<u64, ClientError> {
        let index = self.index;
        let mut last_task = String::new();
        let mut tasks_done = 0;
        // When the server stopped answering, if it has, and how long to wait before polling again.
        let mut outage: Option<(tokio::time::Instant, Backoff)> = None;
        loop {
            let poll = pb::PullTaskRequest {
                run_id: self.run_id.clone(),
                client_id: self.caller.id.to_string(),
                session: self.caller.session.clone(),
                last_task_id: last_task.clone(),
                wait_ms: 10_000,
                capabilities: Some(self.capabilities.clone()),
            };
            let task = tokio::select! {
                task = self.rpc.pull_task(poll) => task,
                _ = &mut shutdown => break,
            };
            let task = match task {
                Ok(t) => {
                    if outage.take().is_some() {
                        self.telemetry.connected(index, &self.capabilities.device).await;
                    }
                    t.into_inner()
                }
                // The server went away (a restart, a network cut): when it finished the run, it
                // said so with FINISH first. Wait for it with backoff; the channel reconnects by itself.
                Err(status) if is_outage(&status) => {
                    if outage.is_none() {
                        self.telemetry.disconnected(index).await;
                    }
                    let (since, backoff) = outage.get_or_insert_with(|| (tokio::time::Instant::now(), Backoff::new()));
                    if since.elapsed() > self.options.connect_timeout {
                        warn!(client = index, "server unreachable for {:?}; giving up", self.options.connect_timeout);
                        return Err(ClientError::Rpc(status));
                    }
                    let delay = backoff.next_delay();
                    debug!(client = index, "server unavailable ({}); retrying in {delay:?}", status.message());
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = &mut shutdown => break,
                    }
                }
                // A restarted server (`--resume`) knows the run but not this connection yet.
                Err(status) if reason::of(&status) == Some(pb::ErrorReason::NotJoined) => {
                    self.rejoin().await?;
                    continue;
                }
                Err(status) => return Err(ClientError::Rpc(status)),
            };
            match pb::TaskKind::try_from(task.kind).unwrap_or(pb::TaskKind::Unspecified) {
                pb::TaskKind::Wait => continue,
                pb::TaskKind::Finish => {
                    debug!(client = index, tasks_done, "run finished");
                    break;
                }
                kind @ (pb::TaskKind::Train | pb::TaskKind::Evaluate) => {
                    last_task = task.task_id.clone();
                    let result = tokio::select! {
                        r = self.train_or_evaluate(task, kind == pb::TaskKind::Train) => r,
                        _ = &mut shutdown => break,
                    };
                    match result {
                        Ok(trained) => {
                            tasks_done += 1;
                            self.telemetry.task_done(index, trained);
                            self.save_state().await;
                        }
                        // A refused or failed task costs this round, not the client.
                        Err(e) => {
                            self.telemetry.task_failed(index);
                            warn!(client = index, task = %last_task, "task failed: {e}")
                        }
                    }
                }
                pb::TaskKind::FeatureStats => {
                    last_task = task.task_id.clone();
                    let result = tokio::select! {
                        r = self.feature_stats(task) => r,
                        _ = &mut shutdown => break,
                    };
                    match result {
                        Ok(()) => {
                            tasks_done += 1;
                            self.telemetry.task_done(index, None);
                        }
                        Err(e) => {
                            self.telemetry.task_failed(index);
                            warn!(client = index, task = %last_task, "feature statistics failed: {e}")
                        }
                    }
                }
                kind @ (pb::TaskKind::SecaggSetup | pb::TaskKind::SecaggShareKeys | pb::TaskKind::SecaggUnmask) => {
                    last_task = task.task_id.clone();
                    let answered = match self.secure.answer(index, kind, &task) {
                        Ok(answer) => upload_answer(&mut self.rpc, task, &self.caller, answer).await,
                        Err(e) => Err(e.into()),
                    };
                    // A stage not answered drops this client from the round's protocol, no more.
                    if let Err(e) = answered {
                        warn!(client = index, task = %last_task, "secure aggregation stage failed: {e}");
                    }
                }
                other => warn!(client = index, kind = ?other, "ignoring a task kind this client does not know"),
            }
        }
        Ok(tasks_done)
    }

    /// Joins again with the same identity and index, keeping the local state; refuses a
    /// server that now runs another run.
    async fn rejoin(&mut self) -> Result<(), ClientError> {
        let join = pb::JoinRequest {
            client_id: self.caller.id.to_string(),
            capabilities: Some(self.capabilities.clone()),
            requested_index: Some(self.index),
            host_id: String::new(),
            session: self.caller.session.clone(),
        };
        let again = self.rpc.join(join).await.map_err(|s| ClientError::Refused(s.message().to_string()))?.into_inner();
        if again.run_id != self.run_id {
            return Err(ClientError::RunChanged { now: again.run_id, joined: self.run_id.clone() });
        }
        // The same session, unless the server had none saved for this client.
        self.caller.session = again.session;
        warn!(client = self.index, "rejoined the run after a server restart");
        Ok(())
    }

    /// A train or evaluate task: download, merge (and train) on a blocking thread, upload.
    /// Returns what training reported, if it trained.
    async fn train_or_evaluate(&mut self, task: pb::Task, training: bool) -> Result<Option<(u64, f64)>, ClientError> {
        let (request, until) = (download_request(&task, &self.caller), task_deadline(&task));
        let decoding = download_decoding(&self.config);
        let spare = self.spare.take();
        let (received, _bytes_down) = transfer::download(&mut self.rpc, request, spare, decoding, until).await?;
        // A masked update is the change from what was received: keep it to subtract.
        let reference = (training && task.secagg.is_some()).then(|| received.clone());
        let job = job_for(&task, &self.config, self.index, received, training)?;
        // The upload is encoded on the worker too (int8's scan, top-k's selection are CPU work).
        let (compression, seed) = (self.config.compression.up, upload_seed(&self.config, self.index, task.round));
        let mut residual = self.residual.take();
        let masks = reference.is_some();
        let (mut output, outgoing, residual) = self
            .on_worker("training", move |state| {
                let mut output = state.run(job)?;
                let outgoing = (!masks).then(|| Outgoing::prepare(&mut output, compression, &mut residual, seed));
                Ok((output, outgoing, residual))
            })
            .await?;
        self.residual = residual;
        self.spare = output.received.take();
        let trained = output.trained;
        match (reference, outgoing) {
            (Some(reference), _) => {
                // The masking is CPU work: on a blocking thread, with the protocol's state.
                let (mut secure, masking) = (std::mem::take(&mut self.secure), task.clone());
                let (masked, secure, output) = tokio::task::spawn_blocking(move || {
                    let masked = mask_output(&mut secure, &masking, &reference, &mut output);
                    (masked, secure, output)
                })
                .await
                .map_err(|source| ClientError::Panicked { what: "masking", source })?;
                self.secure = secure;
                upload_masked(&mut self.rpc, task, &self.caller, output, masked?).await?;
            }
            (None, Some(outgoing)) => {
                let (encoded, reclaim) = outgoing.into_parts();
                // Whole values of every width (1 to 8 bytes), within what the server takes.
                let part_bytes = self.options.upload_part_bytes.clamp(4096, strata_proto::MAX_CHUNK_BYTES) / 8 * 8;
                upload_output(&mut self.rpc, task, &self.caller, output, encoded, part_bytes, until).await?;
                self.spare = self.spare.take().or_else(|| reclaim.take());
            }
            (None, None) => unreachable!("an upload that is not masked is prepared on the worker"),
        }
        Ok(trained)
    }

    /// CCVR's client half: statistics of the classifier's input under the received global model.
    async fn feature_stats(&mut self, task: pb::Task) -> Result<(), ClientError> {
        let (request, until) = (download_request(&task, &self.caller), task_deadline(&task));
        let decoding = download_decoding(&self.config);
        let (global, _bytes_down) = transfer::download(&mut self.rpc, request, None, decoding, until).await?;
        let stats = self.on_worker("feature statistics", move |state| state.feature_stats(&global)).await?;
        if task.secagg.is_some() {
            let masked = mask_statistics(&mut self.secure, &task, &stats)?;
            return upload_masked(&mut self.rpc, task, &self.caller, JobOutput::statistics(&stats), masked).await;
        }
        upload_stats(&mut self.rpc, task, &self.caller, stats, until).await
    }

    /// Runs libtorch work on the local state on a blocking thread (so that it never stalls the
    /// runtime), holding a training permit when the process shares its cores (`--parallel`,
    /// `--virtual`).
    async fn on_worker<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&mut LocalState) -> Result<T, TorchError> + Send + 'static,
    ) -> Result<T, ClientError> {
        let _permit = match &self.options.train_permits {
            Some(permits) => Some(
                permits.acquire().await.map_err(|source| ClientError::Closed { what: "training permits", source })?,
            ),
            None => None,
        };
        let state = Arc::clone(&self.local);
        let output = tokio::task::spawn_blocking(move || work(&mut state.lock().unwrap_or_else(|e| e.into_inner())))
            .await
            .map_err(|source| ClientError::Panicked { what, source })??;
        Ok(output)
    }

    /// With `--state-dir`, writes the identity and personal model on a blocking thread; a
    /// failure is logged (the client goes on; only a restart would lose its state).
    async fn save_state(&self) {
        let Some(dir) = &self.options.state_dir else { return };
        let mut identity = persist::Identity {
            client_id: self.caller.id,
            index: self.index,
            run_id: self.run_id.clone(),
            session: self.caller.session.clone(),
            example_ledger: Default::default(),
        };
        let (dir, state) = (dir.to_path_buf(), Arc::clone(&self.local));
        let saved = tokio::task::spawn_blocking(move || {
            let state = state.lock().unwrap_or_else(|e| e.into_inner());
            identity.example_ledger = state.example_ledger;
            let model = state.model.export();
            drop(state);
            persist::save(&dir, &identity, &model)
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("cannot save the client state: {e}"),
            Err(e) => warn!("saving the client state panicked: {e}"),
        }
    }
}

/// Who a call speaks for: a client's id, and the session secret its join returned (the id
/// alone authorizes nothing).
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub id: Uuid,
    pub session: String,
}

/// The download of `task`'s parameters, for `caller`.
pub(crate) fn download_request(task: &pb::Task, caller: &Caller) -> pb::DownloadRequest {
    pb::DownloadRequest {
        run_id: task.run_id.clone(),
        client_id: caller.id.to_string(),
        task_id: task.task_id.clone(),
        session: caller.session.clone(),
        resume_from_part: 0,
    }
}

/// When the server stops waiting for `task`'s result: until then a cut transfer is resumed.
pub(crate) fn task_deadline(task: &pb::Task) -> Instant {
    Instant::now() + std::time::Duration::from_millis(task.deadline_ms)
}

/// What the worker does for a train or evaluate task, once its parameters are received.
pub(crate) fn job_for(
    task: &pb::Task,
    config: &RunConfig,
    index: u32,
    received: TensorSet,
    training: bool,
) -> Result<Job, ClientError> {
    // Each round and client shuffles differently, and the same run reshuffles the same way.
    let seed = config.seed ^ (u64::from(index) << 32) ^ task.round.wrapping_mul(0x9E37_79B9);
    Ok(Job {
        round: task.round,
        received,
        train: training.then(|| (config.train.clone(), seed)),
        parameters_are_global: task.parameters_are_global,
        upload: task.upload.clone().map(scalar::selection_from_wire).unwrap_or_else(Selector::none),
        mask_over: task.mask.clone().map(scalar::selection_from_wire),
        evaluate_received: task.evaluate_received,
        evaluate_trained: task.evaluate_trained,
        clip_norm: (task.clip_norm > 0.0).then_some(task.clip_norm),
        dp_sgd: config.dp_sgd.noise_multiplier.map(|noise_multiplier| {
            (DpSgd { noise_multiplier, clipping_norm: config.dp_sgd.clipping_norm }, config.dp_sgd.delta)
        }),
        keep_received: config.compression.up.is_on(),
    })
}

/// How a client takes its downloads: under the run's download compression.
pub(crate) fn download_decoding(config: &RunConfig) -> Decoding {
    Decoding { compression: config.compression.down, reference: None }
}

/// Sends a train or evaluate task's result: its metrics, and the update (`encoded`, prepared
/// from `output` by [`Outgoing::prepare`]) when it trained, in parts of `part_bytes`.
pub(crate) async fn upload_output(
    rpc: &mut Rpc,
    task: pb::Task,
    caller: &Caller,
    output: JobOutput,
    encoded: Encoded,
    part_bytes: usize,
    until: Instant,
) -> Result<(), ClientError> {
    let header = pb::ResultHeader {
        num_samples: output.num_samples,
        metrics: output.metrics.iter().map(|(name, value)| scalar::metric(name, *value)).collect(),
        ..result_header(task, caller)
    };
    transfer::upload(rpc, header, encoded, output.mask, None, part_bytes, until).await?;
    Ok(())
}

/// A training result's masked vector (secure aggregation); the seconds it took go into the
/// result's metrics.
pub(crate) fn mask_output(
    secure: &mut SecureRounds,
    task: &pb::Task,
    reference: &TensorSet,
    output: &mut JobOutput,
) -> Result<Vec<u32>, ClientError> {
    let started = std::time::Instant::now();
    let trained = output.upload.as_ref().ok_or(crate::secure::SecureError::NoUpload)?;
    // Whether the update was within its DP bound goes inside the masked vector: in the clear
    // it would tell the server something of this client's update alone.
    let unclipped = output
        .metrics
        .iter()
        .position(|(name, _)| *name == strata_core::records::metric::DP_UNCLIPPED)
        .map(|i| output.metrics.remove(i).1 > 0.5);
    let masked = secure.mask(task, reference, trained, output.num_samples, unclipped)?;
    output.metrics.push((strata_core::records::metric::SECAGG_SECONDS, started.elapsed().as_secs_f64()));
    Ok(masked)
}

/// CCVR's statistics as a masked vector (secure aggregation).
pub(crate) fn mask_statistics(
    secure: &mut SecureRounds,
    task: &pb::Task,
    stats: &FeatureStats,
) -> Result<Vec<u32>, ClientError> {
    Ok(secure.mask_statistics(task, stats)?)
}

/// Sends a training result under secure aggregation: its metrics and its masked vector.
pub(crate) async fn upload_masked(
    rpc: &mut Rpc,
    task: pb::Task,
    caller: &Caller,
    output: JobOutput,
    masked: Vec<u32>,
) -> Result<(), ClientError> {
    let header = pb::ResultHeader {
        num_samples: output.num_samples,
        metrics: output.metrics.iter().map(|(name, value)| scalar::metric(name, *value)).collect(),
        ..result_header(task, caller)
    };
    transfer::upload_answer(rpc, header, Answer::Masked(masked), strata_proto::DEFAULT_CHUNK_BYTES).await?;
    Ok(())
}

/// Answers a secure-aggregation stage task.
pub(crate) async fn upload_answer(
    rpc: &mut Rpc,
    task: pb::Task,
    caller: &Caller,
    answer: Answer,
) -> Result<(), ClientError> {
    transfer::upload_answer(rpc, result_header(task, caller), answer, strata_proto::DEFAULT_CHUNK_BYTES).await?;
    Ok(())
}

/// Sends CCVR's per-class feature statistics for `task`.
pub(crate) async fn upload_stats(
    rpc: &mut Rpc,
    task: pb::Task,
    caller: &Caller,
    stats: FeatureStats,
    until: Instant,
) -> Result<(), ClientError> {
    let chunk = strata_proto::DEFAULT_CHUNK_BYTES;
    let nothing = Encoded::plain(Arc::new(TensorSet::default()));
    transfer::upload(rpc, result_header(task, caller), nothing, None, Some(stats), chunk, until).await?;
    Ok(())
}

/// The header of `task`'s result from `caller`, before what the result carries.
fn result_header(task: pb::Task, caller: &Caller) -> pb::ResultHeader {
    pb::ResultHeader {
        run_id: task.run_id,
        round: task.round,
        task_id: task.task_id,
        client_id: caller.id.to_string(),
        session: caller.session.clone(),
        ..Default::default()
    }
}
