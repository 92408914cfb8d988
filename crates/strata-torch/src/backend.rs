//! [`TorchBackend`]: the server's [`ModelBackend`] on libtorch, on the CPU.

use strata_core::backend::{BackendError, HeadTraining, LinearHead, ModelBackend};
use strata_core::config::RunConfig;
use strata_core::tensor::TensorSet;

use crate::LocalModel;
use crate::classifier::retrain_head;

/// Builds the initial model with [`LocalModel::new`] and retrains classifiers with
/// [`retrain_head`], on the CPU. What `strata server` and `strata simulate` give the server.
#[derive(Clone, Copy, Debug, Default)]
pub struct TorchBackend;

impl ModelBackend for TorchBackend {
    fn initial_model(&self, config: &RunConfig) -> Result<TensorSet, BackendError> {
        let shape = strata_data::describe(&config.data)?;
        Ok(LocalModel::build(&config.model, &shape, tch::Device::Cpu, config.seed)?.export())
    }

    fn retrain_head(
        &self,
        head: &LinearHead,
        features: &[f32],
        labels: &[i64],
        training: HeadTraining,
    ) -> Result<LinearHead, BackendError> {
        Ok(retrain_head(head, features, labels, training)?)
    }
}

/// Names a TorchScript module's classifier in `config` when the config leaves it to be found
/// (the one linear layer with a logit per class, which takes the data's classes to tell), so
/// that the server, which knows neither, and every client select the same tensors, and the
/// run's `config.toml` says which. Other configs come back unchanged.
pub fn pin_head(mut config: RunConfig) -> Result<RunConfig, BackendError> {
    if config.model.torchscript_path().is_some() && config.model.head.is_none() {
        let shape = strata_data::describe(&config.data)?;
        let model = LocalModel::build(&config.model, &shape, tch::Device::Cpu, config.seed)?;
        config.model.head = model.parts().head.patterns().first().cloned();
    }
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The server's model is the seed's: the same config gives the same tensors, the one a
    /// client builds from it, with the classifier calibration retrains.
    #[test]
    fn the_initial_model_is_the_seeds_and_has_a_head() {
        let mut config = RunConfig::reference_fmnist();
        config.model.name = "mlp".into();
        let built = TorchBackend.initial_model(&config).unwrap();
        assert_eq!(built, TorchBackend.initial_model(&config).unwrap());
        let shape = strata_data::describe(&config.data).unwrap();
        let local = LocalModel::new("mlp", &shape, tch::Device::Cpu, config.seed).unwrap();
        assert_eq!(built, local.export());
        assert!(built.get("head.weight").is_some() && built.get("head.bias").is_some());
        config.model.name = "no-such-model".into();
        assert!(TorchBackend.initial_model(&config).unwrap_err().to_string().contains("no-such-model"));
    }
}
