//! One client's model: a registered [`Net`] and the VarStore holding its variables, with
//! conversion to and from [`TensorSet`], the currency of the other crates.

use std::collections::HashMap;

use strata_core::config::FeatureNorm;
use strata_core::tensor::{NamedTensor, TensorSet, TensorSpec};
use strata_data::DataShape;
use tch::{Device, Kind, Tensor, nn};

use crate::TorchError;
use crate::model::{self, BodyNorm, Net};
use crate::seed::with_seed;

/// A model ready for local training: its variables live in `vs`, `net` computes with them.
#[derive(Debug)]
pub struct LocalModel {
    name: String,
    shape: DataShape,
    feature_norm: FeatureNorm,
    vs: nn::VarStore,
    net: Box<dyn Net>,
}

impl LocalModel {
    /// Builds model `model_name` for `shape` with deterministic initial values.
    ///
    /// The variables are drawn on the CPU from torch's generator seeded with `seed` (see
    /// [`crate::seed`]), then moved to `device`, so the initial values depend on the seed
    /// only, not on the device, and match PyTorch's `torch.manual_seed(seed)` + construction.
    pub fn new(model_name: &str, shape: &DataShape, device: Device, seed: u64) -> Result<Self, TorchError> {
        Self::with_feature_norm(model_name, shape, device, seed, FeatureNorm::Off)
    }

    /// [`LocalModel::new`] with feature normalization of the classifier's input, or, for
    /// [`FeatureNorm::LayerNorm`], layer norm inside the body (same variables either way).
    pub fn with_feature_norm(
        model_name: &str,
        shape: &DataShape,
        device: Device,
        seed: u64,
        feature_norm: FeatureNorm,
    ) -> Result<Self, TorchError> {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let body_norm = match feature_norm {
            FeatureNorm::LayerNorm => BodyNorm::Layer,
            FeatureNorm::Off | FeatureNorm::Unit | FeatureNorm::SqrtD => BodyNorm::None,
        };
        let net = with_seed(seed, || model::build_with_norm(model_name, &vs.root(), shape, body_norm))?;
        if device != Device::Cpu {
            vs.set_device(device);
        }
        Ok(Self { name: model_name.to_string(), shape: shape.clone(), feature_norm, vs, net })
    }

    /// The name the model was built with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Logits: the head applied to the (optionally normalized) features.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        crate::model::layers::apply_linear(self.net.head(), &self.head_input_t(xs, train))
    }

    /// What the head sees: the penultimate features, normalized when the model says so.
    pub fn head_input_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let features = self.net.features_t(xs, train);
        match self.feature_norm {
            // The layer norm is inside the body: the features arrive normalized.
            FeatureNorm::Off | FeatureNorm::LayerNorm => features,
            norm => {
                let d = features.size().last().copied().unwrap_or(1) as f64;
                let scale = if norm == FeatureNorm::SqrtD { d.sqrt() } else { 1.0 };
                // The epsilon keeps an all-zero feature (dead ReLUs) at zero instead of NaN.
                let length = features.norm_scalaropt_dim(2, [-1i64].as_slice(), true).clamp_min(1e-12);
                features / length * scale
            }
        }
    }

    pub fn feature_norm(&self) -> FeatureNorm {
        self.feature_norm
    }

    /// The data shape the model was built for.
    pub fn shape(&self) -> DataShape {
        self.shape.clone()
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn net(&self) -> &dyn Net {
        self.net.as_ref()
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Every variable (parameters and norm-layer running statistics), sorted by name.
    fn sorted_variables(&self) -> Vec<(String, Tensor)> {
        let mut vars: Vec<_> = self.vs.variables().into_iter().collect();
        vars.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Names and shapes of every variable, sorted by name (the order of [`Self::export`]).
    pub fn spec(&self) -> Vec<TensorSpec> {
        self.sorted_variables().into_iter().map(|(name, t)| TensorSpec { name, shape: dims(&t) }).collect()
    }

    /// Copies every variable, BatchNorm running statistics included, to CPU f32 values.
    ///
    /// The order of the set is the variables' names sorted bytewise: the same for every
    /// client that builds the same model, which is what bit-packed masks rely on.
    pub fn export(&self) -> TensorSet {
        self.export_where(|_| true)
    }

    /// Copies the variables whose names `keep` accepts, as [`export`](Self::export) does, and
    /// only those: what is not uploaded never leaves the device.
    pub fn export_where(&self, keep: impl Fn(&str) -> bool) -> TensorSet {
        let tensors = tch::no_grad(|| {
            self.sorted_variables()
                .into_iter()
                .filter(|(name, _)| keep(name))
                .map(|(name, t)| {
                    let shape = dims(&t);
                    let flat = t.detach().to_kind(Kind::Float).reshape([-1]);
                    // One copy (device → host Vec). It fails only if the device itself fails.
                    let values = Vec::<f32>::try_from(&flat).expect("copying a variable to the host failed");
                    NamedTensor::new(name, shape, values).expect("a variable's values fill its shape")
                })
                .collect()
        });
        TensorSet::new(tensors).expect("variable names are unique: they are the keys of a map")
    }

    /// Overwrites the variables named in `set` (any subset), in place, so optimizers and
    /// shallow clones keep pointing at them. Every name and shape is checked before anything
    /// is written: on error the model is unchanged.
    pub fn import(&mut self, set: &TensorSet) -> Result<(), TorchError> {
        let vars: HashMap<String, Tensor> = self.vs.variables();
        let mut targets = Vec::with_capacity(set.len());
        for incoming in set.tensors() {
            let var = vars
                .get(incoming.name())
                .ok_or_else(|| TorchError::UnknownTensor { name: incoming.name().to_string() })?;
            let expected = dims(var);
            // A NamedTensor's values fill its shape, so the shape is all there is to check.
            if expected != incoming.shape() {
                return Err(TorchError::ShapeMismatch {
                    name: incoming.name().to_string(),
                    expected,
                    got: incoming.shape().to_vec(),
                });
            }
            targets.push((var, incoming));
        }
        tch::no_grad(|| {
            for (var, incoming) in targets {
                let src = Tensor::from_slice(incoming.values()).view(var.size().as_slice());
                var.shallow_clone().f_copy_(&src)?;
            }
            Ok(())
        })
    }
}

/// Shape of a tensor as `usize`s.
fn dims(t: &Tensor) -> Vec<usize> {
    t.size().into_iter().map(|d| usize::try_from(d).unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests;
