//! A training round under secure aggregation (`[secure_aggregation]`, SecAgg+): the round
//! loop's side of `strata-secagg`'s server half. Setup and share-keys run as their own phases
//! before the TRAIN tasks, which carry each client's sealed shares and come back as masked
//! vectors; an unmask phase follows, and the strategy moves the global model by the unmasked
//! weighted mean change. Under `[privacy]` every client weighs 1, clips its change to the DP
//! bound less what rounding can add, and hides its adaptive-clipping bit in the vector, so
//! that the strategy noises the decoded sum as it would the sum of the clipped updates. Every phase is posted, gated and timed out like a round's tasks, so
//! clients that drop out at any stage are dropped from the protocol (and recorded), and a
//! round whose sum cannot be recovered keeps the previous model. Nothing is saved in the
//! middle: a round interrupted here is redone from its start by `--resume`.

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

/// What the protocol gave the round: its record, and the decoded sum of the shared tensors'
/// changes when it was recovered.
pub(crate) struct SecureOutcome {
    pub record: SecAggRecord,
    pub sum: Option<(Layout, Decoded)>,
}

/// One protocol run: the server half, and what it is bound to.
struct Protocol {
    server: SecAggServer,
    params: RoundParams,
    context: Vec<u8>,
    layout: Layout,
    /// Under `[privacy]`: the bound the clients clip to, the DP bound less what rounding
    /// can add, so that each decoded change is within the DP bound.
    clip_norm: Option<f64>,
}

impl RoundLoop {
    /// Runs the round's tasks under secure aggregation. `tasks` are the round's TRAIN and
    /// EVALUATE assignments as `round` built them; returns those posted in the training phase
    /// (what the records' download bytes come from), their reports, and the outcome.
    pub(crate) async fn secure_dispatch(
        &mut self,
        round: u64,
        mut tasks: HashMap<Uuid, Assignment>,
        deadline: tokio::time::Instant,
        config: &SecAggConfig,
    ) -> (HashMap<Uuid, Arc<Assignment>>, HashMap<Uuid, Report>, SecureOutcome) {
        let started = Instant::now();
        let mut record = SecAggRecord::default();
        let mut protocol_bytes = 0;
        let training: Vec<(Uuid, u32)> = tasks
            .iter()
            .filter(|(_, a)| a.kind == TaskKind::Train)
            .filter_map(|(id, _)| Some((*id, self.registry.info(id)?.index)))
            .collect();
        let prepared = self.prepare(round, &tasks, &training, config);
        let mut protocol = match prepared {
            Ok(p) => p,
            Err(e) => return self.without_training(round, tasks, deadline, record, e.to_string()).await,
        };
        record.clients = protocol.params.clients as u32;
        record.neighbours = protocol.params.neighbours as u32;
        record.threshold = protocol.params.threshold as u32;
        let index_of: HashMap<u32, Uuid> = training.iter().map(|(id, i)| (*i, *id)).collect();

        // Setup: every picked client's fresh keys.
        let base = self.stage_message(&protocol);
        let setup: Vec<_> = training
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
            return self.failed(round, tasks, deadline, record, &protocol, started, protocol_bytes, e).await;
        }

        // Share-keys: each client's neighbourhood, and its sealed shares back.
        let neighbourhoods: Vec<_> = index_of
            .iter()
            .filter_map(|(&index, &id)| {
                let keys = protocol.server.neighbour_keys(index).ok()?;
                let neighbours = keys.iter().map(|(j, k)| peer_to_wire(*j, k)).collect();
                let stage = pb::SecAggStage { neighbours, ..base.clone() };
                Some((
                    id,
                    index,
                    SecAggTask { stage, expect: Expect::Sharing { neighbours: protocol.params.neighbours } },
                ))
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
            return self.failed(round, tasks, deadline, record, &protocol, started, protocol_bytes, e).await;
        }

        // Masking: training tasks carry the shares sealed to each client; those that did not
        // share keys train in another round.
        let values = protocol.params.vector_len(protocol.layout.len());
        let modulus = protocol.params.modulus;
        tasks.retain(|id, a| {
            if a.kind != TaskKind::Train {
                return true;
            }
            let Some(index) = self.registry.info(id).map(|c| c.index) else { return false };
            let Ok(shares) = protocol.server.shares_for(index) else { return false };
            let stage = pb::SecAggStage { shares: sealed_to_wire(&shares), ..base.clone() };
            protocol_bytes += stage.encoded_len() as u64;
            a.secagg = Some(SecAggTask { stage, expect: Expect::Masked { values, modulus } });
            a.clip_norm = protocol.clip_norm;
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
                    let expect = Expect::Unmask { neighbours: protocol.params.neighbours };
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
            let expected_weight: u64 = protocol
                .server
                .contributors()
                .iter()
                .filter_map(|i| index_of.get(i))
                .map(|id| self.registry.capabilities(id).map_or(0, |c| c.train_samples))
                .map(|samples| u64::from(quantized_weight(&protocol.params, samples)))
                .sum();
            check_sum(&protocol.params, &sum, summed, expected_weight)?;
            Ok::<_, SecAggError>((decode(&protocol.params, &sum, summed)?, summed))
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
                Some((protocol.layout, decoded))
            }
            Err(e) => {
                warn!(round, "secure aggregation failed; keeping the previous model: {e}");
                record.failure = Some(e.to_string());
                None
            }
        };
        (tasks, reports, SecureOutcome { record, sum })
    }

    /// The protocol for the round's training clients: one layout of the shared tensors for
    /// all, the parameters resolved for their number, weights relative to the largest of them.
    fn prepare(
        &self,
        round: u64,
        tasks: &HashMap<Uuid, Assignment>,
        training: &[(Uuid, u32)],
        config: &SecAggConfig,
    ) -> Result<Protocol, SecAggError> {
        let mut layouts = training.iter().filter_map(|(id, _)| tasks.get(id)).map(|a| Layout::of(&a.expected_upload));
        let layout = layouts.next().ok_or(SecAggError::TooFewClients { n: 0 })?;
        if layouts.any(|l| l != layout) || layout.is_empty() {
            return Err(SecAggError::Config("the round's clients upload different tensors, or none".into()));
        }
        let largest = training
            .iter()
            .filter_map(|(id, _)| self.registry.capabilities(id).map(|c| c.train_samples))
            .max()
            .unwrap_or(1);
        let mut params = config.resolve(training.len())?.weighing(config, largest);
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
        let context = layout::context(&self.run_id, round, &format!("{}-secagg", self.session), &layout);
        let clients: Vec<u32> = training.iter().map(|(_, i)| *i).collect();
        let server = SecAggServer::new(params.clone(), &context, &clients, &mut strata_methods::dp::secure_rng())?;
        Ok(Protocol { server, params, context, layout, clip_norm })
    }

    fn stage_message(&self, protocol: &Protocol) -> pb::SecAggStage {
        pb::SecAggStage {
            params: Some(params_to_wire(&protocol.params)),
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

    /// The protocol broke before training: the round's training clients sit it out (their
    /// evaluations, if any, still run) and the previous model is kept.
    #[allow(clippy::too_many_arguments)]
    async fn failed(
        &mut self,
        round: u64,
        tasks: HashMap<Uuid, Assignment>,
        deadline: tokio::time::Instant,
        mut record: SecAggRecord,
        protocol: &Protocol,
        started: Instant,
        protocol_bytes: u64,
        error: SecAggError,
    ) -> (HashMap<Uuid, Arc<Assignment>>, HashMap<Uuid, Report>, SecureOutcome) {
        let dropouts = protocol.server.dropouts();
        record.dropped_setup = dropouts.setup;
        record.dropped_share_keys = dropouts.share_keys;
        record.protocol_seconds = started.elapsed().as_secs_f64();
        record.protocol_bytes = protocol_bytes;
        self.without_training(round, tasks, deadline, record, error.to_string()).await
    }

    async fn without_training(
        &mut self,
        round: u64,
        mut tasks: HashMap<Uuid, Assignment>,
        deadline: tokio::time::Instant,
        mut record: SecAggRecord,
        reason: String,
    ) -> (HashMap<Uuid, Arc<Assignment>>, HashMap<Uuid, Report>, SecureOutcome) {
        warn!(round, "secure aggregation failed before training; keeping the previous model: {reason}");
        record.failure = Some(reason);
        tasks.retain(|_, a| a.kind != TaskKind::Train);
        let tasks: HashMap<Uuid, Arc<Assignment>> = tasks.into_iter().map(|(id, a)| (id, Arc::new(a))).collect();
        let reports = self.dispatch(round, &tasks, deadline).await;
        (tasks, reports, SecureOutcome { record, sum: None })
    }
}
