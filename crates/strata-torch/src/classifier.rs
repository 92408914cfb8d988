//! The libtorch half of classifier calibration (CCVR): the features a model's classifier
//! sees, on a client, and the classifier's retraining on virtual features, on the server.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use strata_core::backend::{HeadTraining, LinearHead};
use tch::{Kind, Tensor};

use crate::TorchError;
use crate::local_model::LocalModel;

/// The classifier's input for every row of `x` (eval mode, no gradients), row-major
/// `[n, dim]`, and `dim`.
pub fn head_inputs(model: &LocalModel, x: &Tensor, batch_size: usize) -> (Vec<f32>, usize) {
    let n = x.size().first().copied().unwrap_or(0);
    let batch = i64::try_from(batch_size.max(1)).unwrap_or(i64::MAX);
    let device = model.device();
    tch::no_grad(|| {
        let mut out = Vec::new();
        let mut dim = 0;
        let mut first = 0;
        while first < n {
            let len = batch.min(n - first);
            let features = model.head_input_t(&x.narrow(0, first, len).to_device(device), false);
            dim = features.size().last().copied().unwrap_or(0) as usize;
            let flat = features.to_kind(Kind::Float).reshape([-1]).to_device(tch::Device::Cpu);
            out.extend(Vec::<f32>::try_from(&flat).expect("copying features to the host failed"));
            first += len;
        }
        (out, dim)
    })
}

/// Retrains `head` with plain SGD on the cross-entropy of `features` (row-major `[n, dim]`)
/// and `labels`, starting from its values, shuffling every epoch. On the CPU: the virtual set
/// is small (classes × M_c rows).
pub fn retrain_head(
    head: &LinearHead,
    features: &[f32],
    labels: &[i64],
    training: HeadTraining,
) -> Result<LinearHead, TorchError> {
    let (c, d) = (head.classes as i64, head.dim as i64);
    let n = labels.len();
    if features.len() != n * head.dim || head.weight.len() != head.classes * head.dim || head.bias.len() != head.classes
    {
        return Err(TorchError::ShapeMismatch {
            name: "head".into(),
            expected: vec![n, head.dim],
            got: vec![features.len() / head.dim.max(1), head.dim],
        });
    }
    let x = Tensor::from_slice(features).view([n as i64, d]);
    let y = Tensor::from_slice(labels);
    let mut w = Tensor::from_slice(&head.weight).view([c, d]).set_requires_grad(true);
    let mut b = Tensor::from_slice(&head.bias).set_requires_grad(true);
    let mut order: Vec<i64> = (0..n as i64).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(training.seed);
    for _ in 0..training.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks(training.batch_size.max(1)) {
            let index = Tensor::from_slice(batch);
            let logits = x.index_select(0, &index).matmul(&w.tr()) + &b;
            let loss = logits.cross_entropy_for_logits(&y.index_select(0, &index));
            w.zero_grad();
            b.zero_grad();
            loss.backward();
            tch::no_grad(|| {
                w -= w.grad() * training.lr;
                b -= b.grad() * training.lr;
            });
        }
    }
    let values = |t: &Tensor| Vec::<f32>::try_from(&t.detach().reshape([-1])).expect("host tensor");
    Ok(LinearHead { classes: head.classes, dim: head.dim, weight: values(&w), bias: values(&b) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Two separable classes the starting head gets exactly wrong: retraining fixes it.
    #[test]
    fn retraining_moves_the_head_towards_the_features() {
        let head = LinearHead { classes: 2, dim: 2, weight: vec![-1.0, 0.0, 1.0, 0.0], bias: vec![0.0, 0.0] };
        let features: Vec<f32> = (0..40).flat_map(|i| if i % 2 == 0 { [1.0, 0.1] } else { [-1.0, -0.1] }).collect();
        let labels: Vec<i64> = (0..40).map(|i| i % 2).collect();
        let accuracy = |h: &LinearHead| {
            let hits = (0..40)
                .filter(|&i| {
                    let z = &features[i * 2..i * 2 + 2];
                    let score = |k: usize| h.weight[k * 2] * z[0] + h.weight[k * 2 + 1] * z[1] + h.bias[k];
                    (score(1) > score(0)) == (labels[i] == 1)
                })
                .count();
            hits as f64 / 40.0
        };
        assert_eq!(accuracy(&head), 0.0);
        let training = HeadTraining { epochs: 20, lr: 0.5, batch_size: 8, seed: 3 };
        let trained = retrain_head(&head, &features, &labels, training).unwrap();
        assert_eq!(accuracy(&trained), 1.0);
        assert_eq!(trained, retrain_head(&head, &features, &labels, training).unwrap(), "seeded: reproducible");
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let head = LinearHead { classes: 2, dim: 2, weight: vec![0.0; 4], bias: vec![0.0; 2] };
        let training = HeadTraining { epochs: 1, lr: 0.1, batch_size: 2, seed: 0 };
        assert!(retrain_head(&head, &[0.0; 5], &[0, 1], training).is_err());
    }
}
