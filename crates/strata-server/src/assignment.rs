//! A task given to one client in one round, as the server keeps it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strata_core::selection::Selector;
use strata_core::tensor::{TensorSet, TensorSpec};
use strata_proto::pb;
use strata_proto::secagg::Expect;
use strata_proto::stats::StatsExpectation;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    Train,
    Evaluate,
    Finish,
    /// Per-class statistics of the classifier's input (CCVR).
    FeatureStats,
    /// Secure aggregation's stages around a masked TRAIN task.
    SecAggSetup,
    SecAggShareKeys,
    SecAggUnmask,
}

#[derive(Debug)]
pub struct Assignment {
    pub task_id: String,
    pub round: u64,
    pub kind: TaskKind,
    /// The model sent, until the round is over ([`Assignment::release_parameters`]).
    parameters: Mutex<Option<Arc<TensorSet>>>,
    pub parameters_are_global: bool,
    pub upload: Selector,
    /// What the upload must look like (names and shapes, in order); empty for evaluation.
    pub expected_upload: Arc<Vec<TensorSpec>>,
    /// Which uploaded tensors the mask covers, and its length in bits (FedCAC); `None` when
    /// the task takes no mask.
    pub mask_over: Option<Selector>,
    pub mask_bits: Option<usize>,
    /// What the feature statistics must fit (FeatureStats tasks).
    pub feature_stats: Option<StatsExpectation>,
    pub deadline: Instant,
    /// Which evaluations the client reports: the model as received (always, for EVALUATE
    /// tasks), and after training.
    pub evaluate_received: bool,
    pub evaluate_trained: bool,
    /// The L2 bound the client clips its update's change to (`[privacy]` placed on the
    /// client); the server checks the upload against it.
    pub clip_norm: Option<f64>,
    /// Secure aggregation: what the task sends of the protocol, and the answer it expects
    /// (on a TRAIN task, the masked vector instead of tensors).
    pub secagg: Option<SecAggTask>,
    /// Bytes streamed to the client for this task, counted by the download handler.
    bytes_down: AtomicU64,
    /// Microseconds the download handler spent streaming this task's parameters.
    download_micros: AtomicU64,
}

/// One client's part of a secure-aggregation stage.
#[derive(Debug)]
pub struct SecAggTask {
    pub stage: pb::SecAggStage,
    pub expect: Expect,
}

impl Assignment {
    /// Sends `parameters` with the task.
    pub fn set_parameters(&mut self, parameters: Arc<TensorSet>) {
        *self.parameters.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(parameters);
    }

    /// The model the task sends, unless it was released.
    pub fn parameters(&self) -> Option<Arc<TensorSet>> {
        self.parameters.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Lets go of the model once the round's results are in: a task outlives its round (the
    /// registry and the round's records hold it), and a strategy can then write the next
    /// model over the memory of this one (FedCAC reuses each client's) instead of asking the
    /// kernel for fresh pages. A download asked for after this is refused.
    pub fn release_parameters(&self) {
        self.parameters.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Whether the task is answered by a result (not WAIT or FINISH).
    pub fn awaits_result(&self) -> bool {
        !matches!(self.kind, TaskKind::Finish)
    }

    #[cfg(test)]
    pub fn new(round: u64, kind: TaskKind, client_index: u32, deadline: Instant) -> Self {
        Self::in_phase(round, "", kind, client_index, deadline)
    }

    /// A task of a phase besides the round's own (e.g. `calibrated` evaluation), whose id
    /// differs from the round's tasks so that clients and the gate tell them apart.
    pub fn in_phase(round: u64, phase: &str, kind: TaskKind, client_index: u32, deadline: Instant) -> Self {
        let kind_name = match kind {
            TaskKind::Train => "train",
            TaskKind::Evaluate => "eval",
            TaskKind::Finish => "finish",
            TaskKind::FeatureStats => "stats",
            TaskKind::SecAggSetup => "sa-setup",
            TaskKind::SecAggShareKeys => "sa-keys",
            TaskKind::SecAggUnmask => "sa-unmask",
        };
        let phase = if phase.is_empty() { String::new() } else { format!("{phase}-") };
        Self {
            task_id: format!("r{round}-{phase}{kind_name}-c{client_index}"),
            round,
            kind,
            parameters: Mutex::new(None),
            parameters_are_global: false,
            upload: Selector::default(),
            expected_upload: Arc::new(Vec::new()),
            mask_over: None,
            mask_bits: None,
            feature_stats: None,
            deadline,
            evaluate_received: true,
            evaluate_trained: false,
            clip_norm: None,
            secagg: None,
            bytes_down: AtomicU64::new(0),
            download_micros: AtomicU64::new(0),
        }
    }

    pub fn add_bytes_down(&self, n: u64) {
        self.bytes_down.fetch_add(n, Ordering::Relaxed);
    }

    pub fn bytes_down(&self) -> u64 {
        self.bytes_down.load(Ordering::Relaxed)
    }

    /// Counts a download's streaming time (every download of the task adds up).
    pub fn add_download_time(&self, elapsed: std::time::Duration) {
        self.download_micros.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn download_seconds(&self) -> f64 {
        self.download_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_core::tensor::NamedTensor;

    #[test]
    fn released_parameters_are_let_go() {
        let model = Arc::new(TensorSet::new(vec![NamedTensor::new("w", vec![2], vec![1.0, 2.0]).unwrap()]).unwrap());
        let mut task = Assignment::new(0, TaskKind::Train, 0, Instant::now());
        assert!(task.parameters().is_none());
        task.set_parameters(Arc::clone(&model));
        assert_eq!(task.parameters().as_deref(), Some(&*model));
        task.release_parameters();
        assert!(task.parameters().is_none());
        assert_eq!(Arc::strong_count(&model), 1, "the task holds no copy");
    }
}
