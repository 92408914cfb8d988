//! The client's local state and the blocking work on it: merge, evaluate, train, evaluate.
//! Runs on a blocking thread; nothing here awaits.

use std::time::Instant;

use strata_core::config::TrainConfig;
use strata_core::mask::BitMask;
use strata_core::records::metric;
use strata_core::selection::Selector;
use strata_core::tensor::TensorSet;
use strata_methods::ccvr::client_stats;
use strata_torch::classifier::head_inputs;
use strata_torch::{ClientTensors, DpSgd, LocalModel, TorchError, evaluate, set_threads};

use crate::attack::Attack;
use crate::example_ledger::ExampleLedger;
use crate::method::{ClientMethod, GlobalView, RoundContext};
use crate::transfer::FeatureStats;

// Measured on 2 cores with FedAvgCNN: batch 100 evaluates ~35% faster than 1000.
const EVAL_BATCH: usize = 100;

/// The personal model, the client's data as tensors, and the method's client half.
pub struct LocalState {
    pub model: LocalModel,
    pub data: ClientTensors,
    pub method: Box<dyn ClientMethod>,
    /// libtorch threads for this client's work.
    pub threads: usize,
    /// What this client does to its uploads, when it is a hostile one (`simulate --attack`).
    pub attack: Option<Attack>,
    /// What DP-SGD has spent of this client's data so far (`[dp_sgd]`).
    pub example_ledger: ExampleLedger,
}

/// What the worker asks of the local state.
pub struct Job {
    pub round: u64,
    pub received: TensorSet,
    pub train: Option<(TrainConfig, u64)>,
    pub parameters_are_global: bool,
    pub upload: Selector,
    pub mask_over: Option<Selector>,
    /// Whether to report the personal model's accuracy as merged, and after training.
    pub evaluate_received: bool,
    pub evaluate_trained: bool,
    /// The L2 bound to clip the upload's change from `received` to (`[privacy]` placed on
    /// the client).
    pub clip_norm: Option<f64>,
    /// DP-SGD in training (`[dp_sgd]`), with the δ its ε is reported at.
    pub dp_sgd: Option<(DpSgd, f64)>,
    /// Whether the caller needs `received` back as it came (a compressed upload is its change
    /// from it); otherwise a training job writes its upload into that memory.
    pub keep_received: bool,
}

pub struct JobOutput {
    pub metrics: Vec<(&'static str, f64)>,
    pub upload: Option<TensorSet>,
    pub mask: Option<BitMask>,
    pub num_samples: u64,
    /// Samples trained on and the seconds it took, when the job trained.
    pub trained: Option<(u64, f64)>,
    /// What the job received, done with, unless the upload was written into it: the next
    /// download can be assembled into it.
    pub received: Option<TensorSet>,
}

impl JobOutput {
    /// What a statistics task reports besides its masked vector: the samples it covers.
    pub fn statistics(stats: &crate::transfer::FeatureStats) -> Self {
        let samples = stats.classes.iter().map(|c| c.count).sum();
        Self { metrics: Vec::new(), upload: None, mask: None, num_samples: samples, trained: None, received: None }
    }
}

impl LocalState {
    pub fn run(&mut self, job: Job) -> Result<JobOutput, TorchError> {
        // at::set_num_threads applies to the calling thread's pool: set it on every job.
        set_threads(self.threads);
        self.method.merge(&mut self.model, &job.received, job.round)?;
        let mut metrics = vec![
            (metric::TRAIN_SAMPLES, self.data.train_len() as f64),
            (metric::TEST_SAMPLES, self.data.test_len() as f64),
        ];
        // An evaluation task always measures the merged model; a training task when asked.
        if job.evaluate_received || job.train.is_none() {
            let merged = self.evaluate(&self.model);
            metrics.push((metric::ACCURACY, merged));
            if job.parameters_are_global {
                match self.method.global_view() {
                    GlobalView::Personal => metrics.push((metric::GLOBAL_ACCURACY, merged)),
                    GlobalView::Separate(global) => metrics.push((metric::GLOBAL_ACCURACY, self.evaluate(global))),
                    GlobalView::None => {}
                }
            }
        }
        let Some((config, seed)) = job.train else {
            let received = Some(job.received);
            return Ok(JobOutput { metrics, upload: None, mask: None, num_samples: 0, trained: None, received });
        };
        let ctx = RoundContext { round: job.round, train: &config, seed, dp_sgd: job.dp_sgd.map(|(dp, _)| dp) };
        let started = Instant::now();
        let stats = self.method.train(&mut self.model, &self.data, &ctx)?;
        let seconds = started.elapsed().as_secs_f64();
        metrics.push((metric::TRAIN_SECONDS, seconds));
        match (job.dp_sgd, stats.private) {
            (Some((dp, delta)), Some(spent)) => {
                // The training loss is a statistic of the private data: it stays here.
                self.example_ledger.record(spent);
                if let Some(epsilon) = self.example_ledger.epsilon(dp.noise_multiplier, delta) {
                    metrics.push((metric::DP_SGD_EPSILON, epsilon));
                }
            }
            _ => metrics.push((metric::TRAIN_LOSS, stats.mean_loss)),
        }
        if job.evaluate_trained {
            metrics.push((metric::ACCURACY_TRAINED, self.evaluate(&self.model)));
        }
        // Clipping and poisoning read what was received after the upload is taken.
        let (received, reuse) = match job.keep_received || job.clip_norm.is_some() || self.attack.is_some() {
            true => (Some(job.received), None),
            false => (None, Some(job.received)),
        };
        let mut upload = self.method.upload(&self.model, &job.upload, reuse);
        let mask = match &job.mask_over {
            Some(covered) => self.method.mask(&upload, covered)?,
            None => None,
        };
        if let (Some(bound), Some(received)) = (job.clip_norm, &received) {
            let (clipped, unclipped) = clip_upload(received, upload, bound)?;
            upload = clipped;
            metrics.push((metric::DP_UNCLIPPED, f64::from(u8::from(unclipped))));
        }
        let upload = match (self.attack, &received) {
            (Some(attack), Some(received)) => attack.poison(received, upload, seed ^ 0x706f_6973_6f6e),
            _ => upload,
        };
        let trained = Some((stats.samples, seconds));
        Ok(JobOutput {
            metrics,
            upload: Some(upload),
            mask,
            num_samples: self.data.train_len() as u64,
            trained,
            received,
        })
    }

    /// CCVR's client half: per-class mean and covariance of what the classifier of `global`
    /// (the received model, in eval mode) sees over this client's training data.
    pub fn feature_stats(&self, global: &TensorSet) -> Result<FeatureStats, TorchError> {
        set_threads(self.threads);
        if !self.model.has_head_input() {
            return Err(TorchError::Model(
                "CCVR needs the classifier's input: the TorchScript module must export a `features(x)` method \
                 (@torch.jit.export) whose output the classifier takes"
                    .into(),
            ));
        }
        let mut scratch = LocalModel::build(self.model.config(), &self.model.shape(), self.model.device(), 0)?;
        // Start from the personal model so that tensors the server keeps local (none for the
        // methods CCVR composes with) still have this client's values; only those are copied.
        scratch.import(&self.model.export_where(|name| global.get(name).is_none()))?;
        scratch.import(global)?;
        let (features, dim) = head_inputs(&scratch, &self.data.train_x, EVAL_BATCH);
        let labels: Vec<u32> = Vec::<i64>::try_from(&self.data.train_y.to_device(tch::Device::Cpu))
            .map_err(|e| TorchError::Data(format!("training labels: {e}")))?
            .into_iter()
            .map(|l| l as u32)
            .collect();
        Ok(FeatureStats { dim, classes: client_stats(&features, &labels, dim) })
    }

    fn evaluate(&self, model: &LocalModel) -> f64 {
        evaluate(model, &self.data.test_x, &self.data.test_y, EVAL_BATCH).accuracy()
    }
}

/// Client-side clipping for user-level DP: the upload's change from what was received, over
/// every uploaded tensor together, scaled to at most `bound`; and whether it was within it.
fn clip_upload(received: &TensorSet, upload: TensorSet, bound: f64) -> Result<(TensorSet, bool), TorchError> {
    if received.specs() != upload.specs() {
        return Err(TorchError::Train(
            "the server asked to clip the upload, but it does not hold the tensors that were received".into(),
        ));
    }
    let (clipped, outcome) = strata_methods::dp::clip_update(received, &upload, bound);
    Ok((clipped, outcome.unclipped()))
}
