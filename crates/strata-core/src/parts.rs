//! The parts of a model that methods treat differently, by name: the classifier (FedPer and
//! FedRep keep it personal, CCVR retrains it) and the normalization layers (FedBN keeps them
//! local). Registered models name them `head.*` and `*.bn*`; a user's TorchScript module names
//! them as its author did, so the parts are found from the config and the model's own names.

use crate::selection::{NORM_LAYERS, Selector, glob_match};
use crate::tensor::TensorSpec;

/// The head pattern of every registered model.
pub const REGISTERED_HEAD: &str = "head.*";

/// Where the head and the normalization layers are in one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelParts {
    /// The classifier's parameters.
    pub head: Selector,
    /// The classifier's weight, `[classes, features]`, and bias, `[classes]`.
    pub head_weight: String,
    pub head_bias: String,
    /// Normalization layers: parameters and running statistics.
    pub norm: Selector,
}

/// A head pattern that does not pick out one linear layer, or a model without one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PartsError(pub String);

impl ModelParts {
    /// The parts of a registered model (`body.*`, `head.weight`, `head.bias`, `*.bn*`).
    pub fn registered() -> Self {
        Self {
            head: Selector::new([REGISTERED_HEAD]),
            head_weight: "head.weight".into(),
            head_bias: "head.bias".into(),
            norm: Selector::new(NORM_LAYERS),
        }
    }

    /// The parts of a model whose tensors are `spec` (parameters and buffers, the model's own
    /// names), with `head` the config's `model.head`. A TorchScript module's (`script`) head is
    /// `head`, which must match one weight `[c, f]` and one bias `[c]`, or, unset, the one
    /// linear layer whose output has `classes` entries; its normalization layers are the
    /// modules with a `running_mean` buffer (BatchNorm's), all of their tensors. A registered
    /// model's are fixed.
    pub fn resolve(
        head: Option<&str>,
        script: bool,
        spec: &[TensorSpec],
        classes: Option<usize>,
    ) -> Result<Self, PartsError> {
        if !script {
            return match head {
                None => Ok(Self::registered()),
                Some(p) if p == REGISTERED_HEAD => Ok(Self::registered()),
                Some(p) => Err(PartsError(format!(
                    "model.head = \"{p}\": registered models name their classifier `{REGISTERED_HEAD}`; \
                     model.head is for TorchScript modules"
                ))),
            };
        }
        let (head, weight, bias) = match head {
            Some(pattern) => {
                let (weight, bias) = linear_matching(pattern, spec)?;
                (pattern.to_string(), weight, bias)
            }
            None => {
                let (weight, bias) = find_classifier(spec, classes)?;
                (format!("{}*", weight.strip_suffix("weight").unwrap_or(&weight)), weight, bias)
            }
        };
        let norm: Vec<String> = spec
            .iter()
            .filter_map(|t| t.name.strip_suffix("running_mean"))
            .filter(|prefix| prefix.is_empty() || prefix.ends_with('.'))
            .map(|prefix| format!("{prefix}*"))
            .collect();
        Ok(Self { head: Selector::new([head]), head_weight: weight, head_bias: bias, norm: Selector::new(norm) })
    }

    /// Everything but the head: what FedPer and FedRep share.
    pub fn body(&self) -> Selector {
        Selector::all().except(self.head.patterns().iter().cloned())
    }
}

/// The weight and bias `pattern` selects, checked to be one linear layer's.
fn linear_matching(pattern: &str, spec: &[TensorSpec]) -> Result<(String, String), PartsError> {
    let matched: Vec<&TensorSpec> = spec.iter().filter(|t| glob_match(pattern, &t.name)).collect();
    let names = || matched.iter().map(|t| format!("{} {:?}", t.name, t.shape)).collect::<Vec<_>>().join(", ");
    if matched.is_empty() {
        let some: Vec<&str> = spec.iter().take(12).map(|t| t.name.as_str()).collect();
        return Err(PartsError(format!(
            "model.head = \"{pattern}\" matches none of the model's tensors (they begin {})",
            some.join(", ")
        )));
    }
    match matched[..] {
        [w, b] | [b, w] if w.shape.len() == 2 && b.shape.len() == 1 && w.shape[0] == b.shape[0] => {
            Ok((w.name.clone(), b.name.clone()))
        }
        _ => Err(PartsError(format!(
            "model.head = \"{pattern}\" must match one linear layer (a weight [classes, features] and a bias \
             [classes]); it matches {}",
            names()
        ))),
    }
}

/// The one `X.weight [c, f]` with an `X.bias [c]`, `c == classes` when known.
fn find_classifier(spec: &[TensorSpec], classes: Option<usize>) -> Result<(String, String), PartsError> {
    let candidates: Vec<(String, String)> = spec
        .iter()
        .filter(|w| w.shape.len() == 2 && classes.is_none_or(|c| w.shape[0] == c))
        .filter_map(|w| {
            let prefix = w.name.strip_suffix("weight")?;
            let bias = format!("{prefix}bias");
            spec.iter().any(|b| b.name == bias && b.shape == [w.shape[0]]).then(|| (w.name.clone(), bias))
        })
        .collect();
    let classes_text = classes.map_or(String::new(), |c| format!(" with {c} outputs"));
    match &candidates[..] {
        [one] => Ok(one.clone()),
        [] => Err(PartsError(format!(
            "the model has no linear layer{classes_text} to be its classifier (a weight [classes, features] \
             and a bias [classes]); name it with model.head"
        ))),
        many => Err(PartsError(format!(
            "the model has {} linear layers{classes_text} ({}): say which is the classifier with model.head, \
             e.g. model.head = \"{}*\"",
            many.len(),
            many.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>().join(", "),
            many[0].0.strip_suffix("weight").unwrap_or(&many[0].0)
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(items: &[(&str, &[usize])]) -> Vec<TensorSpec> {
        items.iter().map(|(n, s)| TensorSpec { name: n.to_string(), shape: s.to_vec() }).collect()
    }

    fn user_cnn() -> Vec<TensorSpec> {
        spec(&[
            ("features.0.weight", &[8, 1, 3, 3]),
            ("features.0.bias", &[8]),
            ("features.1.weight", &[8]),
            ("features.1.bias", &[8]),
            ("features.1.running_mean", &[8]),
            ("features.1.running_var", &[8]),
            ("features.1.num_batches_tracked", &[]),
            ("hidden.weight", &[32, 72]),
            ("hidden.bias", &[32]),
            ("classifier.weight", &[10, 32]),
            ("classifier.bias", &[10]),
        ])
    }

    #[test]
    fn registered_models_use_their_fixed_names() {
        let parts = ModelParts::resolve(None, false, &[], None).unwrap();
        assert_eq!(parts, ModelParts::registered());
        assert!(parts.body().matches("body.conv1.weight") && !parts.body().matches("head.bias"));
        let err = ModelParts::resolve(Some("fc.*"), false, &[], None);
        assert!(err.unwrap_err().0.contains("TorchScript"));
    }

    /// The classifier is the linear layer with an output per class; the norm layers are the
    /// modules with running statistics, all of their tensors.
    #[test]
    fn a_modules_parts_are_found_by_shape_and_buffers() {
        let parts = ModelParts::resolve(None, true, &user_cnn(), Some(10)).unwrap();
        assert_eq!((parts.head_weight.as_str(), parts.head_bias.as_str()), ("classifier.weight", "classifier.bias"));
        assert!(parts.head.matches("classifier.bias") && !parts.head.matches("hidden.bias"));
        assert!(parts.body().matches("hidden.weight") && !parts.body().matches("classifier.weight"));
        for name in ["features.1.weight", "features.1.running_var", "features.1.num_batches_tracked"] {
            assert!(parts.norm.matches(name), "{name}");
        }
        assert!(!parts.norm.matches("features.0.weight") && !parts.norm.matches("features.10.weight"));
    }

    #[test]
    fn an_ambiguous_or_missing_classifier_is_refused_with_the_candidates() {
        let err = ModelParts::resolve(None, true, &user_cnn(), None).unwrap_err().0;
        assert!(err.contains("hidden.weight, classifier.weight") && err.contains("model.head"), "{err}");
        let err = ModelParts::resolve(None, true, &user_cnn(), Some(7)).unwrap_err().0;
        assert!(err.contains("no linear layer with 7 outputs"), "{err}");
        let named = ModelParts::resolve(Some("hidden.*"), true, &user_cnn(), Some(10)).unwrap();
        assert_eq!(named.head_weight, "hidden.weight");
    }

    #[test]
    fn a_head_pattern_must_match_one_linear_layer() {
        let err = ModelParts::resolve(Some("fc.*"), true, &user_cnn(), Some(10)).unwrap_err().0;
        assert!(err.contains("matches none") && err.contains("features.0.weight"), "{err}");
        let err = ModelParts::resolve(Some("*.weight"), true, &user_cnn(), Some(10)).unwrap_err().0;
        assert!(err.contains("one linear layer") && err.contains("hidden.weight [32, 72]"), "{err}");
        let err = ModelParts::resolve(Some("features.0.*"), true, &user_cnn(), Some(10)).unwrap_err().0;
        assert!(err.contains("one linear layer"), "{err}");
    }
}
