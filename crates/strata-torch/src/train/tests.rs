//! Training on a separable toy problem, determinism, and evaluation edge cases.

use strata_core::config::TrainConfig;
use strata_data::partition::ClientShare;
use tch::{Device, Kind, Tensor};

use super::{TrainStats, train_local, train_local_with};
use crate::test_data::{DIM, blobs};
use crate::{ClientTensors, LocalModel, evaluate};

fn setup() -> (LocalModel, ClientTensors, TrainConfig) {
    let data = blobs(400, 5);
    let share = ClientShare { train: (0..300).collect(), test: (300..400).collect() };
    let tensors = ClientTensors::from_share(&data, &share, Device::Cpu).expect("tensors");
    let model = LocalModel::new("mlp", &data.shape, Device::Cpu, 11).expect("model");
    let cfg =
        TrainConfig { lr: 0.05, batch_size: 32, local_epochs: 2, local_steps: None, momentum: 0.0, weight_decay: 0.0 };
    (model, tensors, cfg)
}

#[test]
fn training_separates_two_blobs() {
    let (mut model, data, cfg) = setup();
    let before = evaluate(&model, &data.test_x, &data.test_y, 64);
    let stats = train_local(&mut model, &data, &cfg, 1).expect("train");
    // 300 samples in batches of 32: 9 full batches and one of 12, twice.
    assert_eq!((stats.samples, stats.steps), (600, 20));
    assert!(stats.mean_loss.is_finite() && stats.mean_loss > 0.0);
    let after = evaluate(&model, &data.test_x, &data.test_y, 64);
    assert_eq!(after.total, 100);
    assert!(after.accuracy() >= 0.95, "accuracy {} (before {})", after.accuracy(), before.accuracy());
    assert!(after.loss < before.loss, "loss {} → {}", before.loss, after.loss);
}

#[test]
fn local_steps_take_exactly_that_many_batches_across_epochs() {
    let data = blobs(30, 5);
    let share = ClientShare { train: (0..25).collect(), test: (25..30).collect() };
    let tensors = ClientTensors::from_share(&data, &share, Device::Cpu).expect("tensors");
    let mut model = LocalModel::new("mlp", &data.shape, Device::Cpu, 11).expect("model");
    let cfg = TrainConfig {
        lr: 0.05,
        batch_size: 10,
        local_epochs: 1,
        local_steps: Some(7),
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let stats = train_local(&mut model, &tensors, &cfg, 1).expect("train");
    // Epochs of 10 + 10 + 5: two full epochs (6 steps) and one batch of the third.
    assert_eq!((stats.steps, stats.samples), (7, 10 + 10 + 5 + 10 + 10 + 5 + 10));
    assert!(stats.mean_loss.is_finite() && stats.mean_loss > 0.0);
    // Fewer steps than an epoch stop mid-epoch.
    let short = TrainConfig { local_steps: Some(2), ..cfg };
    let stats = train_local(&mut model, &tensors, &short, 1).expect("train");
    assert_eq!((stats.steps, stats.samples), (2, 20));
}

#[test]
fn local_steps_spanning_whole_epochs_equal_those_epochs() {
    // 300 samples in batches of 32 make 10 steps an epoch: 20 steps are the 2 epochs, batch for batch.
    let (mut epochs, data, cfg) = setup();
    let (mut steps, _, _) = setup();
    let by_epochs = train_local(&mut epochs, &data, &cfg, 3).expect("train");
    let by_steps = train_local(&mut steps, &data, &TrainConfig { local_steps: Some(20), local_epochs: 1, ..cfg }, 3)
        .expect("train");
    assert_eq!(by_steps, TrainStats { seconds: by_steps.seconds, ..by_epochs });
    assert_eq!(epochs.export(), steps.export());
}

#[test]
fn same_seed_and_init_give_identical_parameters() {
    let (mut a, data, cfg) = setup();
    let (mut b, _, _) = setup();
    let momentum = TrainConfig { momentum: 0.9, weight_decay: 1e-4, ..cfg.clone() };
    let sa = train_local(&mut a, &data, &momentum, 42).expect("train a");
    let sb = train_local(&mut b, &data, &momentum, 42).expect("train b");
    assert_eq!(a.export(), b.export());
    assert_eq!(sa.mean_loss, sb.mean_loss);

    let (mut c, _, _) = setup();
    train_local(&mut c, &data, &momentum, 43).expect("train c");
    assert_ne!(a.export(), c.export(), "another seed shuffles differently");
}

#[test]
fn extra_loss_is_added_to_each_step() {
    let (mut plain, data, cfg) = setup();
    let (mut pulled, _, _) = setup();
    let start = plain.export();
    train_local(&mut plain, &data, &cfg, 1).expect("train");
    // A strong proximal term keeps the head near its start (FedProx-style).
    let anchor = pulled.var_store().variables()["head.weight"].detach().copy();
    let prox = |m: &LocalModel| {
        let w = &m.var_store().variables()["head.weight"];
        (w - &anchor).square().sum(Kind::Float) * 5.0
    };
    train_local_with(&mut pulled, &data, &cfg, 1, Some(&prox)).expect("train with prox");
    let drift = |m: &LocalModel| {
        let (w, w0) = (m.export(), start.get("head.weight").expect("head").values().to_vec());
        let w = w.get("head.weight").expect("head").values();
        w.iter().zip(&w0).map(|(a, b)| (a - b).powi(2)).sum::<f32>()
    };
    assert!(drift(&pulled) < 0.1 * drift(&plain), "{} vs {}", drift(&pulled), drift(&plain));
}

#[test]
fn empty_sets_give_zero_counts_not_nan() {
    let (mut model, data, cfg) = setup();
    let x = Tensor::zeros([0, DIM as i64], (Kind::Float, Device::Cpu));
    let y = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
    let stats = evaluate(&model, &x, &y, 10);
    assert_eq!((stats.total, stats.correct, stats.accuracy(), stats.loss), (0, 0, 0.0, 0.0));

    let empty = ClientTensors { train_x: x.shallow_clone(), train_y: y.shallow_clone(), ..data };
    let stats = train_local(&mut model, &empty, &cfg, 1).expect("train on nothing");
    assert_eq!((stats.samples, stats.steps, stats.mean_loss), (0, 0, 0.0));
    // A step budget cannot be spent on no data: no step, and no endless loop.
    let stats = train_local(&mut model, &empty, &TrainConfig { local_steps: Some(3), ..cfg }, 1).expect("steps");
    assert_eq!((stats.samples, stats.steps, stats.mean_loss), (0, 0, 0.0));
}

#[test]
fn bad_settings_are_refused() {
    let (mut model, data, cfg) = setup();
    let err = train_local(&mut model, &data, &TrainConfig { batch_size: 0, ..cfg.clone() }, 1).expect_err("batch 0");
    assert!(err.to_string().contains("batch_size"), "{err}");
    let err = train_local(&mut model, &data, &TrainConfig { local_steps: Some(0), ..cfg }, 1).expect_err("0 steps");
    assert!(err.to_string().contains("local_steps"), "{err}");
}
