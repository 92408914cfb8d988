//! One client's model: a registered [`Net`] or a user's TorchScript module, and the VarStore holding its variables, with
//! conversion to and from [`TensorSet`], the currency of the other crates.

use std::collections::HashMap;

use std::path::Path;

use strata_core::config::{FeatureNorm, ModelConfig};
use strata_core::parts::ModelParts;
use strata_core::tensor::{NamedTensor, TensorSet, TensorSpec};
use strata_data::DataShape;
use tch::{Device, Kind, Tensor, nn};

use crate::TorchError;
use crate::model::script_net::ScriptNet;
use crate::model::{self, BodyNorm, Net};
use crate::seed::with_seed;

/// A model ready for local training: its variables live in `vs`, `net` computes with them.
#[derive(Debug)]
pub struct LocalModel {
    config: ModelConfig,
    parts: ModelParts,
    shape: DataShape,
    vs: nn::VarStore,
    net: Box<dyn Net>,
}

impl LocalModel {
    /// Builds the registered model `model_name` for `shape` with deterministic initial values.
    ///
    /// The variables are drawn on the CPU from torch's generator seeded with `seed` (see
    /// [`crate::seed`]), then moved to `device`, so the initial values depend on the seed
    /// only, not on the device, and match PyTorch's `torch.manual_seed(seed)` + construction.
    pub fn new(model_name: &str, shape: &DataShape, device: Device, seed: u64) -> Result<Self, TorchError> {
        Self::build(&ModelConfig::named(model_name), shape, device, seed)
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
        Self::build(&ModelConfig { feature_norm, ..ModelConfig::named(model_name) }, shape, device, seed)
    }

    /// The model `config` describes: a registered one drawn from `seed` (see [`Self::new`]), or
    /// a TorchScript module (`torchscript:PATH`) with the values it was saved with.
    pub fn build(config: &ModelConfig, shape: &DataShape, device: Device, seed: u64) -> Result<Self, TorchError> {
        let (vs, net, parts) = match config.torchscript_path() {
            Some(path) => {
                let vs = nn::VarStore::new(device);
                let (net, parts) = ScriptNet::load(Path::new(path), &vs.root(), shape, config.head.as_deref())?;
                let refuse = |what: &str| Err(TorchError::Script { path: path.to_string(), reason: what.to_string() });
                match config.feature_norm {
                    FeatureNorm::LayerNorm => {
                        return refuse(
                            "model.feature_norm = \"layer-norm\" changes a registered model's body; a module's body is its own",
                        );
                    }
                    FeatureNorm::Unit | FeatureNorm::SqrtD if !net.has_features() => {
                        return refuse(
                            "model.feature_norm needs the classifier's input: export a `features(x)` method (@torch.jit.export)",
                        );
                    }
                    _ => {}
                }
                (vs, Box::new(net) as Box<dyn Net>, parts)
            }
            None => {
                let parts = ModelParts::resolve(config.head.as_deref(), false, &[], None)
                    .map_err(|e| TorchError::Model(e.0))?;
                let mut vs = nn::VarStore::new(Device::Cpu);
                let body_norm = match config.feature_norm {
                    FeatureNorm::LayerNorm => BodyNorm::Layer,
                    FeatureNorm::Off | FeatureNorm::Unit | FeatureNorm::SqrtD => BodyNorm::None,
                };
                let net = with_seed(seed, || model::build_with_norm(&config.name, &vs.root(), shape, body_norm))?;
                if device != Device::Cpu {
                    vs.set_device(device);
                }
                (vs, net, parts)
            }
        };
        Ok(Self { config: config.clone(), parts, shape: shape.clone(), vs, net })
    }

    /// The name the model was built with.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What the model was built from: another [`Self::build`] with it gives the same model.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Where the classifier and the normalization layers are, by name.
    pub fn parts(&self) -> &ModelParts {
        &self.parts
    }

    /// Logits: the head applied to the (optionally normalized) features.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self.config.feature_norm {
            // The layer norm is inside the body: the model computes its logits as it is.
            FeatureNorm::Off | FeatureNorm::LayerNorm => self.net.forward_t(xs, train),
            FeatureNorm::Unit | FeatureNorm::SqrtD => {
                crate::model::layers::apply_linear(self.net.head(), &self.head_input_t(xs, train))
            }
        }
    }

    /// What the head sees: the penultimate features, normalized when the model says so.
    /// Panics for a TorchScript module without `features`; [`Self::has_head_input`] says.
    pub fn head_input_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let features = self.net.features_t(xs, train);
        match self.config.feature_norm {
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
        self.config.feature_norm
    }

    /// Whether [`Self::head_input_t`] can be computed: always for registered models, for a
    /// TorchScript module when it exports `features`.
    pub fn has_head_input(&self) -> bool {
        self.net.has_features()
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
        self.export_where_into(keep, None)
    }

    /// As [`export_where`](Self::export_where), copying each variable into the memory of the
    /// tensor of the same name and size in `reuse` where there is one: a big model's export
    /// then writes over pages already mapped instead of fresh ones the kernel must clear
    /// first (about 0.7 s a gigabyte here). What `reuse` holds otherwise is dropped.
    pub fn export_where_into(&self, keep: impl Fn(&str) -> bool, reuse: Option<TensorSet>) -> TensorSet {
        let mut buffers: HashMap<String, Vec<f32>> = reuse
            .map(|set| set.into_tensors().into_iter().map(|t| t.into_parts()).map(|(n, _, v)| (n, v)).collect())
            .unwrap_or_default();
        let tensors = tch::no_grad(|| {
            self.sorted_variables()
                .into_iter()
                .filter(|(name, _)| keep(name))
                .map(|(name, t)| {
                    let shape = dims(&t);
                    let flat = t.detach().to_kind(Kind::Float).reshape([-1]);
                    let numel = shape.iter().product::<usize>();
                    // One copy (device → host). It fails only if the device itself fails.
                    let mut values = match buffers.remove(&name).filter(|b| b.len() == numel) {
                        Some(values) => values,
                        None => strata_core::huge_pages::zeroed(numel),
                    };
                    flat.copy_data(&mut values, numel);
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
                let values = incoming.values();
                let src = borrowed_view(values, &var.size());
                var.shallow_clone().f_copy_(&src)?;
                // The view borrows `values`: it goes before they can.
                drop(src);
            }
            Ok(())
        })
    }
}

/// A CPU tensor over `values` without copying them, shaped `size`: importing a model then
/// copies each value once, into its variable, instead of first into fresh memory that the
/// kernel must clear page by page (a gigabyte's worth a round for a 1 GiB model). The caller
/// drops the tensor before `values` can change or go.
#[allow(unsafe_code)]
fn borrowed_view(values: &[f32], size: &[i64]) -> Tensor {
    let strides = contiguous_strides(size);
    // SAFETY: `values` holds exactly the elements `size` describes (the caller checked the
    // shape), contiguous with `strides`, as f32, on the CPU; libtorch reads them through the
    // view, which does not own them and which the caller drops while `values` is borrowed.
    unsafe { Tensor::from_blob(values.as_ptr().cast::<u8>(), size, &strides, Kind::Float, Device::Cpu) }
}

/// Row-major strides, in elements, of a contiguous tensor of shape `size`.
fn contiguous_strides(size: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * size[i + 1].max(1);
    }
    strides
}

/// Shape of a tensor as `usize`s.
fn dims(t: &Tensor) -> Vec<usize> {
    t.size().into_iter().map(|d| usize::try_from(d).unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests;
