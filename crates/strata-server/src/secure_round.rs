//! Secure aggregation (`[secure_aggregation]`, SecAgg+) in the round loop: the loop's side of
//! `strata-secagg`'s server half, around a training round's TRAIN tasks or a calibration's
//! FEATURE_STATS tasks. Setup and share-keys run as their own phases before those tasks,
//! which carry each client's sealed shares and come back as masked vectors; an unmask phase
//! follows, and the caller gets the decoded sum. For training, the strategy moves the global
//! model by the weighted mean change; under `[privacy]` every client weighs 1, clips its
//! change to the DP bound less what rounding can add, and hides its adaptive-clipping bit in
//! the vector, so that the strategy noises the decoded sum as it would the sum of the clipped
//! updates. For CCVR, the sum is the classes' moment sums and counts
//! (`strata_methods::ccvr_sums`). Every phase is posted, gated and timed out like a round's
//! tasks, so clients that drop out at any stage are dropped from the protocol (and recorded),
//! and a run whose sum cannot be recovered changes nothing. Nothing is saved in the middle: a
//! round interrupted here is redone from its start by `--resume`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use strata_core::secure_aggregation::{SecAggConfig, SecAggRecord};
use strata_proto::pb;
use strata_proto::secagg::{Answer, Expect, params_to_wire, peer_to_wire, sealed_to_wire};
use strata_secagg::encoding::{Decoded, check_sum, decode, quantized_weight, rounding_slack};
use strata_secagg::layout::{self, Layout};
use strata_secagg::{Resolve, RoundParams, SecAggError, SecAggServer};
use tracing::{info, warn};
use uuid::Uuid;

use crate::assignment::{Assignment, SecAggTask, TaskKind};
use crate::round::RoundLoop;
use crate::service::Report;

/// What the protocol gave the round: its record, the decoded sum when it was recovered, and
/// the training samples its contributors reported.
pub(crate) struct SecureOutcome {
    pub record: SecAggRecord,
    pub sum: Option<(Layout, Decoded)>,
    pub samples: u64,
}

/// How large each integer of a vector's tail may total over the sum.
#[derive(Clone, Copy, Debug, PartialEq)]
enum TailLimit {
    /// DP's unclipped bit: at most one a client.
    OnePerClient,
    /// CCVR's class counts: at most the contributors' reported samples.
    Samples,
}

/// What one protocol run masks, before its server half exists.
struct Job {
    /// The task kind answered by the masked vector.
    kind: TaskKind,
    /// Keeps the run's context apart from another run of the same round.
    label: &'static str,
    layout: Layout,
    params: RoundParams,
    /// Under `[privacy]`: the bound the clients clip to, the DP bound less the rounding slack.
    clip_norm: Option<f64>,
    tail_limit: TailLimit,
    /// Weights relative to the largest sample count among the clients that set up (no fixed
    /// `max_weight`).
    relative_weights: bool,
}

/// One protocol run: the server half, and what it is bound to.
struct Protocol {
    server: SecAggServer,
    job: Job,
    context: Vec<u8>,
}

/// The tasks posted, their reports, and the outcome, as the round loop records them.
type Dispatched = (HashMap<Uuid, Arc<Assignment>>, HashMap<Uuid, Report>, SecureOutcome);

impl RoundLoop {
    /// Runs the round's tasks under secure aggregation. `tasks` are the round's TRAIN and
    /// EVALUATE assignments as `round` built them; returns those posted in the training phase
    /// (what the records' download bytes come from), their reports, and the outcome.
    pub(crate) async fn secure_dispatch(
        &mut self,
        round: u64,
        tasks: HashMap<Uuid, Assignment>,
        deadline: tokio::time::Instant,
        config: &SecAggConfig,
    ) -> Dispatched {
        let participants = self.participants(&tasks, TaskKind::Train);
        let job = self.training_job(&tasks, &participants, config);
        self.run_protocol(round, tasks, deadline, (TaskKind::Train, participants), job).await
    }

    /// Gathers CCVR's statistics under secure aggregation: `tasks` are FEATURE_STATS
    /// assignments for a classifier of `classes` classes over `dim` features.
    pub(crate) async fn secure_statistics(
        &mut self,
        row: u64,
        tasks: HashMap<Uuid, Assignment>,
        deadline: tokio::time::Instant,
        config: &SecAggConfig,
        (classes, dim): (usize, usize),
    ) -> Dispatched {
        let participants = self.participants(&tasks, TaskKind::FeatureStats);
        let job = statistics_job(config, participants.len(), classes, dim);
        self.run_protocol(row, tasks, deadline, (TaskKind::FeatureStats, participants), job).await
    }

    /// The clients of `tasks` whose `kind` tasks answer with a masked vector, with their indices.
    fn participants(&self, tasks: &HashMap<Uuid, Assignment>, kind: TaskKind) -> Vec<(Uuid, u32)> {
        tasks
            .iter()
            .filter(|(_, a)| a.kind == kind)
            .filter_map(|(id, _)| Some((*id, self.registry.info(id)?.index)))
            .collect()
    }

    /// The largest training set among `participants`, as they reported it.
    fn largest(&self, participants: &[(Uuid, u32)]) -> u64 {
        participants
            .iter()
            .filter_map(|(id, _)| self.registry.capabilities(id).map(|c| c.train_samples))
            .max()
            .unwrap_or(1)
    }

    async fn run_protocol(
        &mut self,
        round: u64,
        mut tasks: HashMap<Uuid, Assignment>,
        deadline: tokio::time::Instant,
        (masked, participants): (TaskKind, Vec<(Uuid, u32)>),
        job: Result<Job, SecAggError>,
    ) -> Dispatched {
        let started = Instant::now();
        let mut record = SecAggRecord::default();
        let mut protocol_bytes = 0;
        let mut protocol = match job.and_then(|job| self.start(round, job, &participants)) {
            Ok(p) => p,
            Err(e) => return self.without_protocol(round, tasks, deadline, record, masked, e.to_string()).await,
        };
        record.clients = protocol.job.params.clients as u32;
        record.neighbours = protocol.job.params.neighbours as u32;
        record.threshold = protocol.job.params.threshold as u32;
        let index_of: HashMap<u32, Uuid> = participants.iter().map(|(id, i)| (*i, *id)).collect();

        // Setup: every picked client's fresh keys.
        let base = self.stage_message(&protocol);
        let setup: Vec<_> = participants
            .iter()
            .map(|(id, i)| (*id, *i, SecAggTask { stage: base.clone(), expect: Expect::Keys }))
            .collect();
        let (answers, bytes) = self.stage(round, "sa-setup", TaskKind::SecAggSetup, setup).await;
        protocol_bytes += bytes;
        for (index, answer) in answers {
            if let Answer::Keys(keys) = answer
                && let Err(e) = protocol.server.add_keys(index, keys)
            {
                warn!(round, client = index, "secure aggregation setup: {e}");
            }
        }
        if let Err(e) = protocol.server.close_keys() {
            early_failure(&mut record, &protocol, started, protocol_bytes);
            return self.without_protocol(round, tasks, deadline, record, protocol.job.kind, e.to_string()).await;
        }
        // Every client that answered had polled, and said its sample count, by now; at the
        // round's start a daemon that just joined may not have. The weights' denominator
        // goes out with the later stages, and the masking stage's is the one clients use.
        if protocol.job.relative_weights {
            let largest = self.largest(&participants);
            protocol.job.params = protocol.job.params.clone().relative_to(largest);
        }
        let params = protocol.job.params.clone();
        let base = self.stage_message(&protocol);

        // Share-keys: each client's neighbourhood, and its sealed shares back.
        let neighbourhoods: Vec<_> = index_of
            .iter()
            .filter_map(|(&index, &id)| {
                let keys = protocol.server.neighbour_keys(index).ok()?;
                let neighbours = keys.iter().map(|(j, k)| peer_to_wire(*j, k)).collect();
                let stage = pb::SecAggStage { neighbours, ..base.clone() };
                Some((id, index, SecAggTask { stage, expect: Expect::Sharing { neighbours: params.neighbours } }))
            })
            .collect();
        let (answers, bytes) = self.stage(round, "sa-keys", TaskKind::SecAggShareKeys, neighbourhoods).await;
        protocol_bytes += bytes;
        for (index, answer) in answers {
            if let Answer::Sharing(shares) = answer
                && let Err(e) = protocol.server.add_shares(index, shares)
            {
                warn!(round, client = index, "secure aggregation share-keys: {e}");
            }
        }
        if let Err(e) = protocol.server.close_shares() {
            early_failure(&mut record, &protocol, started, protocol_bytes);
            return self.without_protocol(round, tasks, deadline, record, protocol.job.kind, e.to_string()).await;
        }

        // Masking: the masked tasks carry the shares sealed to each client; those that did
        // not share keys sit this one out.
        let values = params.vector_len(protocol.job.layout.len());
        let modulus = params.modulus;
        tasks.retain(|id, a| {
            if a.kind != protocol.job.kind {
                return true;
            }
            let Some(index) = self.registry.info(id).map(|c| c.index) else { return false };
            let Ok(shares) = protocol.server.shares_for(index) else { return false };
            let stage = pb::SecAggStage { shares: sealed_to_wire(&shares), ..base.clone() };
            protocol_bytes += stage.encoded_len() as u64;
            a.secagg = Some(SecAggTask { stage, expect: Expect::Masked { values, modulus } });
            a.clip_norm = protocol.job.clip_norm;
            true
        });
        let setup_seconds = started.elapsed().as_secs_f64();
        let tasks: HashMap<Uuid, Arc<Assignment>> = tasks.into_iter().map(|(id, a)| (id, Arc::new(a))).collect();
        let mut reports = self.dispatch(round, &tasks, deadline).await;
        let unmask_started = Instant::now();
        for report in reports.values_mut() {
            if let Some(Answer::Masked(vector)) = report.secagg.take()
                && let Err(e) = protocol.server.add_masked(report.client.index, &vector)
            {
                warn!(round, client = report.client.index, "secure aggregation masking: {e}");
                report.trained = false;
            }
        }
        let mut samples = 0;
        let outcome = async {
            protocol.server.close_masked()?;
            // Unmask: the shares that remove the masks, from every client in the sum.
            let requests: Vec<_> = protocol
                .server
                .contributors()
                .iter()
                .filter_map(|&index| {
                    let request = protocol.server.unmask_request(index).ok()?;
                    let stage = pb::SecAggStage { active: request.active, dead: request.dead, ..base.clone() };
                    let expect = Expect::Unmask { neighbours: params.neighbours };
                    Some((*index_of.get(&index)?, index, SecAggTask { stage, expect }))
                })
                .collect();
            let (answers, bytes) = self.stage(round, "sa-unmask", TaskKind::SecAggUnmask, requests).await;
            protocol_bytes += bytes;
            for (index, answer) in answers {
                if let Answer::Unmask(reply) = answer
                    && let Err(e) = protocol.server.add_unmask(index, reply)
                {
                    warn!(round, client = index, "secure aggregation unmask: {e}");
                }
            }
            let (sum, summed) = protocol.server.finish()?;
            // The weights the contributors' reported sample counts give (their results' sample
            // counts were checked against those): a forged weight shows in the sum.
            let reported: Vec<u64> = protocol
                .server
                .contributors()
                .iter()
                .filter_map(|i| index_of.get(i))
                .map(|id| self.registry.capabilities(id).map_or(0, |c| c.train_samples))
                .collect();
            samples = reported.iter().sum();
            let expected_weight = reported.iter().map(|&n| u64::from(quantized_weight(&params, n))).sum();
            let tail_limit = match protocol.job.tail_limit {
                TailLimit::OnePerClient => summed as u64,
                TailLimit::Samples => samples,
            };
            check_sum(&params, &sum, summed, expected_weight, tail_limit)?;
            Ok::<_, SecAggError>((decode(&params, &sum, summed)?, summed))
        }
        .await;
        let dropouts = protocol.server.dropouts();
        record.dropped_setup = dropouts.setup;
        record.dropped_share_keys = dropouts.share_keys;
        record.dropped_masking = dropouts.masking;
        record.dropped_unmask = dropouts.unmask;
        record.protocol_seconds = setup_seconds + unmask_started.elapsed().as_secs_f64();
        record.protocol_bytes = protocol_bytes;
        let sum = match outcome {
            Ok((decoded, summed)) => {
                record.summed = summed as u32;
                record.recovered = true;
                info!(round, summed, seconds = record.protocol_seconds, "secure aggregation: sum recovered");
                Some((protocol.job.layout, decoded))
            }
            Err(e) => {
                warn!(round, "secure aggregation failed: {e}");
                record.failure = Some(e.to_string());
                None
            }
        };
        (tasks, reports, SecureOutcome { record, sum, samples })
    }

    /// The protocol for the round's training clients: one layout of the shared tensors for
    /// all, the parameters resolved for their number, weights relative to the largest of them
    /// (uniform, and the DP bound tightened, under `[privacy]`).
    fn training_job(
        &self,
        tasks: &HashMap<Uuid, Assignment>,
        training: &[(Uuid, u32)],
        config: &SecAggConfig,
    ) -> Result<Job, SecAggError> {
        let mut layouts = training.iter().filter_map(|(id, _)| tasks.get(id)).map(|a| Layout::of(&a.expected_upload));
        let layout = layouts.next().ok_or(SecAggError::TooFewClients { n: 0 })?;
        if layouts.any(|l| l != layout) || layout.is_empty() {
            return Err(SecAggError::Config("the round's clients upload different tensors, or none".into()));
        }
        let mut params = config.resolve(training.len())?;
        let mut clip_norm = None;
        if self.config.privacy.is_on() {
            params = params.private(self.config.privacy.is_adaptive());
            // The strategy set the DP bound on every training task (clients clip under
            // secure aggregation): what they clip to leaves room for the rounding.
            let bound = training.iter().filter_map(|(id, _)| tasks.get(id)?.clip_norm).next().ok_or_else(|| {
                SecAggError::Config("a private round's training tasks carry no clipping bound".into())
            })?;
            let slack = rounding_slack(&params, layout.len());
            if bound <= 2.0 * slack {
                return Err(SecAggError::Config(format!(
                    "the DP clipping bound {bound:.3e} is within twice the {slack:.3e} that rounding can add to {} \
                     values; lower clipping_range or raise quantization_range",
                    layout.len()
                )));
            }
            clip_norm = Some(bound - slack);
        }
        let (kind, label, tail_limit) = (TaskKind::Train, "secagg", TailLimit::OnePerClient);
        let relative_weights = config.max_weight.is_none();
        Ok(Job { kind, label, layout, params, clip_norm, tail_limit, relative_weights })
    }

    /// The server half for `job` over `participants`, bound to the run, round and layout.
    fn start(&self, round: u64, job: Job, participants: &[(Uuid, u32)]) -> Result<Protocol, SecAggError> {
        let context = layout::context(&self.run_id, round, &format!("{}-{}", self.session, job.label), &job.layout);
        let clients: Vec<u32> = participants.iter().map(|(_, i)| *i).collect();
        let server = SecAggServer::new(job.params.clone(), &context, &clients, &mut strata_methods::dp::secure_rng())?;
        Ok(Protocol { server, job, context })
    }

    fn stage_message(&self, protocol: &Protocol) -> pb::SecAggStage {
        pb::SecAggStage {
            params: Some(params_to_wire(&protocol.job.params)),
            context: protocol.context.clone(),
            ..Default::default()
        }
    }

    /// Posts one stage to its clients and gathers their answers, by client index, until all
    /// have answered or the round's timeout passes; with the stage's bytes both ways.
    async fn stage(
        &mut self,
        round: u64,
        phase: &str,
        kind: TaskKind,
        who: Vec<(Uuid, u32, SecAggTask)>,
    ) -> (Vec<(u32, Answer)>, u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.config.round_timeout_secs);
        let mut bytes = 0;
        let tasks: HashMap<Uuid, Arc<Assignment>> = who
            .into_iter()
            .map(|(id, index, task)| {
                bytes += task.stage.encoded_len() as u64;
                let mut a = Assignment::in_phase(round, &format!("{}-{phase}", self.session), kind, index, deadline);
                a.secagg = Some(task);
                (id, Arc::new(a))
            })
            .collect();
        let reports = self.dispatch(round, &tasks, deadline).await;
        bytes += reports.values().map(|r| r.bytes_up).sum::<u64>();
        let answers = reports.into_values().filter_map(|r| Some((r.client.index, r.secagg?))).collect();
        (answers, bytes)
    }

    /// The protocol broke before its `masked` tasks: their clients sit them out (the round's
    /// evaluations, if any, still run) and nothing is summed.
    async fn without_protocol(
        &mut self,
        round: u64,
        mut tasks: HashMap<Uuid, Assignment>,
        deadline: tokio::time::Instant,
        mut record: SecAggRecord,
        masked: TaskKind,
        reason: String,
    ) -> Dispatched {
        warn!(round, "secure aggregation failed before its masked tasks: {reason}");
        record.failure = Some(reason);
        tasks.retain(|_, a| a.kind != masked);
        let tasks: HashMap<Uuid, Arc<Assignment>> = tasks.into_iter().map(|(id, a)| (id, Arc::new(a))).collect();
        let reports = self.dispatch(round, &tasks, deadline).await;
        (tasks, reports, SecureOutcome { record, sum: None, samples: 0 })
    }
}

/// The protocol for CCVR's statistics of a classifier of `classes` classes over `dim`
/// features: the classes' moment shares, clipped to the statistics' own range, then the
/// class counts and whether the client's shares hit the range.
fn statistics_job(config: &SecAggConfig, clients: usize, classes: usize, dim: usize) -> Result<Job, SecAggError> {
    let mut params = config.resolve(clients)?;
    params.clipping_range = config.statistics_range;
    params.tail = classes + 1;
    Ok(Job {
        kind: TaskKind::FeatureStats,
        label: "ccvr-secagg",
        layout: Layout::of(&strata_methods::ccvr_sums::layout_specs(classes, dim)),
        params,
        clip_norm: None,
        tail_limit: TailLimit::Samples,
        relative_weights: config.max_weight.is_none(),
    })
}

/// What a protocol that broke before its masked tasks did, for the record.
fn early_failure(record: &mut SecAggRecord, protocol: &Protocol, started: Instant, protocol_bytes: u64) {
    let dropouts = protocol.server.dropouts();
    record.dropped_setup = dropouts.setup;
    record.dropped_share_keys = dropouts.share_keys;
    record.protocol_seconds = started.elapsed().as_secs_f64();
    record.protocol_bytes = protocol_bytes;
}
