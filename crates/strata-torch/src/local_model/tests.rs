//! Export/import round trips and seeded initialisation.

use strata_core::tensor::{NamedTensor, TensorSet};
use strata_data::DataShape;
use tch::{Device, Kind, Tensor};

use super::LocalModel;
use crate::TorchError;

fn mnist() -> DataShape {
    DataShape { sample_shape: vec![1, 28, 28], num_classes: 10 }
}

fn model(name: &str, seed: u64) -> LocalModel {
    LocalModel::new(name, &mnist(), Device::Cpu, seed).expect("model builds")
}

#[test]
fn export_is_sorted_and_complete() {
    let m = model("cnn-bn", 1);
    let set = m.export();
    let names: Vec<&str> = set.tensors().iter().map(|t| t.name()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert!(names.contains(&"body.bn1.running_mean"));
    assert_eq!(set.specs(), m.spec());
    let w = set.get("body.fc1.weight").expect("fc1");
    assert_eq!((w.shape().to_vec(), w.values().len()), (vec![512, 1024], 512 * 1024));
}

#[test]
fn same_seed_same_init_and_different_seed_different_init() {
    let a = model("cnn", 7).export();
    assert_eq!(a, model("cnn", 7).export());
    let c = model("cnn", 8).export();
    assert_ne!(a.get("head.weight"), c.get("head.weight"));
    assert_ne!(a.get("body.conv1.bias"), c.get("body.conv1.bias"));
}

#[test]
fn concurrent_builds_stay_deterministic() {
    let reference = model("mlp", 3).export();
    let handles: Vec<_> = (0..4).map(|_| std::thread::spawn(|| model("mlp", 3).export())).collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), reference);
    }
}

#[test]
fn export_import_round_trips_bit_exact() {
    let source = model("resnet8", 1);
    let mut target = model("resnet8", 2);
    let set = source.export();
    assert_ne!(set, target.export());
    target.import(&set).expect("import");
    let back = target.export();
    assert_eq!(set.len(), back.len());
    for (a, b) in set.tensors().iter().zip(back.tensors()) {
        let (a_bits, b_bits): (Vec<u32>, Vec<u32>) =
            (a.values().iter().map(|v| v.to_bits()).collect(), b.values().iter().map(|v| v.to_bits()).collect());
        assert_eq!((a.name(), a_bits), (b.name(), b_bits));
    }
}

#[test]
fn export_into_reuses_matching_buffers_and_equals_a_fresh_export() {
    let (source, other) = (model("cnn", 1), model("cnn", 2));
    let reuse = other.export_where(|name| name != "head.bias");
    let address = |set: &TensorSet, name: &str| set.get(name).map(|t| t.values().as_ptr());
    let fc1 = address(&reuse, "body.fc1.weight");
    let exported = source.export_where_into(|_| true, Some(reuse));
    assert_eq!(exported, source.export(), "the same values as a fresh export, every name included");
    assert_eq!(address(&exported, "body.fc1.weight"), fc1, "written into the buffer it was given");
    // A buffer of another size is not written into.
    let wrong = NamedTensor::new("head.bias", vec![3], vec![0.0; 3]).expect("tensor");
    let only = source.export_where_into(|n| n == "head.bias", Some(TensorSet::new(vec![wrong]).expect("set")));
    assert_eq!(only, source.export_where(|n| n == "head.bias"));
}

#[test]
fn import_takes_a_subset_in_place() {
    let mut m = model("cnn", 1);
    let before = m.export();
    let held = m.var_store().variables()["head.bias"].shallow_clone();
    let head = NamedTensor::new("head.bias", vec![10], (0..10).map(|i| i as f32).collect()).expect("tensor");
    m.import(&TensorSet::new(vec![head.clone()]).expect("set")).expect("import");
    let after = m.export();
    assert_eq!(after.get("head.bias"), Some(&head));
    assert_eq!(after.get("head.weight"), before.get("head.weight"));
    // The variable was written in place: handles taken before (optimizers) see the new values.
    assert_eq!(Vec::<f32>::try_from(&held).expect("values"), head.values());
}

#[test]
fn import_refuses_unknown_names_and_wrong_shapes_and_changes_nothing() {
    let mut m = model("cnn", 1);
    let before = m.export();
    let good = NamedTensor::new("head.bias", vec![10], vec![1.0; 10]).expect("tensor");
    let unknown = NamedTensor::new("head.gamma", vec![10], vec![0.0; 10]).expect("tensor");
    let err = m.import(&TensorSet::new(vec![good.clone(), unknown]).expect("set")).expect_err("unknown");
    assert!(matches!(&err, TorchError::UnknownTensor { name } if name == "head.gamma"), "{err}");
    assert!(err.to_string().contains("head.gamma"));

    let wrong = NamedTensor::new("head.weight", vec![512, 10], vec![0.0; 5120]).expect("tensor");
    let err = m.import(&TensorSet::new(vec![good, wrong]).expect("set")).expect_err("shape").to_string();
    assert!(err.contains("head.weight") && err.contains("[512, 10]") && err.contains("[10, 512]"), "{err}");
    assert_eq!(m.export(), before);
}

#[test]
fn local_models_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<LocalModel>();
    assert_send::<crate::ClientTensors>();
}

#[test]
fn feature_norm_scales_the_classifier_input_and_changes_no_parameter() {
    use strata_core::config::FeatureNorm;
    let shape = DataShape { sample_shape: vec![5], num_classes: 3 };
    let xs = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5, 4.0, 10.0, 0.0, -1.0, 2.0, 1.0]).view([2, 5]);
    let plain = LocalModel::new("mlp", &shape, Device::Cpu, 4).expect("model");
    let head = |m: &LocalModel, h: Tensor| h.apply(m.net().head());
    for (norm, scale) in [(FeatureNorm::Unit, 1.0), (FeatureNorm::SqrtD, 200f64.sqrt())] {
        let model = LocalModel::with_feature_norm("mlp", &shape, Device::Cpu, 4, norm).expect("model");
        assert_eq!(model.export(), plain.export(), "FN adds no parameter");
        let h = model.net().features_t(&xs, false);
        let expected = head(&model, &h / h.norm_scalaropt_dim(2, [-1i64].as_slice(), true) * scale);
        let got = model.forward_t(&xs, false);
        assert!(got.allclose(&expected, 1e-5, 1e-5, false), "{norm:?}");
    }
    // An all-zero feature stays finite.
    let zeros = Tensor::zeros([1, 5], (Kind::Float, Device::Cpu));
    let model = LocalModel::with_feature_norm("mlp", &shape, Device::Cpu, 4, FeatureNorm::Unit).expect("model");
    let out = model.forward_t(&(zeros - 1000.0), false);
    assert!(out.isfinite().all().int64_value(&[]) == 1);
}

#[test]
fn layer_norm_lives_in_the_body_and_the_head_sees_its_features_unscaled() {
    use strata_core::config::FeatureNorm;
    let plain = model("cnn", 5);
    let ln = LocalModel::with_feature_norm("cnn", &mnist(), Device::Cpu, 5, FeatureNorm::LayerNorm).expect("model");
    assert_eq!((ln.spec(), ln.export()), (plain.spec(), plain.export()), "LN adds no variable");
    let xs = crate::seed::with_seed(2, || Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu)));
    let features = ln.net().features_t(&xs, false);
    let expected = features.apply(ln.net().head());
    assert!(ln.forward_t(&xs, false).equal(&expected), "no further rescaling");
    assert!(!features.allclose(&plain.net().features_t(&xs, false), 1e-3, 1e-3, false), "the body normalizes");
}

#[test]
fn layer_norm_models_still_train() {
    use strata_core::config::FeatureNorm;
    use tch::nn::OptimizerConfig;
    let xs = crate::seed::with_seed(3, || Tensor::randn([8, 1, 16, 16], (Kind::Float, Device::Cpu)));
    let ys = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1, 2, 3]);
    let shape = DataShape { sample_shape: vec![1, 16, 16], num_classes: 4 };
    for name in ["cnn", "mlp"] {
        let m = LocalModel::with_feature_norm(name, &shape, Device::Cpu, 6, FeatureNorm::LayerNorm).expect("model");
        // The paper's lr: unit-variance features make the head's steps large, so 0.05 already oscillates.
        let mut opt = tch::nn::Sgd::default().build(m.var_store(), 0.01).expect("optimizer");
        let loss = |m: &LocalModel| m.forward_t(&xs, true).cross_entropy_for_logits(&ys);
        let before = loss(&m).double_value(&[]);
        for _ in 0..5 {
            opt.backward_step(&loss(&m));
        }
        let after = loss(&m).double_value(&[]);
        assert!(after < 0.5 * before, "{name}: loss {before} → {after}");
    }
}

/// Import reads the set through a borrowed view: the model keeps copies, so the set can be
/// reused (a client assembles its next download into it) without the model changing.
#[test]
fn import_copies_so_the_set_can_be_reused() {
    let mut m = model("cnn", 1);
    let mut set = model("cnn", 2).export();
    m.import(&set).expect("import");
    let imported = m.export();
    assert_eq!(imported, set);
    for (_, values) in set.values_mut() {
        values.fill(7.0);
    }
    drop(set);
    assert_eq!(m.export(), imported, "the model does not alias the set it imported");
}
