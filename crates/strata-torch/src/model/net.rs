//! The interface every registered model implements: a feature extractor (`body.*`) and a
//! linear classifier on top (`head.*`).

use tch::Tensor;
use tch::nn;

/// A classifier split into body and head, so that `forward_t(x) == head(features_t(x))`.
///
/// Methods that treat the two parts differently (FedPer, FedRep, FedRoD, ...) use
/// `features_t` and `head` directly; parameter names follow the split (`body.*`, `head.*`).
pub trait Net: Send + std::fmt::Debug {
    /// The penultimate features: the input of the head, shape [batch, features].
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor;

    /// The last linear layer, mapping features to class logits (`head.weight`, `head.bias`).
    fn head(&self) -> &nn::Linear;

    /// Class logits, shape [batch, classes]. `train` selects batch statistics in norm layers.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        super::layers::apply_linear(self.head(), &self.features_t(xs, train))
    }

    /// Whether [`Net::features_t`] can be called (a TorchScript module may not export it).
    fn has_features(&self) -> bool {
        true
    }

    /// Whether the model is a user's TorchScript module, whose layers Strata cannot see into
    /// (DP-SGD's per-sample gradients need them).
    fn is_script(&self) -> bool {
        false
    }
}
