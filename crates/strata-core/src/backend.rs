//! What the server asks of a model backend: the two computations on models it cannot do in
//! plain Rust (building a model by name, training a classifier), as an interface, so that
//! the server links no tensor library. `strata-torch` implements it with libtorch
//! (`strata_torch::backend::TorchBackend`); the `strata` binary hands that to the server.

use crate::config::RunConfig;
use crate::tensor::TensorSet;

/// A backend's failure; the server reports its message.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// How a classifier is retrained.
#[derive(Clone, Copy, Debug)]
pub struct HeadTraining {
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub seed: u64,
}

/// A linear classifier as plain values: `weight` is `[classes, dim]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearHead {
    pub classes: usize,
    pub dim: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// The model computations the server needs. Both calls block (they may run a tensor library
/// for seconds); the server makes them on blocking threads, never on its async runtime.
pub trait ModelBackend: Send + Sync {
    /// The run's starting model: `config.model` for `config.data`'s samples, drawn from
    /// `config.seed` (the same config gives the same tensors). Its specs are what every
    /// upload is checked against.
    fn initial_model(&self, config: &RunConfig) -> Result<TensorSet, BackendError>;

    /// Retrains `head` with SGD on the cross-entropy of `features` (row-major
    /// `[labels.len(), head.dim]`) and `labels`, starting from its values; seeded by
    /// `training.seed`.
    fn retrain_head(
        &self,
        head: &LinearHead,
        features: &[f32],
        labels: &[i64],
        training: HeadTraining,
    ) -> Result<LinearHead, BackendError>;
}
