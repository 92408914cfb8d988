//! A user's PyTorch model, saved with `torch.jit.save` (scripted or traced), trained by
//! libtorch: its parameters and buffers become the VarStore's variables under the module's
//! own dotted names, so what the methods select and what the run writes are named as in the
//! user's `state_dict()`.
//!
//! The module's `forward` gives the logits. The classifier's input (CCVR, feature
//! normalization) needs a method `features(x)` the module exports (`@torch.jit.export`), with
//! `forward(x) == head(features(x))`, checked at load.

use std::path::Path;

use std::collections::HashMap;
use strata_core::parts::{ModelParts, PartsError};
use strata_data::DataShape;

use tch::{Kind, Tensor, nn};

use super::Net;
use crate::TorchError;
use crate::script_module::ScriptModule;

/// The method that gives the classifier's input, when the module exports it.
pub const FEATURES_METHOD: &str = "features";

#[derive(Debug)]
pub struct ScriptNet {
    module: ScriptModule,
    /// The classifier, sharing the module's storage: what CCVR reads and FedRep freezes.
    head: nn::Linear,
    has_features: bool,
}

impl ScriptNet {
    /// Loads `path`, moves it to `root`'s device and adds its parameters (trainable) and
    /// buffers to `root` under their own names; resolves the head with `head_pattern` (or the
    /// one linear layer with a logit per class) and checks the module maps a batch of `shape`'s
    /// samples to `[batch, classes]` logits.
    pub fn load(
        path: &Path,
        root: &nn::Path,
        shape: &DataShape,
        head_pattern: Option<&str>,
    ) -> Result<(Self, ModelParts), TorchError> {
        let module = ScriptModule::load(path)?;
        let failed = |reason: String| TorchError::Script { path: path.display().to_string(), reason };
        module.to_device(root.device())?;
        let parameters = module.parameters()?;
        let buffers = module.buffers()?;
        if parameters.is_empty() {
            return Err(failed("the module has no parameters to train".into()));
        }
        let mut spec = Vec::new();
        let mut added = HashMap::new();
        for (name, tensor, trainable) in
            parameters.into_iter().map(|(n, t)| (n, t, true)).chain(buffers.into_iter().map(|(n, t)| (n, t, false)))
        {
            if !matches!(tensor.kind(), Kind::Float | Kind::Int64) {
                return Err(failed(format!(
                    "`{name}` holds {:?} values; Strata trains float32 modules (call .float() before saving)",
                    tensor.kind()
                )));
            }
            spec.push(strata_core::tensor::TensorSpec {
                name: name.clone(),
                shape: tensor.size().iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect(),
            });
            // A VarStore name is a path of dot-free parts: `features.0.weight` is
            // `features` / `0` / `weight`.
            let mut parts: Vec<&str> = name.split('.').collect();
            let leaf = parts.pop().unwrap_or_default();
            let at = parts.into_iter().fold(root.clone(), |at, part| at / part);
            let variable = at.add(leaf, tensor, trainable);
            added.insert(name, variable);
        }
        let parts = ModelParts::resolve(head_pattern, true, &spec, Some(shape.num_classes))
            .map_err(|PartsError(reason)| failed(reason))?;
        let head = nn::Linear {
            ws: added[&parts.head_weight].shallow_clone(),
            bs: Some(added[&parts.head_bias].shallow_clone()),
        };
        let classes = head.ws.size()[0];
        if usize::try_from(classes).ok() != Some(shape.num_classes) {
            return Err(failed(format!(
                "the classifier `{}` has {classes} outputs but the data has {} classes",
                parts.head_weight, shape.num_classes
            )));
        }
        let net = Self { has_features: module.has_method(FEATURES_METHOD), module, head };
        net.probe(shape, &parts).map_err(|e| match e {
            TorchError::Model(reason) => failed(reason),
            other => other,
        })?;
        Ok((net, parts))
    }

    /// Runs two samples through the module: the logits must be `[2, classes]`, and with
    /// `features`, `forward` must be the head applied to them.
    fn probe(&self, shape: &DataShape, parts: &ModelParts) -> Result<(), TorchError> {
        let mut dims = vec![2i64];
        dims.extend(shape.sample_shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)));
        // Varied values without touching torch's generator (zeros would hide a `features`
        // that scales its input: the head's bias alone would agree).
        let numel: i64 = dims.iter().product();
        let xs = Tensor::arange(numel, (Kind::Float, self.head.ws.device())).sin().view(dims.as_slice());
        tch::no_grad(|| {
            self.module.set_train(false)?;
            let logits = self.module.call("forward", &xs)?;
            let want = [2, self.head.ws.size()[0]];
            if logits.size() != want {
                return Err(TorchError::Model(format!(
                    "`forward` maps a batch of 2 samples of shape {:?} to {:?}; Strata needs logits {want:?}",
                    shape.sample_shape,
                    logits.size()
                )));
            }
            if self.has_features {
                let features = self.module.call(FEATURES_METHOD, &xs)?;
                let through_head = features.f_linear(&self.head.ws, self.head.bs.as_ref());
                let agrees = through_head.as_ref().is_ok_and(|h| h.allclose(&logits, 1e-4, 1e-5, false));
                if !agrees {
                    return Err(TorchError::Model(format!(
                        "`forward(x)` is not `{}(features(x))`: `features` must return the classifier's input",
                        parts.head_weight.strip_suffix(".weight").unwrap_or(&parts.head_weight)
                    )));
                }
            }
            Ok(())
        })
    }

    /// Whether the module exports `features`, the classifier's input.
    pub fn has_features(&self) -> bool {
        self.has_features
    }

    fn run(&self, method: &str, xs: &Tensor, train: bool) -> Tensor {
        // Checked at load on a probe batch; a failure here is the module's own (a shape it
        // accepts only sometimes), and reports the module's message.
        self.module.set_train(train).and_then(|()| self.module.call(method, xs)).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Net for ScriptNet {
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        assert!(self.has_features, "the TorchScript module exports no `{FEATURES_METHOD}` method");
        self.run(FEATURES_METHOD, xs, train)
    }

    fn head(&self) -> &nn::Linear {
        &self.head
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.run("forward", xs, train)
    }

    fn has_features(&self) -> bool {
        self.has_features
    }

    fn is_script(&self) -> bool {
        true
    }
}
