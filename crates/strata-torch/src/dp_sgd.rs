//! DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016) as Opacus does
//! it: each step draws its batch by Poisson sampling (every sample independently with rate
//! q = 1/⌈n/B⌉), clips each sample's gradient over every trained parameter together to
//! C·min(1, C/(‖g‖ + 1e-6)), adds N(0, (zC)²) to the sum of the clipped gradients and divides
//! by the *expected* batch size nq, so that one sample moves a step by at most C/(nq).
//!
//! Every parameter that trains is private, not only the shared ones: a personal head trained
//! on the data without noise would feed that data into the shared body's later gradients,
//! outside what the accountant counts. Batch statistics mix samples, so models with batch
//! normalization are refused (as Opacus refuses them).
//!
//! The batches and the noise come from a ChaCha20 generator the OS seeds, not the run's
//! seed: amplification by sampling holds only if nobody can tell which samples a step used.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;
use strata_core::config::TrainConfig;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::TorchError;
use crate::client_data::ClientTensors;
use crate::local_model::LocalModel;
use crate::per_sample;
use crate::train::{ExtraLoss, PrivateSteps, TrainStats, check_settings};

/// Example-level privacy of one client's training.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpSgd {
    /// z: the noise's standard deviation over the clipping bound.
    pub noise_multiplier: f64,
    /// C: the bound on each sample's gradient norm.
    pub clipping_norm: f64,
}

impl DpSgd {
    /// The Poisson rate of a client with `n` training samples: 1/⌈n/B⌉ (Opacus' 1/len(loader)).
    pub fn sampling_rate(n: usize, batch_size: usize) -> f64 {
        if n == 0 { 0.0 } else { 1.0 / n.div_ceil(batch_size.max(1)) as f64 }
    }
}

/// Trains `model` like [`crate::train_local_with`] (same epochs or step budget, SGD settings
/// and extra loss term), with DP-SGD's private steps; [`TrainStats::private`] says what it spent.
pub fn train_private(
    model: &mut LocalModel,
    data: &ClientTensors,
    cfg: &TrainConfig,
    dp: DpSgd,
    extra_loss: Option<ExtraLoss<'_>>,
) -> Result<TrainStats, TorchError> {
    train_private_with(model, data, cfg, dp, extra_loss, PerSample::Batched)
}

/// How per-sample gradients are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PerSample {
    /// The whole batch at once ([`crate::per_sample`]), one sample at a time where the model
    /// has layers it does not know.
    Batched,
    /// One forward and backward pass per sample (the tests' reference).
    #[cfg_attr(not(test), allow(dead_code))]
    OneByOne,
}

fn train_private_with(
    model: &mut LocalModel,
    data: &ClientTensors,
    cfg: &TrainConfig,
    dp: DpSgd,
    extra_loss: Option<ExtraLoss<'_>>,
    how: PerSample,
) -> Result<TrainStats, TorchError> {
    check_settings(cfg)?;
    if let Some(name) = model.spec().into_iter().map(|s| s.name).find(|n| n.ends_with("running_mean")) {
        return Err(TorchError::Train(format!(
            "DP-SGD clips each sample's gradient, but batch normalization (`{name}`) mixes the samples of a batch; \
             use a model without it"
        )));
    }
    if model.net().is_script() {
        return Err(TorchError::Train(
            "DP-SGD computes per-sample gradients from the layers of a registered model; a TorchScript module's \
             layers are its own (use [privacy], user-level DP, instead)"
                .into(),
        ));
    }
    let start = Instant::now();
    let n = data.train_len();
    let rate = DpSgd::sampling_rate(n, cfg.batch_size);
    let steps_per_epoch = if n == 0 { 0 } else { n.div_ceil(cfg.batch_size) as u64 };
    let total_steps = match cfg.local_steps {
        Some(k) if n > 0 => k as u64,
        Some(_) => 0,
        None => steps_per_epoch * cfg.local_epochs as u64,
    };
    let expected_batch = n as f64 * rate;
    let sgd = nn::Sgd { momentum: cfg.momentum, dampening: 0.0, wd: cfg.weight_decay, nesterov: false };
    let mut opt = sgd.build(model.var_store(), cfg.lr)?;
    let params: Vec<Tensor> =
        model.var_store().trainable_variables().into_iter().filter(Tensor::requires_grad).collect();
    define_grads(&params);
    let mut rng = ChaCha20Rng::from_os_rng();
    let noise_std = dp.noise_multiplier * dp.clipping_norm;
    let (mut loss_sum, mut samples) = (0.0f64, 0u64);
    for _ in 0..total_steps {
        let batch: Vec<i64> = (0..n as i64).filter(|_| rng.random::<f64>() < rate).collect();
        let (mut sums, loss) = match how {
            _ if batch.is_empty() => (params.iter().map(|p| p.zeros_like()).collect(), 0.0),
            PerSample::Batched => batched_sums(model, data, &batch, &params, dp.clipping_norm)
                .unwrap_or_else(|| one_by_one_sums(model, data, &batch, &params, dp.clipping_norm)),
            PerSample::OneByOne => one_by_one_sums(model, data, &batch, &params, dp.clipping_norm),
        };
        loss_sum += loss;
        samples += batch.len() as u64;
        tch::no_grad(|| {
            for (sum, p) in sums.iter_mut().zip(&params) {
                if noise_std > 0.0 {
                    *sum += gaussian_like(sum, noise_std, &mut rng);
                }
                p.grad().copy_(&(&*sum / expected_batch));
            }
        });
        // A term of the model alone (FedProx's) reads no sample: its gradient adds as is.
        if let Some(extra) = extra_loss {
            extra(model).backward();
        }
        opt.step();
    }
    opt.zero_grad();
    let mean_loss = if samples == 0 { 0.0 } else { loss_sum / samples as f64 };
    Ok(TrainStats {
        mean_loss,
        samples,
        steps: total_steps,
        seconds: start.elapsed().as_secs_f64(),
        private: Some(PrivateSteps { sampling_rate: rate, steps: total_steps }),
    })
}

/// The clipped per-sample gradients of `batch` summed, and the summed loss, from one pass over
/// the whole batch; `None` when the model has a trained variable [`per_sample`] does not know.
fn batched_sums(
    model: &LocalModel,
    data: &ClientTensors,
    batch: &[i64],
    params: &[Tensor],
    clipping_norm: f64,
) -> Option<(Vec<Tensor>, f64)> {
    let idx = Tensor::from_slice(batch).to_device(data.train_x.device());
    let (xs, ys) = (data.train_x.index_select(0, &idx), data.train_y.index_select(0, &idx));
    let (logits, taps) = per_sample::recording(|| model.forward_t(&xs, true));
    let places = per_sample::coverage(&taps, params)?;
    Some(per_sample::clipped_sums(&logits, &ys, &taps, &places, clipping_norm))
}

/// The same sums, one forward and backward pass per sample.
fn one_by_one_sums(
    model: &LocalModel,
    data: &ClientTensors,
    batch: &[i64],
    params: &[Tensor],
    clipping_norm: f64,
) -> (Vec<Tensor>, f64) {
    let mut sums: Vec<Tensor> = params.iter().map(|p| p.zeros_like()).collect();
    let mut loss_sum = 0.0;
    for &i in batch {
        let xs = data.train_x.narrow(0, i, 1);
        let ys = data.train_y.narrow(0, i, 1);
        for p in params {
            let _ = p.grad().zero_();
        }
        let loss = model.forward_t(&xs, true).cross_entropy_for_logits(&ys);
        loss.backward();
        loss_sum += loss.double_value(&[]);
        tch::no_grad(|| {
            let squares: f64 = params.iter().map(|p| p.grad().square().sum(Kind::Double).double_value(&[])).sum();
            let factor = (clipping_norm / (squares.sqrt() + 1e-6)).min(1.0);
            for (sum, p) in sums.iter_mut().zip(params) {
                *sum += p.grad() * factor;
            }
        });
    }
    (sums, loss_sum)
}

/// Gives every parameter a (zero) gradient, so that a step whose Poisson batch is empty still
/// has gradients to hold its noise.
fn define_grads(params: &[Tensor]) {
    if params.is_empty() {
        return;
    }
    let zero = params.iter().map(|p| (p * 0.0).sum(Kind::Float)).fold(Tensor::from(0.0f32), |a, b| a + b);
    zero.backward();
}

/// N(0, std²) values shaped like `like`, drawn from `rng` (not torch's generator, which the
/// run's seed sets for model initialisation).
fn gaussian_like(like: &Tensor, std: f64, rng: &mut impl Rng) -> Tensor {
    let values: Vec<f32> = (0..like.numel()).map(|_| (std * rng.sample::<f64, _>(StandardNormal)) as f32).collect();
    Tensor::from_slice(&values).view(like.size().as_slice()).to_device(like.device())
}

#[cfg(test)]
mod tests;
