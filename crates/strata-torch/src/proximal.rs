//! The proximal pull towards a reference model, (μ/2)·Σ‖w − w_ref‖², shared by FedProx
//! (towards the global model) and Ditto (personal model towards the global one).

use std::collections::HashMap;

use strata_core::tensor::TensorSet;
use tch::{Device, Kind, Tensor};

use crate::local_model::LocalModel;

/// Reference values, on the model's device, for the tensors the term covers.
#[derive(Debug)]
pub struct Anchor {
    tensors: Vec<(String, Tensor)>,
}

impl Anchor {
    /// Copies `reference` to `device`; only the names in it are pulled.
    pub fn new(reference: &TensorSet, device: Device) -> Self {
        let tensors = reference
            .tensors()
            .iter()
            .map(|t| {
                let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
                (t.name().to_string(), Tensor::from_slice(t.values()).view(shape.as_slice()).to_device(device))
            })
            .collect();
        Self { tensors }
    }

    /// (μ/2)·Σ‖w − w_ref‖² over the anchored trainable variables of `model`.
    pub fn term(&self, model: &LocalModel, mu: f64) -> Tensor {
        let vars: HashMap<String, Tensor> = model.var_store().variables();
        let mut sum = Tensor::zeros([], (Kind::Float, model.device()));
        for (name, reference) in &self.tensors {
            if let Some(var) = vars.get(name).filter(|v| v.requires_grad()) {
                sum += (var - reference).square().sum(Kind::Float);
            }
        }
        sum * (mu / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use strata_data::DataShape;

    use super::*;

    #[test]
    fn the_term_is_zero_at_the_anchor_and_grows_with_distance() {
        let shape = DataShape { sample_shape: vec![3], num_classes: 2 };
        let mut model = LocalModel::new("mlp", &shape, Device::Cpu, 1).expect("model");
        let anchor = Anchor::new(&model.export(), Device::Cpu);
        assert_eq!(anchor.term(&model, 0.1).double_value(&[]), 0.0);
        let mut moved = model.export();
        for v in moved.values_mut_at(0).expect("a tensor") {
            *v += 1.0;
        }
        let n = moved.tensors()[0].values().len() as f64;
        model.import(&moved).expect("import");
        let term = anchor.term(&model, 0.1).double_value(&[]);
        assert!((term - 0.05 * n).abs() < 1e-4, "(0.1/2)·{n}·1² = {}, got {term}", 0.05 * n);
    }
}
