//! The client half of a method: how received parameters merge into the local model and
//! which trained tensors go back. Registered under the same names as the server strategies.

use strata_core::selection::Selector;
use strata_core::tensor::TensorSet;
use strata_torch::{LocalModel, TorchError};

pub trait ClientMethod: Send {
    /// Merges what the server sent into the personal model.
    fn merge(&mut self, model: &mut LocalModel, received: &TensorSet) -> Result<(), TorchError>;
    /// Whether the merged model equals the received one, so evaluating it also measures
    /// the received (global) model.
    fn merge_is_identity(&self) -> bool;
    /// The tensors to upload after training.
    fn upload(&self, model: &LocalModel, patterns: &Selector) -> TensorSet {
        model.export().select(|name| patterns.matches(name))
    }
}

/// FedAvg: the received global model replaces the local one.
pub struct FedAvgClient;

impl ClientMethod for FedAvgClient {
    fn merge(&mut self, model: &mut LocalModel, received: &TensorSet) -> Result<(), TorchError> {
        model.import(received)
    }

    fn merge_is_identity(&self) -> bool {
        true
    }
}

/// Builds the client half registered under `method`.
pub fn build(method: &str) -> Result<Box<dyn ClientMethod>, String> {
    match method {
        "fedavg" => Ok(Box::new(FedAvgClient)),
        other => Err(format!("this client does not implement method `{other}`")),
    }
}
