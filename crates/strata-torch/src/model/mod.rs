//! Models by name. Every model puts its feature extractor under `body.` and its last linear
//! layer under `head.` (`head.weight`, `head.bias`), so a config selects parts with globs
//! such as `head.*` or `*.bn*`.
//!
//! | name | input | reference |
//! |---|---|---|
//! | `cnn` | C×H×W images (H, W ≥ 16) | PFLlib's FedAvgCNN ([`cnn`]) |
//! | `cnn-bn` | C×H×W images (H, W ≥ 16) | FedAvgCNN with BatchNorm2d, for FedBN ([`cnn`]) |
//! | `mlp` | anything, flattened | FedAvg's 2NN ([`mlp`]) |
//! | `resnet8` (alias `resnet`) | C×H×W images | CIFAR-style ResNet-8, 16/32/64 ([`resnet`]) |
//! | `resnet8-fling` | C×H×W images | Fling's (FedCAC's) ResNet-8, 64/128/256 ([`resnet`]) |
//!
//! Besides these, `torchscript:PATH` is a user's module saved by PyTorch ([`script_net`]),
//! named as its author named it; `LocalModel::build` loads it.

pub mod cnn;
pub(crate) mod layers;
pub mod mlp;
mod net;
pub mod resnet;
pub mod script_net;

pub use layers::BodyNorm;
pub use net::Net;

use strata_data::DataShape;
use tch::nn;

use crate::TorchError;

/// Canonical names of the registered models (aliases such as `resnet` are accepted by [`build`] too).
pub fn names() -> &'static [&'static str] {
    &["cnn", "cnn-bn", "mlp", "mlp-wide", "resnet8", "resnet8-fling"]
}

/// Builds model `name` under `root` for samples of `shape`, creating its variables in the
/// order PyTorch would (so torch's global generator is drawn as in PyTorch). Draws happen
/// here: call it inside [`crate::seed::with_seed`] (as `LocalModel::new` does).
pub fn build(name: &str, root: &nn::Path, shape: &DataShape) -> Result<Box<dyn Net>, TorchError> {
    build_with_norm(name, root, shape, BodyNorm::None)
}

/// [`build`] with `norm` after each ReLU of the body. `norm` has no variables, so the names,
/// shapes and seeded initial values are those of the plain model.
pub fn build_with_norm(
    name: &str,
    root: &nn::Path,
    shape: &DataShape,
    norm: BodyNorm,
) -> Result<Box<dyn Net>, TorchError> {
    let unsupported = |reason: &str| TorchError::UnsupportedShape {
        model: name.to_string(),
        shape: shape.sample_shape.clone(),
        classes: shape.num_classes,
        reason: reason.to_string(),
    };
    if shape.num_classes < 2 {
        return Err(unsupported("a classifier needs at least 2 classes"));
    }
    if shape.sample_len() == 0 {
        return Err(unsupported("samples must have at least one value"));
    }
    let classes = to_i64(shape.num_classes);
    let image = || match shape.sample_shape[..] {
        [c, h, w] => Ok((to_i64(c), h, w)),
        _ => Err(unsupported("expected images of shape [channels, height, width]")),
    };
    let net: Box<dyn Net> = match name {
        "cnn" | "cnn-bn" => {
            let (channels, h, w) = image()?;
            let (Some(h), Some(w)) = (cnn::output_side(h), cnn::output_side(w)) else {
                return Err(unsupported("FedAvgCNN needs height and width of at least 16"));
            };
            let flat = to_i64(64 * h * w);
            Box::new(cnn::FedAvgCnn::new(root, channels, flat, classes, name == "cnn-bn", norm))
        }
        "mlp" => Box::new(mlp::Mlp::new(root, to_i64(shape.sample_len()), classes, norm)),
        "mlp-wide" => Box::new(mlp::Mlp::with_width(root, to_i64(shape.sample_len()), mlp::WIDE_HIDDEN, classes, norm)),
        "resnet8" | "resnet" => Box::new(resnet::ResNet::new(root, image()?.0, classes, resnet::Variant::Cifar, norm)),
        "resnet8-fling" => Box::new(resnet::ResNet::new(root, image()?.0, classes, resnet::Variant::Fling, norm)),
        _ => {
            return Err(TorchError::UnknownModel {
                name: name.to_string(),
                known: format!("{} (or the alias resnet)", names().join(", ")),
            });
        }
    };
    Ok(net)
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
