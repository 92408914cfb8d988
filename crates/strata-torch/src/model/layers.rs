//! Layers initialised exactly as PyTorch's `nn.Linear`, `nn.Conv2d` and `nn.BatchNorm2d` are.
//!
//! tch's own `nn::linear` / `nn::conv2d` do NOT follow PyTorch's defaults: their weights are
//! Kaiming-uniform with the ReLU gain (bound √6/√fan_in, PyTorch's is 1/√fan_in), conv biases
//! start at zero (PyTorch: uniform ±1/√fan_in), `nn::linear` draws its bias before its weight,
//! and `nn::batch_norm2d` draws its scale from U(0, 1) (PyTorch: ones). So the layers here
//! create their variables themselves, following `reset_parameters` in torch/nn/modules/
//! {linear,conv,batchnorm}.py: weight `kaiming_uniform_(a=√5)`, then bias U(±1/√fan_in), drawn
//! in that order from torch's global generator. Under the same `manual_seed`, a model built
//! here in PyTorch's construction order starts from the same values as its PyTorch twin.

use tch::Tensor;

use crate::per_sample::{self, Layer};
use tch::nn::{self, Init, Module, ModuleT};

/// PyTorch's `kaiming_uniform_(w, a=math.sqrt(5))`, computed with PyTorch's formula
/// (gain = √(2/(1+a²)), std = gain/√fan, bound = √3·std) so the bound is the same double.
fn kaiming_uniform_a_sqrt5() -> Init {
    let a = 5f64.sqrt();
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    Init::Kaiming {
        dist: nn::init::NormalOrUniform::Uniform,
        fan: nn::init::FanInOut::FanIn,
        non_linearity: nn::init::NonLinearity::ExplicitGain(gain),
    }
}

/// PyTorch's default bias init: U(±1/√fan_in).
fn bias_init(fan_in: i64) -> Init {
    let bound = if fan_in > 0 { 1.0 / (fan_in as f64).sqrt() } else { 0.0 };
    Init::Uniform { lo: -bound, up: bound }
}

/// `nn.Linear(in_dim, out_dim)`: variables `weight` `[out, in]` and `bias` `[out]`.
pub fn linear(p: &nn::Path, in_dim: i64, out_dim: i64) -> nn::Linear {
    let ws = p.var("weight", &[out_dim, in_dim], kaiming_uniform_a_sqrt5());
    let bs = p.var("bias", &[out_dim], bias_init(in_dim));
    nn::Linear { ws, bs: Some(bs) }
}

/// `nn.Conv2d` with square kernel, stride and padding (no dilation, no groups).
#[derive(Debug)]
pub struct Conv2d {
    pub ws: Tensor,
    pub bs: Option<Tensor>,
    stride: i64,
    padding: i64,
}

/// Shape of a 2-D convolution's settings.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub in_ch: i64,
    pub out_ch: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
    pub bias: bool,
}

/// `nn.Conv2d(...)`: variables `weight` `[out, in, k, k]` and, if `bias`, `bias` `[out]`.
pub fn conv2d(p: &nn::Path, s: ConvSpec) -> Conv2d {
    let ws = p.var("weight", &[s.out_ch, s.in_ch, s.kernel, s.kernel], kaiming_uniform_a_sqrt5());
    let bs = s.bias.then(|| p.var("bias", &[s.out_ch], bias_init(s.in_ch * s.kernel * s.kernel)));
    Conv2d { ws, bs, stride: s.stride, padding: s.padding }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let ys = xs.conv2d(&self.ws, self.bs.as_ref(), [self.stride], [self.padding], [1], 1);
        let size = self.ws.size();
        let layer = Layer::Conv2d { kernel: [size[2], size[3]], stride: self.stride, padding: self.padding };
        per_sample::record(layer, xs, &ys, &self.ws, self.bs.as_ref());
        ys
    }
}

/// A linear layer applied, noted for per-sample gradients (DP-SGD) when they are recorded.
pub fn apply_linear(layer: &nn::Linear, xs: &Tensor) -> Tensor {
    let ys = xs.apply(layer);
    per_sample::record(Layer::Linear, xs, &ys, &layer.ws, layer.bs.as_ref());
    ys
}

/// `nn.BatchNorm2d(channels)`: `weight` (ones), `bias` (zeros), `running_mean` (zeros) and
/// `running_var` (ones); eps 1e-5, momentum 0.1. PyTorch's `num_batches_tracked` counter is
/// left out: it only matters with `momentum=None`.
pub fn batch_norm2d(p: &nn::Path, channels: i64) -> nn::BatchNorm {
    let config = nn::BatchNormConfig { ws_init: Init::Const(1.0), bs_init: Init::Const(0.0), ..Default::default() };
    nn::batch_norm2d(p, channels, config)
}

/// Applies a `ModuleT` (batch norm) and then ReLU, followed by `norm`.
pub fn bn_relu(bn: &nn::BatchNorm, xs: &Tensor, train: bool, norm: BodyNorm) -> Tensor {
    norm.relu(&bn.forward_t(xs, train))
}

/// A parameter-free normalization a body applies after each of its ReLUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyNorm {
    /// The model as published.
    #[default]
    None,
    /// Layer norm without affine parameters, after the activation (the LN variant of Zhang et
    /// al., arXiv:2308.09565): GroupNorm with one group over each sample's C×H×W, or over its
    /// features for a linear layer.
    Layer,
}

impl BodyNorm {
    /// ReLU, then the normalization.
    pub fn relu(self, xs: &Tensor) -> Tensor {
        let ys = xs.relu();
        match self {
            BodyNorm::None => ys,
            // No variables: the model's names and shapes, which the wire protocol goes by, stay
            // those of the plain model. eps is PyTorch's default for nn.GroupNorm.
            BodyNorm::Layer => ys.group_norm(1, None::<Tensor>, None::<Tensor>, 1e-5, false),
        }
    }
}
