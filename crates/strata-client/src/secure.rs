//! The client's side of secure aggregation: the protocol's client half for the round it is in,
//! answering each stage task, and the masked vector a training task uploads in place of its
//! tensors: the change of the shared tensors from what the client received, weighted by its
//! sample count, quantized and masked. One protocol run at a time; a setup for another round
//! starts a new one (what an interrupted round leaves behind is dropped).

use rand::SeedableRng;
use strata_core::tensor::TensorSet;
use strata_methods::ccvr_sums;
use strata_proto::pb;
use strata_proto::secagg::{
    Answer, neighbours_from_wire, params_from_wire, sealed_from_wire, unmask_request_from_wire,
};
use strata_secagg::encoding::{encode, quantized_weight};
use strata_secagg::layout::Layout;
use strata_secagg::{RoundParams, SecAggClient, SecAggError};

use crate::transfer::FeatureStats;

/// Why the client could not take part in a stage.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    #[error("secure aggregation: {0}")]
    Protocol(#[from] SecAggError),
    #[error(transparent)]
    Wire(#[from] strata_proto::secagg::SecAggWireError),
    #[error("secure aggregation: the task carries no stage")]
    NoStage,
    #[error("secure aggregation: training left no shared tensors to mask")]
    NoUpload,
    #[error("secure aggregation: a {0} task for a round this client did not set up")]
    NotSetUp(&'static str),
    #[error("secure aggregation: the round wants the adaptive-clipping bit, but the training task set no bound")]
    NoClippingBit,
    #[error("secure aggregation: a statistics task whose round carries no class counts")]
    StatisticsTail,
    #[error("secure aggregation: CCVR statistics: {0}")]
    Statistics(#[from] strata_methods::ccvr::CcvrError),
}

struct Current {
    context: Vec<u8>,
    params: RoundParams,
    client: SecAggClient,
}

/// A client's part in secure aggregation, between the stage tasks of one round.
#[derive(Default)]
pub struct SecureRounds {
    current: Option<Current>,
}

impl SecureRounds {
    /// Whether a protocol run is in progress (a population keeps only those).
    pub fn is_active(&self) -> bool {
        self.current.is_some()
    }

    /// Answers a setup, share-keys or unmask task as client `index`.
    pub fn answer(&mut self, index: u32, kind: pb::TaskKind, task: &pb::Task) -> Result<Answer, SecureError> {
        let stage = task.secagg.as_ref().ok_or(SecureError::NoStage)?;
        match kind {
            pb::TaskKind::SecaggSetup => {
                let params = params_from_wire(stage.params.as_ref())?;
                let (client, keys) = SecAggClient::setup(index, &stage.context, params.clone())?;
                self.current = Some(Current { context: stage.context.clone(), params, client });
                Ok(Answer::Keys(keys))
            }
            pb::TaskKind::SecaggShareKeys => {
                let current = self.current_for(stage, "share-keys")?;
                let neighbours = neighbours_from_wire(&stage.neighbours, current.params.neighbours)?;
                Ok(Answer::Sharing(current.client.share_keys(neighbours)?))
            }
            _ => {
                let current = self.current_for(stage, "unmask")?;
                let k = current.params.neighbours;
                let request = unmask_request_from_wire(&stage.active, &stage.dead, k)?;
                let reply = current.client.unmask(&request);
                // The run is over for this client, whatever the answer.
                self.current = None;
                Ok(Answer::Unmask(reply?))
            }
        }
    }

    /// The masked vector of a training task: `trained`'s change from `received` (the shared
    /// tensors), weighted by `samples`; with user-level DP, `unclipped` says whether the
    /// change was within the task's bound (the bit goes inside the mask, never in the clear).
    pub fn mask(
        &mut self,
        task: &pb::Task,
        received: &TensorSet,
        trained: &TensorSet,
        samples: u64,
        unclipped: Option<bool>,
    ) -> Result<Vec<u32>, SecureError> {
        let stage = task.secagg.as_ref().ok_or(SecureError::NoStage)?;
        let current = self.current_for(stage, "masking")?;
        let shares = sealed_from_wire("shares", &stage.shares, current.params.neighbours.saturating_sub(1))?;
        let layout = Layout::of(&trained.specs());
        let changes = layout.changes(received, trained)?;
        let params = weighing(current, stage)?;
        let weight = quantized_weight(&params, samples);
        let tail = match (params.tail, unclipped) {
            (0, _) => vec![],
            (1, Some(bit)) => vec![u32::from(bit)],
            _ => return Err(SecureError::NoClippingBit),
        };
        // Stochastic rounding needs unbiased coins, not secret ones (the masks hide them):
        // ChaCha8, seeded from the thread's generator, is the fastest such.
        let mut coins = rand_chacha::ChaCha8Rng::from_rng(&mut rand::rng());
        let encoded = encode(&params, &changes, weight, &tail, &mut coins)?;
        Ok(current.client.mask(&shares, &encoded.vector)?)
    }

    /// The masked vector of a statistics task (CCVR): the classes' moment shares, weighted by
    /// the samples they cover, then the class counts and whether any share hit the range. The
    /// round's tail says how many classes the server's classifier has (one count each, and
    /// the flag); a vector laid out for another feature dimension is refused by its length.
    pub fn mask_statistics(&mut self, task: &pb::Task, stats: &FeatureStats) -> Result<Vec<u32>, SecureError> {
        let stage = task.secagg.as_ref().ok_or(SecureError::NoStage)?;
        let current = self.current_for(stage, "masking")?;
        let classes = current.params.tail.checked_sub(1).ok_or(SecureError::StatisticsTail)?;
        let shares = sealed_from_wire("shares", &stage.shares, current.params.neighbours.saturating_sub(1))?;
        let moments = ccvr_sums::shares(&stats.classes, classes, stats.dim)?;
        let params = weighing(current, stage)?;
        let weight = quantized_weight(&params, moments.samples);
        let mut tail = moments.counts;
        tail.push(0);
        let mut coins = rand_chacha::ChaCha8Rng::from_rng(&mut rand::rng());
        let mut encoded = encode(&params, &moments.values, weight, &tail, &mut coins)?;
        if let Some(last) = encoded.vector.last_mut() {
            *last = u32::from(encoded.clipped > 0);
        }
        Ok(current.client.mask(&shares, &encoded.vector)?)
    }

    fn current_for(&mut self, stage: &pb::SecAggStage, what: &'static str) -> Result<&mut Current, SecureError> {
        self.current.as_mut().filter(|c| c.context == stage.context).ok_or(SecureError::NotSetUp(what))
    }
}

/// The round's parameters with the weights' denominator of the masking stage: the server
/// fixes it once the clients have said their sample counts, after setup.
fn weighing(current: &Current, stage: &pb::SecAggStage) -> Result<RoundParams, SecureError> {
    let sent = params_from_wire(stage.params.as_ref())?;
    let params = RoundParams { max_weight: sent.max_weight, ..current.params.clone() };
    params.check()?;
    Ok(params)
}
