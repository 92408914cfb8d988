//! Small ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) with
//! one BasicBlock per stage, named like torchvision's (`body.layer2.0.downsample.0`, ...).
//!
//! - `resnet8` (alias `resnet`): the CIFAR-style ResNet-8: conv 3×3 → 16, BN, ReLU, stages of
//!   16/32/64 channels with strides 1/2/2, global average pool, head 64 → C. PyTorch's default
//!   initialisation throughout.
//! - `resnet8-fling`: `resnet8` of Fling (FLAIR-Community/Fling, fling/model/resnet.py), the
//!   code base of FedCAC (Wu et al., "Bold but Cautious: Unlocking the Potential of
//!   Personalized Federated Learning through Cautiously Aggressive Collaboration", ICCV 2023):
//!   torchvision's ImageNet stem (conv 7×7/2 → 64, BN, ReLU, max-pool 3/2), stages of
//!   64/128/256 channels with strides 1/2/2, head 256 → C, convolutions re-initialised with
//!   `kaiming_normal_(mode="fan_out", nonlinearity="relu")` as torchvision does.
//!
//! With [`BodyNorm::Layer`] every ReLU (the stem's, and both of each block, the second after
//! the residual sum) is followed by a layer norm; the BatchNorms stay. The features are the
//! global average of the last one, so they have zero mean per sample but not unit variance.

use tch::Tensor;
use tch::nn::{self, Module, ModuleT};

use super::Net;
use super::layers::{BodyNorm, Conv2d, ConvSpec, batch_norm2d, bn_relu, conv2d, linear};

/// Which of the two variants to build.
#[derive(Clone, Copy, Debug)]
pub enum Variant {
    Cifar,
    Fling,
}

#[derive(Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: nn::BatchNorm,
    conv2: Conv2d,
    bn2: nn::BatchNorm,
    downsample: Option<(Conv2d, nn::BatchNorm)>,
}

fn conv(in_ch: i64, out_ch: i64, kernel: i64, stride: i64) -> ConvSpec {
    ConvSpec { in_ch, out_ch, kernel, stride, padding: kernel / 2, bias: false }
}

impl BasicBlock {
    /// Built in torchvision's order: the downsample branch first (`_make_layer` creates it
    /// before the block), then conv1, bn1, conv2, bn2.
    fn new(p: &nn::Path, in_ch: i64, out_ch: i64, stride: i64) -> Self {
        let downsample = (stride != 1 || in_ch != out_ch).then(|| {
            let d = p / "downsample";
            (conv2d(&(&d / "0"), conv(in_ch, out_ch, 1, stride)), batch_norm2d(&(&d / "1"), out_ch))
        });
        let conv1 = conv2d(&(p / "conv1"), conv(in_ch, out_ch, 3, stride));
        let bn1 = batch_norm2d(&(p / "bn1"), out_ch);
        let conv2 = conv2d(&(p / "conv2"), conv(out_ch, out_ch, 3, 1));
        let bn2 = batch_norm2d(&(p / "bn2"), out_ch);
        Self { conv1, bn1, conv2, bn2, downsample }
    }

    fn forward_t(&self, xs: &Tensor, train: bool, norm: BodyNorm) -> Tensor {
        let ys = bn_relu(&self.bn1, &self.conv1.forward(xs), train, norm);
        let ys = self.bn2.forward_t(&self.conv2.forward(&ys), train);
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward_t(&conv.forward(xs), train),
            None => xs.shallow_clone(),
        };
        norm.relu(&(ys + identity))
    }

    /// Convolutions in PyTorch's `modules()` order: conv1, conv2, downsample.0.
    fn convs_mut(&mut self) -> impl Iterator<Item = &mut Conv2d> {
        [&mut self.conv1, &mut self.conv2].into_iter().chain(self.downsample.as_mut().map(|(c, _)| c))
    }
}

/// `body.conv1`, `body.bn1`, `body.layer{1,2,3}.0.*`, `head`.
#[derive(Debug)]
pub struct ResNet {
    variant: Variant,
    conv1: Conv2d,
    bn1: nn::BatchNorm,
    layers: Vec<BasicBlock>,
    head: nn::Linear,
    norm: BodyNorm,
}

impl ResNet {
    pub fn new(root: &nn::Path, channels: i64, classes: i64, variant: Variant, norm: BodyNorm) -> Self {
        let body = root / "body";
        let (stem, widths) = match variant {
            Variant::Cifar => (conv(channels, 16, 3, 1), [16, 32, 64]),
            Variant::Fling => (conv(channels, 64, 7, 2), [64, 128, 256]),
        };
        let conv1 = conv2d(&(&body / "conv1"), stem);
        let bn1 = batch_norm2d(&(&body / "bn1"), stem.out_ch);
        let mut in_ch = stem.out_ch;
        let mut layers = Vec::with_capacity(widths.len());
        for (i, &width) in widths.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            layers.push(BasicBlock::new(&(&body / format!("layer{}", i + 1) / "0"), in_ch, width, stride));
            in_ch = width;
        }
        let head = linear(&(root / "head"), in_ch, classes);
        let mut net = Self { variant, conv1, bn1, layers, head, norm };
        if let Variant::Fling = variant {
            net.reinit_convs_fan_out();
        }
        net
    }

    /// torchvision's `nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")`
    /// over the convolutions in `modules()` order, after default construction.
    fn reinit_convs_fan_out(&mut self) {
        let convs = std::iter::once(&mut self.conv1).chain(self.layers.iter_mut().flat_map(BasicBlock::convs_mut));
        for conv in convs {
            let size = conv.ws.size();
            let fan_out: i64 = size[0] * size.iter().skip(2).product::<i64>();
            let std = 2f64.sqrt() / (fan_out as f64).sqrt();
            tch::no_grad(|| {
                let _ = conv.ws.normal_(0.0, std);
            });
        }
    }
}

impl Net for ResNet {
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = bn_relu(&self.bn1, &self.conv1.forward(xs), train, self.norm);
        if let Variant::Fling = self.variant {
            ys = ys.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for block in &self.layers {
            ys = block.forward_t(&ys, train, self.norm);
        }
        ys.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    fn head(&self) -> &nn::Linear {
        &self.head
    }
}
