//! `cnn` and `cnn-bn`: PFLlib's `FedAvgCNN` (system/flcore/trainmodel/models.py in
//! TsingZ0/PFLlib), the CNN of McMahan et al. (AISTATS 2017) as PFLlib builds it:
//! conv 5×5 → 32, ReLU, max-pool 2, conv 5×5 → 64, ReLU, max-pool 2, fc → 512, ReLU, fc → C.
//! No padding, so 1×28×28 gives 1024 features into fc1 and 3×32×32 gives 1600.
//!
//! `cnn-bn` puts a BatchNorm2d after each convolution (before the ReLU), for FedBN
//! (Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
//! Normalization", ICLR 2021).
//!
//! With [`BodyNorm::Layer`] each ReLU (the three of the body) is followed by a layer norm,
//! before the pooling, as in the authors' CNN (`feature_norm_after_activation`).

use tch::Tensor;
use tch::nn::{self, Module, ModuleT};

use super::Net;
use super::layers::{BodyNorm, Conv2d, ConvSpec, apply_linear, batch_norm2d, conv2d, linear};

/// `body.conv1`, `body.bn1` (cnn-bn), `body.conv2`, `body.bn2` (cnn-bn), `body.fc1`, `head`.
#[derive(Debug)]
pub struct FedAvgCnn {
    conv1: Conv2d,
    bn1: Option<nn::BatchNorm>,
    conv2: Conv2d,
    bn2: Option<nn::BatchNorm>,
    fc1: nn::Linear,
    head: nn::Linear,
    norm: BodyNorm,
}

/// Side of the feature map after the two conv+pool stages, if any is left.
pub fn output_side(side: usize) -> Option<usize> {
    let stage = |s: usize| s.checked_sub(4).map(|s| s / 2).filter(|&s| s > 0);
    stage(side).and_then(stage)
}

impl FedAvgCnn {
    /// `flat` is 64 × (side after the two stages)², checked by the registry.
    pub fn new(root: &nn::Path, channels: i64, flat: i64, classes: i64, batch_norm: bool, norm: BodyNorm) -> Self {
        let body = root / "body";
        let conv = |in_ch, out_ch| ConvSpec { in_ch, out_ch, kernel: 5, stride: 1, padding: 0, bias: true };
        // PyTorch construction order: conv1, bn1, conv2, bn2, fc1, fc (norm layers draw nothing).
        let conv1 = conv2d(&(&body / "conv1"), conv(channels, 32));
        let bn1 = batch_norm.then(|| batch_norm2d(&(&body / "bn1"), 32));
        let conv2 = conv2d(&(&body / "conv2"), conv(32, 64));
        let bn2 = batch_norm.then(|| batch_norm2d(&(&body / "bn2"), 64));
        let fc1 = linear(&(&body / "fc1"), flat, 512);
        let head = linear(&(root / "head"), 512, classes);
        Self { conv1, bn1, conv2, bn2, fc1, head, norm }
    }
}

fn stage(conv: &Conv2d, bn: Option<&nn::BatchNorm>, norm: BodyNorm, xs: &Tensor, train: bool) -> Tensor {
    let ys = conv.forward(xs);
    let ys = match bn {
        Some(bn) => bn.forward_t(&ys, train),
        None => ys,
    };
    norm.relu(&ys).max_pool2d_default(2)
}

impl Net for FedAvgCnn {
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = stage(&self.conv1, self.bn1.as_ref(), self.norm, xs, train);
        let ys = stage(&self.conv2, self.bn2.as_ref(), self.norm, &ys, train);
        self.norm.relu(&apply_linear(&self.fc1, &ys.flatten(1, -1)))
    }

    fn head(&self) -> &nn::Linear {
        &self.head
    }
}
