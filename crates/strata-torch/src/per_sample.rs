//! Per-sample gradients of a whole batch in one forward and one backward pass, for models made
//! of linear and 2-d convolution layers (the built-in `cnn` and `mlp`), as Opacus's hooks do.
//!
//! While [`recording`], each layer notes its input and output ([`record`]); one backward pass
//! of the batch's summed loss gives each layer's output gradient δ with one row per sample.
//! A linear layer's per-sample weight gradient is δᵢ ⊗ aᵢ, whose norm is ‖δᵢ‖·‖aᵢ‖; a
//! convolution's is δᵢ times its input unfolded into patches (im2col). The clipped sum
//! Σᵢ fᵢ gᵢ is then one product per layer. A model with any other trained variable (or one used
//! twice) is not covered: DP-SGD falls back to one sample at a time.

use std::cell::RefCell;

use tch::{Kind, Reduction, Tensor};

/// A layer whose per-sample gradients this module knows.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Layer {
    Linear,
    Conv2d { kernel: [i64; 2], stride: i64, padding: i64 },
}

/// One application of a layer during a recorded forward pass.
#[derive(Debug)]
pub(crate) struct Tap {
    layer: Layer,
    input: Tensor,
    output: Tensor,
    weight: Tensor,
    bias: Option<Tensor>,
}

thread_local! {
    static TAPS: RefCell<Option<Vec<Tap>>> = const { RefCell::new(None) };
}

/// Notes a layer's application, when a [`recording`] is open on this thread (otherwise free).
pub(crate) fn record(layer: Layer, input: &Tensor, output: &Tensor, weight: &Tensor, bias: Option<&Tensor>) {
    TAPS.with(|taps| {
        if let Some(taps) = taps.borrow_mut().as_mut() {
            taps.push(Tap {
                layer,
                input: input.detach(),
                output: output.shallow_clone(),
                weight: weight.shallow_clone(),
                bias: bias.map(Tensor::shallow_clone),
            });
        }
    });
}

/// Runs `forward` with recording on; returns its result and the layers it applied, in order.
pub(crate) fn recording<R>(forward: impl FnOnce() -> R) -> (R, Vec<Tap>) {
    TAPS.with(|taps| *taps.borrow_mut() = Some(Vec::new()));
    let out = forward();
    let taps = TAPS.with(|taps| taps.borrow_mut().take()).unwrap_or_default();
    (out, taps)
}

/// Where each trained parameter is in the recorded layers: (tap, is_bias) per parameter.
/// `None` unless every parameter appears exactly once.
pub(crate) fn coverage(taps: &[Tap], params: &[Tensor]) -> Option<Vec<(usize, bool)>> {
    let mut found = vec![None; params.len()];
    for (t, tap) in taps.iter().enumerate() {
        let rank = match tap.layer {
            Layer::Linear => 2,
            Layer::Conv2d { .. } => 4,
        };
        if tap.input.dim() != rank {
            return None;
        }
        let parts = std::iter::once((false, &tap.weight)).chain(tap.bias.as_ref().map(|b| (true, b)));
        for (is_bias, tensor) in parts {
            if !tensor.requires_grad() {
                continue;
            }
            let p = params.iter().position(|p| p.data_ptr() == tensor.data_ptr())?;
            if found[p].replace((t, is_bias)).is_some() {
                return None;
            }
        }
    }
    found.into_iter().collect()
}

/// Per-sample gradients of one layer, kept in the shape their clipped sum needs.
enum Grads {
    /// δ [B, out] and a [B, in].
    Linear { delta: Tensor, input: Tensor },
    /// Weight gradients [B, out, in·k·k] and bias gradients [B, out].
    Conv { weight: Tensor, bias: Tensor, shape: Vec<i64> },
}

/// Σᵢ min(1, C/(‖gᵢ‖ + 1e-6))·gᵢ for every parameter (in `params` order, through `places`),
/// gᵢ being sample i's gradient of `loss_sum` (the batch's summed loss, computed from the
/// recorded `taps`) over every parameter together; and the summed loss.
pub(crate) fn clipped_sums(
    logits: &Tensor,
    labels: &Tensor,
    taps: &[Tap],
    places: &[(usize, bool)],
    clipping_norm: f64,
) -> (Vec<Tensor>, f64) {
    let loss = logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::Sum, -100, 0.0);
    let outputs: Vec<&Tensor> = taps.iter().map(|t| &t.output).collect();
    let deltas = Tensor::run_backward(&[&loss], &outputs, false, false);
    let batch = logits.size()[0];
    let mut squares = Tensor::zeros([batch], (Kind::Float, logits.device()));
    let grads: Vec<Grads> = tch::no_grad(|| {
        taps.iter()
            .zip(deltas)
            .map(|(tap, delta)| match tap.layer {
                Layer::Linear => {
                    let (d2, a2) = (
                        delta.square().sum_dim_intlist(1, false, Kind::Float),
                        tap.input.square().sum_dim_intlist(1, false, Kind::Float),
                    );
                    let bias_part = if tap.bias.is_some() { d2.shallow_clone() } else { d2.zeros_like() };
                    squares += &d2 * a2 + bias_part;
                    Grads::Linear { delta, input: tap.input.shallow_clone() }
                }
                Layer::Conv2d { kernel, stride, padding } => {
                    let out_ch = delta.size()[1];
                    let patches = tap.input.im2col(kernel, [1, 1], [padding, padding], [stride, stride]);
                    let d = delta.reshape([batch, out_ch, -1]);
                    let weight = d.bmm(&patches.transpose(1, 2));
                    let bias = d.sum_dim_intlist(2, false, Kind::Float);
                    squares += weight.square().sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float);
                    if tap.bias.is_some() {
                        squares += bias.square().sum_dim_intlist(1, false, Kind::Float);
                    }
                    Grads::Conv { weight, bias, shape: tap.weight.size() }
                }
            })
            .collect()
    });
    let sums = tch::no_grad(|| {
        let factors = (clipping_norm / (squares.sqrt() + 1e-6)).clamp_max(1.0);
        places
            .iter()
            .map(|&(t, is_bias)| match (&grads[t], is_bias) {
                (Grads::Linear { delta, input }, false) => (delta * factors.unsqueeze(1)).transpose(0, 1).matmul(input),
                (Grads::Linear { delta, .. }, true) => {
                    (delta * factors.unsqueeze(1)).sum_dim_intlist(0, false, Kind::Float)
                }
                (Grads::Conv { weight, shape, .. }, false) => {
                    (weight * factors.view([-1, 1, 1])).sum_dim_intlist(0, false, Kind::Float).reshape(shape.as_slice())
                }
                (Grads::Conv { bias, .. }, true) => {
                    (bias * factors.unsqueeze(1)).sum_dim_intlist(0, false, Kind::Float)
                }
            })
            .collect()
    });
    (sums, loss.double_value(&[]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use strata_data::DataShape;
    use tch::Device;

    use super::*;
    use crate::LocalModel;

    /// Every trained variable of the built-in `cnn` and `mlp` is recorded exactly once; a
    /// frozen one is left out; outside a recording nothing is kept.
    #[test]
    fn the_built_in_models_are_covered() {
        for (name, shape) in [("cnn", vec![1, 28, 28]), ("mlp", vec![10])] {
            let shape = DataShape { sample_shape: shape.clone(), num_classes: 10 };
            let model = LocalModel::new(name, &shape, Device::Cpu, 1).unwrap();
            let mut dims = vec![3i64];
            dims.extend(shape.sample_shape.iter().map(|&d| d as i64));
            let xs = Tensor::rand(dims.as_slice(), (Kind::Float, Device::Cpu));
            let params = model.var_store().trainable_variables();
            let (_, taps) = recording(|| model.forward_t(&xs, true));
            let places = coverage(&taps, &params).unwrap_or_else(|| panic!("{name} is covered"));
            assert_eq!(places.len(), params.len());
            let _ = params[0].set_requires_grad(false);
            let (_, taps) = recording(|| model.forward_t(&xs, true));
            assert!(coverage(&taps, &params[1..]).is_some(), "{name}: a frozen variable is skipped");
            let _ = params[0].set_requires_grad(true);
            let _ = model.forward_t(&xs, true);
            assert!(TAPS.with(|t| t.borrow().is_none()), "nothing kept outside a recording");
        }
    }
}
