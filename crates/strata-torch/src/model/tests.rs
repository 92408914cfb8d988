//! Snapshots of every registered model's variables, and the registry's refusals.

use strata_data::DataShape;
use tch::{Device, Kind, Tensor, nn};

use super::{BodyNorm, Net, build, build_with_norm, names};

fn shape(sample_shape: &[usize], num_classes: usize) -> DataShape {
    DataShape { sample_shape: sample_shape.to_vec(), num_classes }
}

/// Variable names and shapes, sorted by name.
type Vars = Vec<(String, Vec<i64>)>;

/// Builds `name` and returns its variables and the net.
fn built(name: &str, s: &DataShape) -> (Vars, Box<dyn Net>) {
    // Tests run in parallel and other tests' seeded builds must not see these draws.
    let vs = nn::VarStore::new(Device::Cpu);
    let net = crate::seed::with_seed(0, || build(name, &vs.root(), s)).expect("model builds");
    let mut vars: Vec<_> = vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
    vars.sort();
    (vars, net)
}

fn snapshot(vars: &[(String, Vec<i64>)]) -> String {
    vars.iter().map(|(n, s)| format!("{n} {s:?}\n")).collect()
}

/// Checks output shapes and that forward = head(features).
fn check_forward(net: &dyn Net, s: &DataShape, features: i64) {
    let mut dims = vec![3i64];
    dims.extend(s.sample_shape.iter().map(|&d| d as i64));
    let xs = crate::seed::with_seed(0, || Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu)));
    let f = net.features_t(&xs, false);
    assert_eq!(f.size(), [3, features]);
    let logits = net.forward_t(&xs, false);
    assert_eq!(logits.size(), [3, s.num_classes as i64]);
    let via_head = tch::nn::Module::forward(net.head(), &f);
    assert!(logits.allclose(&via_head, 0.0, 0.0, false));
    // Train mode runs too (batch statistics).
    assert_eq!(net.forward_t(&xs, true).size(), [3, s.num_classes as i64]);
}

#[test]
fn cnn_matches_fedavgcnn() {
    let s = shape(&[1, 28, 28], 10);
    let (vars, net) = built("cnn", &s);
    assert_eq!(
        snapshot(&vars),
        "body.conv1.bias [32]\nbody.conv1.weight [32, 1, 5, 5]\n\
         body.conv2.bias [64]\nbody.conv2.weight [64, 32, 5, 5]\n\
         body.fc1.bias [512]\nbody.fc1.weight [512, 1024]\n\
         head.bias [10]\nhead.weight [10, 512]\n"
    );
    check_forward(net.as_ref(), &s, 512);
    let (vars, _) = built("cnn", &shape(&[3, 32, 32], 10));
    assert!(vars.contains(&("body.fc1.weight".into(), vec![512, 1600])));
    assert!(vars.contains(&("body.conv1.weight".into(), vec![32, 3, 5, 5])));
}

#[test]
fn cnn_bn_adds_norm_layers() {
    let s = shape(&[3, 32, 32], 10);
    let (vars, net) = built("cnn-bn", &s);
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    for n in ["body.bn1.weight", "body.bn1.bias", "body.bn1.running_mean", "body.bn1.running_var", "body.bn2.weight"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(vars.len(), 8 + 8);
    check_forward(net.as_ref(), &s, 512);
}

#[test]
fn mlp_is_the_2nn() {
    let s = shape(&[60], 10);
    let (vars, net) = built("mlp", &s);
    assert_eq!(
        snapshot(&vars),
        "body.fc1.bias [200]\nbody.fc1.weight [200, 60]\nbody.fc2.bias [200]\nbody.fc2.weight [200, 200]\n\
         head.bias [10]\nhead.weight [10, 200]\n"
    );
    check_forward(net.as_ref(), &s, 200);
    let img = shape(&[1, 28, 28], 10);
    let (vars, net) = built("mlp", &img);
    assert!(vars.contains(&("body.fc1.weight".into(), vec![200, 784])));
    check_forward(net.as_ref(), &img, 200);
}

#[test]
fn resnet8_follows_torchvision_names() {
    let s = shape(&[3, 32, 32], 10);
    let (vars, net) = built("resnet8", &s);
    let snap = snapshot(&vars);
    for line in [
        "body.conv1.weight [16, 3, 3, 3]\n",
        "body.bn1.running_var [16]\n",
        "body.layer1.0.conv1.weight [16, 16, 3, 3]\n",
        "body.layer1.0.bn2.bias [16]\n",
        "body.layer2.0.conv1.weight [32, 16, 3, 3]\n",
        "body.layer2.0.downsample.0.weight [32, 16, 1, 1]\n",
        "body.layer2.0.downsample.1.running_mean [32]\n",
        "body.layer3.0.conv2.weight [64, 64, 3, 3]\n",
        "head.weight [10, 64]\n",
        "head.bias [10]\n",
    ] {
        assert!(snap.contains(line), "{line} missing from\n{snap}");
    }
    assert!(!snap.contains("layer1.0.downsample"), "{snap}");
    assert!(!snap.contains("conv1.bias"), "{snap}");
    // stem conv+bn (1+4), 3 blocks × (2 convs + 2 bns = 10), 2 downsamples × 5, head 2.
    assert_eq!(vars.len(), 5 + 30 + 10 + 2);
    check_forward(net.as_ref(), &s, 64);
    let (alias, _) = built("resnet", &s);
    assert_eq!(alias, vars);
}

#[test]
fn resnet8_fling_has_the_imagenet_stem() {
    let s = shape(&[3, 32, 32], 10);
    let (vars, net) = built("resnet8-fling", &s);
    let snap = snapshot(&vars);
    assert!(snap.contains("body.conv1.weight [64, 3, 7, 7]\n"), "{snap}");
    assert!(snap.contains("body.layer3.0.downsample.0.weight [256, 128, 1, 1]\n"), "{snap}");
    assert!(snap.contains("head.weight [10, 256]\n"), "{snap}");
    check_forward(net.as_ref(), &s, 256);
}

/// The models below skip `mlp-wide` (mlp's code with another width): 1 GB of weights apiece.
fn small_models() -> impl Iterator<Item = &'static str> {
    names().iter().copied().filter(|&n| n != "mlp-wide")
}

#[test]
fn mlp_wide_holds_a_gigabyte_of_parameters() {
    let (vars, _) = built("mlp-wide", &shape(&[60], 10));
    let numel: i64 = vars.iter().map(|(_, shape)| shape.iter().product::<i64>()).sum();
    let h = super::mlp::WIDE_HIDDEN;
    assert_eq!(numel, 60 * h + h + h * h + h + h * 10 + 10);
    assert!(numel * 4 > 1_000_000_000, "{} bytes", numel * 4);
}

#[test]
fn every_registered_model_builds_for_its_shapes() {
    for name in small_models() {
        let shapes: &[DataShape] = match name {
            "mlp" => &[shape(&[60], 10), shape(&[1, 28, 28], 10), shape(&[3, 32, 32], 10)],
            _ => &[shape(&[1, 28, 28], 10), shape(&[3, 32, 32], 10)],
        };
        for s in shapes {
            let (vars, _) = built(name, s);
            assert!(vars.iter().any(|(n, _)| n == "head.weight"), "{name}");
            assert!(vars.iter().all(|(n, _)| n.starts_with("body.") || n.starts_with("head.")), "{name}");
        }
    }
}

#[test]
fn registry_refuses_unknown_names_and_unfit_shapes() {
    let vs = nn::VarStore::new(Device::Cpu);
    let err = build("vgg", &vs.root(), &shape(&[1, 28, 28], 10)).expect_err("unknown").to_string();
    assert!(err.contains("unknown model `vgg`") && err.contains("cnn-bn"), "{err}");
    let err = build("cnn", &vs.root(), &shape(&[60], 10)).expect_err("vector").to_string();
    assert!(err.contains("[channels, height, width]"), "{err}");
    let err = build("cnn", &vs.root(), &shape(&[1, 12, 12], 10)).expect_err("small").to_string();
    assert!(err.contains("at least 16"), "{err}");
    assert!(build("mlp", &vs.root(), &shape(&[60], 1)).is_err());
}

#[test]
fn initial_values_follow_pytorch_defaults() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = crate::seed::with_seed(0, || build("cnn-bn", &vs.root(), &shape(&[1, 28, 28], 10))).expect("builds");
    let vars = vs.variables();
    let max_abs = |n: &str| vars[n].abs().max().double_value(&[]);
    // kaiming_uniform(a=√5) and bias init are both U(±1/√fan_in).
    let fc1 = 1.0 / 1024f64.sqrt();
    assert!(max_abs("body.fc1.weight") <= fc1 && max_abs("body.fc1.weight") > 0.9 * fc1);
    assert!(max_abs("body.fc1.bias") <= fc1 && max_abs("body.fc1.bias") > 0.5 * fc1);
    let conv2 = 1.0 / (32.0 * 25.0f64).sqrt();
    assert!(max_abs("body.conv2.weight") <= conv2 && max_abs("body.conv2.weight") > 0.9 * conv2);
    assert!(max_abs("body.conv2.bias") <= conv2 && max_abs("body.conv2.bias") > 0.0);
    let ones = |n: &str| vars[n].eq(1.0).all().int64_value(&[]) == 1;
    assert!(ones("body.bn1.weight") && ones("body.bn1.running_var"));
    assert_eq!(max_abs("body.bn1.bias") + max_abs("body.bn1.running_mean"), 0.0);
}

/// Builds `name` with `norm` under seed 0; its variables by name and the net.
fn built_with_norm(name: &str, s: &DataShape, norm: BodyNorm) -> (Vec<(String, Tensor)>, Box<dyn Net>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = crate::seed::with_seed(0, || build_with_norm(name, &vs.root(), s, norm)).expect("model builds");
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    (vars, net)
}

#[test]
fn layer_norm_changes_no_name_shape_or_initial_value() {
    for name in small_models() {
        let s = if name == "mlp" { shape(&[60], 10) } else { shape(&[3, 32, 32], 10) };
        let (plain, _) = built_with_norm(name, &s, BodyNorm::None);
        let (normed, _) = built_with_norm(name, &s, BodyNorm::Layer);
        assert_eq!(plain.len(), normed.len(), "{name}");
        for ((pn, pt), (ln, lt)) in plain.iter().zip(&normed) {
            assert_eq!((pn, pt.size()), (ln, lt.size()), "{name}");
            assert!(pt.equal(lt), "{name}: {pn} starts elsewhere");
        }
    }
}

/// Per-sample mean and biased variance of `features_t` on a random batch of 6.
fn feature_moments(net: &dyn Net, s: &DataShape, train: bool) -> (Tensor, Tensor) {
    let mut dims = vec![6i64];
    dims.extend(s.sample_shape.iter().map(|&d| d as i64));
    let xs = crate::seed::with_seed(1, || Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu)));
    let f = net.features_t(&xs, train);
    let dim = [-1i64];
    (f.mean_dim(dim.as_slice(), false, Kind::Float), f.var_dim(dim.as_slice(), false, false))
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn layer_norm_standardizes_each_samples_penultimate_features() {
    for (name, s) in
        [("cnn", shape(&[1, 28, 28], 10)), ("cnn-bn", shape(&[3, 32, 32], 10)), ("mlp", shape(&[1, 28, 28], 10))]
    {
        let (_, net) = built_with_norm(name, &s, BodyNorm::Layer);
        for train in [false, true] {
            let (mean, var) = feature_moments(net.as_ref(), &s, train);
            assert!(max_abs(&mean) < 1e-4, "{name}: means {mean}");
            // eps = 1e-5 against variances of order 0.1 leaves var / (var + eps) ≈ 1 − 1e-4.
            assert!(max_abs(&(var - 1.0)) < 1e-3, "{name}");
        }
        let (_, plain) = built_with_norm(name, &s, BodyNorm::None);
        let (mean, _) = feature_moments(plain.as_ref(), &s, false);
        assert!(mean.min().double_value(&[]) > 0.0, "{name}: ReLU features without LN are positive on average");
    }
    // ResNets average the last normalized map over space: zero mean per sample, not unit variance.
    for name in ["resnet8", "resnet8-fling"] {
        let s = shape(&[3, 32, 32], 10);
        let (_, net) = built_with_norm(name, &s, BodyNorm::Layer);
        let (mean, _) = feature_moments(net.as_ref(), &s, true);
        assert!(max_abs(&mean) < 1e-4, "{name}: means {mean}");
    }
}
