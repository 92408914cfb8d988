//! Training part of a model: freeze the rest for the duration of a closure (FedRep trains the
//! head with the body frozen, then the body with the head frozen).

use tch::Tensor;

use crate::local_model::LocalModel;

/// Runs `f` with every trainable variable whose name `frozen` accepts excluded from gradients,
/// then restores them. SGD skips variables without a gradient, so they stay exactly as they were.
pub fn with_frozen<R>(
    model: &mut LocalModel,
    frozen: &dyn Fn(&str) -> bool,
    f: impl FnOnce(&mut LocalModel) -> R,
) -> R {
    let paused: Vec<Tensor> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(name, t)| frozen(name) && t.requires_grad())
        .map(|(_, t)| t.set_requires_grad(false))
        .collect();
    let result = f(model);
    for t in paused {
        let _ = t.set_requires_grad(true);
    }
    result
}

#[cfg(test)]
mod tests {
    use strata_core::config::TrainConfig;
    use strata_data::partition::ClientShare;
    use strata_data::{DataShape, Dataset, Features};

    use super::*;
    use crate::{ClientTensors, train_local};

    #[test]
    fn frozen_tensors_do_not_move_and_the_rest_train() {
        let shape = DataShape { sample_shape: vec![4], num_classes: 2 };
        let mut model = LocalModel::new("mlp", &shape, tch::Device::Cpu, 3).expect("model");
        let features: Vec<f32> = (0..80).map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.5).collect();
        let labels: Vec<u32> = (0..20).map(|i| i % 2).collect();
        let dataset = Dataset {
            name: "t".into(),
            features: Features::Floats(features),
            labels,
            shape: shape.clone(),
            official_train_len: 20,
            owners: None,
        };
        let share = ClientShare { train: (0..16).collect(), test: (16..20).collect() };
        let data = ClientTensors::from_share(&dataset, &share, tch::Device::Cpu).expect("data");
        let cfg = TrainConfig {
            lr: 0.5,
            batch_size: 4,
            local_epochs: 1,
            local_steps: None,
            momentum: 0.0,
            weight_decay: 0.0,
        };
        let before = model.export();
        with_frozen(&mut model, &|name: &str| name.starts_with("body."), |m| train_local(m, &data, &cfg, 1))
            .expect("train");
        let after = model.export();
        for (b, a) in before.tensors().iter().zip(after.tensors()) {
            assert_eq!(b.values() == a.values(), b.name().starts_with("body."), "{}", b.name());
        }
        // Gradients are back on: training again moves the body.
        train_local(&mut model, &data, &cfg, 2).expect("train");
        assert_ne!(model.export().get("body.fc1.weight"), after.get("body.fc1.weight"));
    }
}
