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
    /// Samples seen, counting each epoch: `local_epochs × train_len`.
    pub samples: u64,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
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
/// with a fresh optimizer, so momentum does not carry over between calls.
///
/// Each epoch visits the training samples in an order drawn from ChaCha8 seeded with `seed`
/// (not torch's global generator, so concurrent clients stay deterministic), in batches of
/// `cfg.batch_size` with the last partial batch kept (PyTorch's `drop_last=False`). The model
/// is in train mode (batch statistics in norm layers) throughout.
pub fn train_local_with(
    model: &mut LocalModel,
    data: &ClientTensors,
    cfg: &TrainConfig,
    seed: u64,
    extra_loss: Option<ExtraLoss<'_>>,
) -> Result<TrainStats, TorchError> {
    if cfg.batch_size == 0 {
        return Err(TorchError::Train("train.batch_size must be at least 1".into()));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(TorchError::Train(format!("train.lr must be a positive number, got {}", cfg.lr)));
    }
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
    for _ in 0..cfg.local_epochs {
        order.shuffle(&mut rng);
        let order_t = Tensor::from_slice(&order).to_device(device);
        for first in (0..n).step_by(cfg.batch_size) {
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
        }
    }
    let samples = (n * cfg.local_epochs) as u64;
    let mean_loss = if samples == 0 { 0.0 } else { loss_sum.double_value(&[]) / samples as f64 };
    Ok(TrainStats { mean_loss, samples, steps, seconds: start.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests;
