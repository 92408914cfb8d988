//! Evaluation: accuracy and mean loss of a model on a labelled set, in eval mode.

use tch::{Kind, Tensor};

use crate::local_model::LocalModel;

/// Counts from one evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalStats {
    pub correct: u64,
    pub total: u64,
    /// Mean cross-entropy per sample; 0 for an empty set.
    pub loss: f64,
}

impl EvalStats {
    /// Fraction of correct predictions; 0 (not NaN) for an empty set.
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 { 0.0 } else { self.correct as f64 / self.total as f64 }
    }
}

/// Evaluates `model` on inputs `x` and labels `y` in batches of `batch_size`, without
/// gradients and with norm layers using their running statistics.
pub fn evaluate(model: &LocalModel, x: &Tensor, y: &Tensor, batch_size: usize) -> EvalStats {
    let n = y.size().first().copied().unwrap_or(0);
    if n == 0 {
        return EvalStats::default();
    }
    let batch = i64::try_from(batch_size.max(1)).unwrap_or(i64::MAX);
    let device = model.device();
    tch::no_grad(|| {
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut first = 0;
        while first < n {
            let len = batch.min(n - first);
            let xs = x.narrow(0, first, len).to_device(device);
            let ys = y.narrow(0, first, len).to_device(device);
            let logits = model.forward_t(&xs, false);
            let loss = logits.cross_entropy_loss::<Tensor>(&ys, None, tch::Reduction::Sum, -100, 0.0);
            loss_sum += loss.to_kind(Kind::Double);
            correct += logits.argmax(-1, false).eq_tensor(&ys).sum(Kind::Int64);
            first += len;
        }
        let total = n as u64;
        EvalStats { correct: correct.int64_value(&[]) as u64, total, loss: loss_sum.double_value(&[]) / total as f64 }
    })
}
