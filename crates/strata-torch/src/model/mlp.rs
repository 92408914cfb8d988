//! `mlp`: the "2NN" of McMahan et al., "Communication-Efficient Learning of Deep Networks
//! from Decentralized Data" (AISTATS 2017, arXiv:1602.05629): two hidden layers of 200 units
//! with ReLU. Images are flattened, so it takes any sample shape. With [`BodyNorm::Layer`]
//! both ReLUs are followed by a layer norm over the 200 features.

use tch::Tensor;
use tch::nn;

use super::Net;
use super::layers::{BodyNorm, apply_linear, linear};

const HIDDEN: i64 = 200;

/// `mlp-wide`'s hidden width: 16384² weights make about 1.07 GB of f32 parameters, the
/// model the server's memory is measured with (scripts/large-model.sh), not one to train for accuracy.
pub const WIDE_HIDDEN: i64 = 16384;

/// D → 200 → 200 → C; `body.fc1`, `body.fc2`, `head`.
#[derive(Debug)]
pub struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
    head: nn::Linear,
    norm: BodyNorm,
}

impl Mlp {
    pub fn new(root: &nn::Path, input_len: i64, classes: i64, norm: BodyNorm) -> Self {
        Self::with_width(root, input_len, HIDDEN, classes, norm)
    }

    /// D → `hidden` → `hidden` → C.
    pub fn with_width(root: &nn::Path, input_len: i64, hidden: i64, classes: i64, norm: BodyNorm) -> Self {
        let body = root / "body";
        let fc1 = linear(&(&body / "fc1"), input_len, hidden);
        let fc2 = linear(&(&body / "fc2"), hidden, hidden);
        let head = linear(&(root / "head"), hidden, classes);
        Self { fc1, fc2, head, norm }
    }
}

impl Net for Mlp {
    fn features_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let xs = xs.flatten(1, -1);
        let hidden = self.norm.relu(&apply_linear(&self.fc1, &xs));
        self.norm.relu(&apply_linear(&self.fc2, &hidden))
    }

    fn head(&self) -> &nn::Linear {
        &self.head
    }
}
