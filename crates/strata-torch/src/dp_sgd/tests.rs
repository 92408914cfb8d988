//! DP-SGD against a batch-of-one reference computed apart, in f64.

use strata_core::config::TrainConfig;
use strata_data::partition::ClientShare;
use tch::Device;

use super::{DpSgd, PerSample, train_private, train_private_with};
use crate::test_data::blobs;
use crate::{ClientTensors, LocalModel, train_local};

const SEED: u64 = 11;

fn setup(n: usize) -> (LocalModel, ClientTensors) {
    let data = blobs(n + 10, 5);
    let share = ClientShare { train: (0..n).collect(), test: (n..n + 10).collect() };
    let tensors = ClientTensors::from_share(&data, &share, Device::Cpu).expect("tensors");
    (LocalModel::new("mlp", &data.shape, Device::Cpu, SEED).expect("model"), tensors)
}

/// Each sample's gradient on its own (a fresh model, one sample, one backward), flattened by
/// variable in the model's export order.
fn per_sample_gradients(data: &ClientTensors, n: usize) -> Vec<Vec<Vec<f64>>> {
    (0..n as i64)
        .map(|i| {
            let (model, _) = setup(n);
            let loss = model
                .forward_t(&data.train_x.narrow(0, i, 1), true)
                .cross_entropy_for_logits(&data.train_y.narrow(0, i, 1));
            loss.backward();
            let mut vars: Vec<_> = model.var_store().variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            vars.iter()
                .map(|(_, v)| {
                    Vec::<f32>::try_from(v.grad().flatten(0, -1)).expect("grad").into_iter().map(f64::from).collect()
                })
                .collect()
        })
        .collect()
}

/// One step over every sample (q = 1, no noise): the parameters move by −lr times the mean of
/// the gradients, each clipped to C·min(1, C/(‖g‖ + 1e-6)) over all variables together.
#[test]
fn a_step_clips_each_samples_gradient_as_a_batch_of_one_loop_does() {
    let n = 12;
    let (mut model, data) = setup(n);
    let before = model.export();
    let grads = per_sample_gradients(&data, n);
    let norms: Vec<f64> = grads.iter().map(|g| g.iter().flatten().map(|x| x * x).sum::<f64>().sqrt()).collect();
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    // A bound between the smallest and largest norm: some samples are clipped, some not.
    let bound = sorted[n / 2];
    assert!(sorted[0] < bound && bound < sorted[n - 1], "{sorted:?}");
    let lr = 0.1;
    let cfg = TrainConfig { lr, batch_size: n, local_epochs: 1, local_steps: None, momentum: 0.0, weight_decay: 0.0 };
    let stats = train_private(&mut model, &data, &cfg, DpSgd { noise_multiplier: 0.0, clipping_norm: bound }, None)
        .expect("train");
    let private = stats.private.expect("private steps");
    assert_eq!((private.sampling_rate, private.steps, stats.samples), (1.0, 1, n as u64));
    let after = model.export();
    for (v, (b, a)) in before.tensors().iter().zip(after.tensors()).enumerate() {
        for (k, (&b, &a)) in b.values().iter().zip(a.values()).enumerate() {
            let mean: f64 =
                grads.iter().zip(&norms).map(|(g, &norm)| g[v][k] * (bound / (norm + 1e-6)).min(1.0)).sum::<f64>()
                    / n as f64;
            let expected = f64::from(b) - lr * mean;
            assert!((f64::from(a) - expected).abs() < 1e-5, "{}[{k}]: {a} vs {expected}", b_name(&before, v));
        }
    }
}

fn b_name(set: &strata_core::tensor::TensorSet, v: usize) -> &str {
    set.tensors()[v].name()
}

/// With no clipping in effect and no noise, a private step over every sample is plain SGD
/// on the full batch; with noise, the step moves each parameter by about lr·zC/n more.
#[test]
fn without_clipping_or_noise_it_is_sgd_and_noise_has_its_scale() {
    let n = 20;
    let cfg =
        TrainConfig { lr: 0.1, batch_size: n, local_epochs: 1, local_steps: None, momentum: 0.0, weight_decay: 0.0 };
    let (mut plain, data) = setup(n);
    train_local(&mut plain, &data, &cfg, 1).expect("train");
    let (mut private, _) = setup(n);
    train_private(&mut private, &data, &cfg, DpSgd { noise_multiplier: 0.0, clipping_norm: 1e9 }, None).expect("train");
    for (p, q) in plain.export().tensors().iter().zip(private.export().tensors()) {
        for (&x, &y) in p.values().iter().zip(q.values()) {
            assert!((x - y).abs() < 1e-5, "{}: {x} vs {y}", p.name());
        }
    }
    let (mut noisy, _) = setup(n);
    let (z, c) = (2.0, 1e9);
    train_private(&mut noisy, &data, &cfg, DpSgd { noise_multiplier: z, clipping_norm: c }, None).expect("train");
    // Noise of std z·C/n·lr = 1e7 per value dwarfs the gradient: its spread is the noise's.
    let moved: Vec<f64> = noisy
        .export()
        .tensors()
        .iter()
        .zip(plain.export().tensors())
        .flat_map(|(a, b)| a.values().iter().zip(b.values()).map(|(&x, &y)| f64::from(x - y)).collect::<Vec<_>>())
        .collect();
    let std = (moved.iter().map(|d| d * d).sum::<f64>() / moved.len() as f64).sqrt();
    let expected = cfg.lr * z * c / n as f64;
    let se = expected * (1.0 / (2.0 * moved.len() as f64)).sqrt();
    assert!((std - expected).abs() < 5.0 * se, "{std} vs {expected} over {} values", moved.len());
}

#[test]
fn batch_normalization_is_refused_and_poisson_batches_vary() {
    let data = blobs(60, 5);
    let share = ClientShare { train: (0..50).collect(), test: (50..60).collect() };
    let tensors = ClientTensors::from_share(&data, &share, Device::Cpu).expect("tensors");
    let cfg =
        TrainConfig { lr: 0.1, batch_size: 5, local_epochs: 2, local_steps: None, momentum: 0.0, weight_decay: 0.0 };
    let mut model = LocalModel::new("mlp", &data.shape, Device::Cpu, SEED).expect("model");
    let stats = train_private(&mut model, &tensors, &cfg, DpSgd { noise_multiplier: 1.0, clipping_norm: 1.0 }, None)
        .expect("train");
    // 50 samples in batches of 5: q = 1/10, 10 steps an epoch, batches of 5 on average.
    let private = stats.private.expect("private");
    assert_eq!((private.sampling_rate, private.steps, stats.steps), (0.1, 20, 20));
    assert!(stats.samples > 40 && stats.samples < 160, "Poisson batches of ~5 over 20 steps: {}", stats.samples);
    let has_bn = model.spec().iter().any(|s| s.name.ends_with("running_mean"));
    assert!(!has_bn, "mlp has no batch norm");
}

/// FedAvgCNN (convolutions and linear layers): the batched per-sample gradients clip and sum
/// as one pass per sample does, and a model with batch normalization is refused.
#[test]
fn batched_per_sample_gradients_match_one_sample_at_a_time() {
    let n = 16i64;
    tch::manual_seed(3);
    let data = ClientTensors {
        train_x: tch::Tensor::rand([n, 1, 28, 28], (tch::Kind::Float, Device::Cpu)) * 2.0 - 1.0,
        train_y: tch::Tensor::randint(10, [n], (tch::Kind::Int64, Device::Cpu)),
        test_x: tch::Tensor::zeros([0, 1, 28, 28], (tch::Kind::Float, Device::Cpu)),
        test_y: tch::Tensor::zeros([0], (tch::Kind::Int64, Device::Cpu)),
    };
    let shape = strata_data::DataShape { sample_shape: vec![1, 28, 28], num_classes: 10 };
    let cfg =
        TrainConfig { lr: 0.5, batch_size: 16, local_epochs: 1, local_steps: None, momentum: 0.0, weight_decay: 0.0 };
    // A bound that clips some samples and not others (FedAvgCNN's initial gradients are ~1-4).
    let dp = DpSgd { noise_multiplier: 0.0, clipping_norm: 2.0 };
    let train = |how| {
        let mut model = LocalModel::new("cnn", &shape, Device::Cpu, 1).expect("model");
        train_private_with(&mut model, &data, &cfg, dp, None, how).expect("train");
        model.export()
    };
    let (batched, one_by_one) = (train(PerSample::Batched), train(PerSample::OneByOne));
    let initial = LocalModel::new("cnn", &shape, Device::Cpu, 1).expect("model").export();
    for ((b, o), i) in batched.tensors().iter().zip(one_by_one.tensors()).zip(initial.tensors()) {
        let moved = b.values().iter().zip(i.values()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(moved > 1e-4, "{} moved", b.name());
        for (&x, &y) in b.values().iter().zip(o.values()) {
            assert!((x - y).abs() < 1e-5 + 1e-3 * moved, "{}: {x} vs {y}", b.name());
        }
    }
    let mut bn = LocalModel::new("cnn-bn", &shape, Device::Cpu, 1).expect("model");
    let err = train_private(&mut bn, &data, &cfg, dp, None).unwrap_err().to_string();
    assert!(err.contains("batch normalization"), "{err}");
}
