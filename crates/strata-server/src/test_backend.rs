//! A [`ModelBackend`] in plain Rust for the server's own tests, so that they need no libtorch:
//! a small model drawn from the seed, and a classifier retrained by mini-batch SGD on the
//! cross-entropy (what `strata_torch::classifier::retrain_head` computes).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_core::backend::{BackendError, HeadTraining, LinearHead, ModelBackend};
use strata_core::config::RunConfig;
use strata_core::parts::ModelParts;
use strata_core::tensor::{NamedTensor, TensorSet};

/// Classes and feature dimension of [`PlainBackend`]'s model.
pub const CLASSES: usize = 10;
pub const DIM: usize = 4;

pub struct PlainBackend;

impl ModelBackend for PlainBackend {
    fn initial_model(&self, config: &RunConfig) -> Result<TensorSet, BackendError> {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut draw = |n: usize| (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect::<Vec<_>>();
        let head = ModelParts::registered();
        Ok(TensorSet::new(vec![
            NamedTensor::new("body.weight", vec![DIM, 3], draw(DIM * 3))?,
            NamedTensor::new(&head.head_weight, vec![CLASSES, DIM], draw(CLASSES * DIM))?,
            NamedTensor::new(&head.head_bias, vec![CLASSES], draw(CLASSES))?,
        ])?)
    }

    fn retrain_head(
        &self,
        head: &LinearHead,
        features: &[f32],
        labels: &[i64],
        training: HeadTraining,
    ) -> Result<LinearHead, BackendError> {
        let (c, d) = (head.classes, head.dim);
        if features.len() != labels.len() * d || head.weight.len() != c * d || head.bias.len() != c {
            return Err("the head, features and labels disagree in shape".into());
        }
        let (mut w, mut b) = (head.weight.clone(), head.bias.clone());
        let mut order: Vec<usize> = (0..labels.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(training.seed);
        for _ in 0..training.epochs {
            order.shuffle(&mut rng);
            for batch in order.chunks(training.batch_size.max(1)) {
                let (mut gw, mut gb) = (vec![0f32; c * d], vec![0f32; c]);
                for &i in batch {
                    let x = &features[i * d..(i + 1) * d];
                    let logits: Vec<f32> =
                        (0..c).map(|k| b[k] + (0..d).map(|j| w[k * d + j] * x[j]).sum::<f32>()).collect();
                    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let exp: Vec<f32> = logits.iter().map(|z| (z - max).exp()).collect();
                    let total: f32 = exp.iter().sum();
                    for k in 0..c {
                        let target = if labels[i] == k as i64 { 1.0 } else { 0.0 };
                        let g = (exp[k] / total - target) / batch.len() as f32;
                        gb[k] += g;
                        for j in 0..d {
                            gw[k * d + j] += g * x[j];
                        }
                    }
                }
                let lr = training.lr as f32;
                w.iter_mut().zip(&gw).for_each(|(v, g)| *v -= lr * g);
                b.iter_mut().zip(&gb).for_each(|(v, g)| *v -= lr * g);
            }
        }
        Ok(LinearHead { classes: c, dim: d, weight: w, bias: b })
    }
}
