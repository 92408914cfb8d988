//! Local training: SGD over shuffled mini-batches, as PFLlib's clients do.

use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use strata_core::config::TrainConfig;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::TorchError;
use crate::client_data::ClientTensors;
use crate::local_model::LocalModel;

/// What one call to [`train_local`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrainStats {
    /// Cross-entropy averaged over every sample seen (each batch's mean loss weighted by its
    /// size); extra loss terms are not included. 0 when no sample was seen.
    pub mean_loss: f64,
    /// Samples seen, a sample drawn again in a later epoch counting again: `local_epochs ×
    /// train_len`, or the sizes of the `local_steps` batches added up.
    pub samples: u64,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// With DP-SGD, what the steps spent (for the client's accountant).
    pub private: Option<PrivateSteps>,
}

/// What a private training call spent (DP-SGD): `steps` Poisson-sampled steps at `sampling_rate`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PrivateSteps {
    pub sampling_rate: f64,
    pub steps: u64,
}

impl TrainStats {
    /// Two training passes of one round as one: samples, steps and private steps add up; the
    /// loss is the later pass's.
    pub fn then(self, later: TrainStats) -> TrainStats {
        let private = match (self.private, later.private) {
            (Some(a), Some(b)) => Some(PrivateSteps { steps: a.steps + b.steps, ..b }),
            (a, b) => b.or(a),
        };
        TrainStats {
            mean_loss: later.mean_loss,
            samples: self.samples + later.samples,
            steps: self.steps + later.steps,
            seconds: self.seconds + later.seconds,
            private,
        }
    }
}

/// Checks the settings every local training needs.
pub(crate) fn check_settings(cfg: &TrainConfig) -> Result<(), TorchError> {
    if cfg.batch_size == 0 {
        return Err(TorchError::Train("train.batch_size must be at least 1".into()));
    }
    if cfg.local_steps == Some(0) {
        return Err(TorchError::Train("train.local_steps must be at least 1".into()));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(TorchError::Train(format!("train.lr must be a positive number, got {}", cfg.lr)));
    }
    Ok(())
}

/// A term added to each mini-batch's loss, computed from the model being trained
/// (FedProx's and Ditto's proximal terms). It must be differentiable w.r.t. the model's variables.
pub type ExtraLoss<'a> = &'a dyn Fn(&LocalModel) -> Tensor;

/// Trains `model` on `data.train_*` with plain cross-entropy. See [`train_local_with`].
pub fn train_local(
    model: &mut LocalModel,
    data: &ClientTensors,
    cfg: &TrainConfig,
    seed: u64,
) -> Result<TrainStats, TorchError> {
    train_local_with(model, data, cfg, seed, None)
}

/// Trains `model` for `cfg.local_epochs` epochs of SGD (lr, momentum, weight decay from `cfg`)
/// with a fresh optimizer, so momentum does not carry over between calls. With
/// `cfg.local_steps` set, it takes exactly that many steps instead, however many epochs that
/// spans (none on an empty training set).
///
/// Each epoch visits the training samples in an order drawn from ChaCha8 seeded with `seed`
/// (not torch's global generator, so concurrent clients stay deterministic), in batches of
/// `cfg.batch_size` with the last partial batch kept (PyTorch's `drop_last=False`). Steps
/// continue into a freshly shuffled epoch as `next(iter(loader))` with a restart on
/// `StopIteration` does in the reference code of step-based protocols. The model is in train
/// mode (batch statistics in norm layers) throughout.
pub fn train_local_with(
    model: &mut LocalModel,
    data: &ClientTensors,
    cfg: &TrainConfig,
    seed: u64,
    extra_loss: Option<ExtraLoss<'_>>,
) -> Result<TrainStats, TorchError> {
    check_settings(cfg)?;
    let start = Instant::now();
    let n = data.train_len();
    let device = model.device();
    let sgd = nn::Sgd { momentum: cfg.momentum, dampening: 0.0, wd: cfg.weight_decay, nesterov: false };
    let mut opt = sgd.build(model.var_store(), cfg.lr)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<i64> = (0..i64::try_from(n).unwrap_or(i64::MAX)).collect();
    // Sum of batch-size-weighted losses, kept on the device: reading it every step would
    // synchronise a GPU.
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let mut steps = 0u64;
    let mut samples = 0u64;
    let budget_spent = |steps: u64| cfg.local_steps.is_some_and(|k| steps >= k as u64);
    let finished = |epoch: usize, steps: u64| match cfg.local_steps {
        // An empty training set would never spend the budget.
        Some(_) => budget_spent(steps) || n == 0,
        None => epoch >= cfg.local_epochs,
    };
    let mut epoch = 0usize;
    while !finished(epoch, steps) {
        epoch += 1;
        order.shuffle(&mut rng);
        let order_t = Tensor::from_slice(&order).to_device(device);
        for first in (0..n).step_by(cfg.batch_size) {
            if budget_spent(steps) {
                break;
            }
            let len = cfg.batch_size.min(n - first);
            let idx = order_t.narrow(0, first as i64, len as i64);
            let xs = data.train_x.index_select(0, &idx);
            let ys = data.train_y.index_select(0, &idx);
            let ce = model.forward_t(&xs, true).cross_entropy_for_logits(&ys);
            match extra_loss {
                Some(extra) => opt.backward_step(&(&ce + extra(model))),
                None => opt.backward_step(&ce),
            }
            loss_sum += ce.detach() * len as f64;
            steps += 1;
            samples += len as u64;
        }
    }
    let mean_loss = if samples == 0 { 0.0 } else { loss_sum.double_value(&[]) / samples as f64 };
    Ok(TrainStats { mean_loss, samples, steps, seconds: start.elapsed().as_secs_f64(), private: None })
}

#[cfg(test)]
mod tests;
